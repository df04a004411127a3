"""One measured figure, next to its target."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Figure:
    what: str  # the target row
    target: str  # the goal, as text
    value: str  # the measured median, as text
    compare: str = ""  # the same-run comparison (ratio to the baseline, ...)
    met: bool | None = None  # None: informational, no target
    note: str = ""  # runs, samples, conditions
    raw: dict[str, Any] = field(default_factory=dict)  # the numbers behind the text

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: ""}[self.met]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def secs(seconds: float) -> str:
    return f"{seconds:.3f} s"


def ratio(value: float) -> str:
    return f"{value:.2f}x"
