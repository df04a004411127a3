"""A local emulator of Amplitude's User Mapping (aliasing) API."""

__version__ = "0.1.0"
