"""The emulator's own controls, served under /_emulator and never mixed with Amplitude's paths."""

CONTROL_PREFIX = "/_emulator"
