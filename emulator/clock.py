"""The emulator's one clock: every timestamp and the rate window read it.

Tests freeze, set and advance it instead of sleeping; `reset` returns it to real time.
"""

from __future__ import annotations

import threading
import time


class Clock:
    """Wall-clock seconds since the epoch, with a settable offset and an optional freeze."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0
        self._frozen_at: float | None = None

    def now(self) -> float:
        frozen_at = self._frozen_at
        if frozen_at is not None:
            return frozen_at
        return time.time() + self._offset

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def freeze(self) -> None:
        with self._lock:
            if self._frozen_at is None:
                self._frozen_at = time.time() + self._offset

    def unfreeze(self) -> None:
        """Let time run again from where it stands now (set and advanced time is kept)."""
        with self._lock:
            if self._frozen_at is not None:
                self._offset = self._frozen_at - time.time()
                self._frozen_at = None

    def set(self, epoch_seconds: float) -> None:
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at = epoch_seconds
            else:
                self._offset = epoch_seconds - time.time()

    def advance(self, seconds: float) -> None:
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._offset += seconds

    def reset(self) -> None:
        """Back to real time, running."""
        with self._lock:
            self._offset = 0.0
            self._frozen_at = None
