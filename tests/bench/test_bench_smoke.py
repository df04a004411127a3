"""A smoke run of the benchmark suite (`python -m bench --quick`): every piece runs and produces
numbers. Benchmarks are not timed tests: nothing here asserts how fast anything is."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from bench import machine, report
from bench.config import QUICK
from bench.measure import MEASUREMENTS
from bench.results import Figure
from bench.run import main, run_measurements

WITHOUT_WRK = [m.name for m in MEASUREMENTS if not m.needs_wrk]
WITH_WRK = [m.name for m in MEASUREMENTS if m.needs_wrk]


def numbers(value: object) -> list[float]:
    """Every number in a figure's raw data."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers(item)]
    if isinstance(value, list | tuple):
        return [n for item in value for n in numbers(item)]
    return []


def check(figures: list[Figure]) -> None:
    assert figures
    for figure in figures:
        assert any(character.isdigit() for character in figure.value), figure
        found = numbers(figure.raw)
        assert found, figure
        assert all(math.isfinite(n) and n >= 0 for n in found), figure


def test_the_measurements_without_wrk_produce_numbers() -> None:
    figures, skipped, _ = run_measurements(QUICK, only=WITHOUT_WRK, use_wrk=False)
    assert skipped == []
    check(figures)
    whats = " ".join(figure.what for figure in figures)
    for expected in ("first answered request", "fixture", "reset", "batch", "GET of 100 ids"):
        assert expected in whats
    document = report.markdown(
        figures, machine.describe(None), QUICK, pinned=False, seconds=1.0, skipped=WITH_WRK
    )
    assert document.startswith("# Performance")
    assert all(figure.what.replace("|", "\\|") in document for figure in figures)


@pytest.mark.skipif(
    shutil.which("wrk") is None,
    reason="wrk is not installed (Debian: apt-get install -y wrk; `python -m bench` installs it)",
)
def test_the_wrk_measurements_produce_numbers() -> None:
    figures, skipped, wrk = run_measurements(QUICK, only=WITH_WRK)
    assert wrk is not None
    assert skipped == []
    check(figures)


def test_the_command_line_writes_the_report(tmp_path: Path) -> None:
    output, raw = tmp_path / "performance.md", tmp_path / "raw.json"
    assert main(["--quick", "--only", "reset", "--output", str(output), "--json", str(raw)]) == 0
    assert "reset with a small state" in output.read_text(encoding="utf-8")
    assert '"figures"' in raw.read_text(encoding="utf-8")
