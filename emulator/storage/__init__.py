"""Where an org's mappings, amplitude ids and events live: SQLite through the standard library on
the hot paths, SQLAlchemy Core for every other database and for the cold paths (loaded on first
use)."""

from emulator.storage.database import Database
from emulator.storage.store import MappingStore

__all__ = ["Database", "MappingStore"]
