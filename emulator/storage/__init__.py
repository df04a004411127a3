"""Where an org's mappings and amplitude ids live: SQLAlchemy Core over any database URL."""

from emulator.storage.store import MappingStore

__all__ = ["MappingStore"]
