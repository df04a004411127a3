"""`python -m bench`: run the measurements, print the table, write docs/performance.md."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bench import machine, report, servers, wrk
from bench.config import FULL, QUICK, Config
from bench.measure import MEASUREMENTS, Context, Measurement, workdir
from bench.results import Figure

DEFAULT_OUTPUT = servers.ROOT / "docs" / "performance.md"


def run_measurements(
    config: Config,
    *,
    only: Sequence[str] = (),
    use_wrk: bool = True,
    progress: bool = False,
) -> tuple[list[Figure], list[str], str | None]:
    """Run the measurements (all, or those named in `only`): figures, skipped names, wrk."""
    wrk_path: str | None = None
    chosen = [m for m in MEASUREMENTS if not only or m.name in only]
    if use_wrk and any(m.needs_wrk for m in chosen):
        wrk_path = wrk.ensure_installed()
    context = Context(config=config, workdir=workdir(), wrk=wrk_path)
    figures: list[Figure] = []
    skipped: list[str] = []
    try:
        for measurement in chosen:
            if measurement.needs_wrk and wrk_path is None:
                skipped.append(measurement.name)
                continue
            figures.extend(_run_one(measurement, context, progress))
    finally:
        shutil.rmtree(context.workdir, ignore_errors=True)
    return figures, skipped, wrk_path


def _run_one(measurement: Measurement, context: Context, progress: bool) -> list[Figure]:
    started = time.perf_counter()
    if progress:
        print(f"bench: {measurement.name} ...", flush=True)
    figures = measurement.run(context)
    if progress:
        print(f"bench: {measurement.name} done in {time.perf_counter() - started:.1f} s")
        for figure in figures:
            print(f"  {figure.what}: {figure.value} {figure.compare} {figure.verdict}", flush=True)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark the emulator against a bare FastAPI app."
    )
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated measurements: " + ",".join(m.name for m in MEASUREMENTS),
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=f"the Markdown report (default: {DEFAULT_OUTPUT} for a full run of everything; "
        "a quick or partial run writes none unless asked)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures as JSON")
    parser.add_argument("--no-wrk", action="store_true", help="skip the wrk measurements")
    parser.add_argument(
        "--graph-large",
        type=int,
        metavar="N",
        help="mappings in the large graph of the read measurement (default 1,000,000)",
    )
    arguments = parser.parse_args(argv)
    config = QUICK if arguments.quick else FULL
    if arguments.graph_large is not None:
        config = dataclasses.replace(config, graph_large=arguments.graph_large)
    only = [name.strip() for name in arguments.only.split(",") if name.strip()]
    unknown = set(only) - {m.name for m in MEASUREMENTS}
    if unknown:
        parser.error(f"unknown measurements: {', '.join(sorted(unknown))}")

    pinned = servers.pin_this_process()
    started = time.perf_counter()
    load_before = machine.load_average()
    figures, skipped, wrk_path = run_measurements(
        config, only=only, use_wrk=not arguments.no_wrk, progress=True
    )
    described = machine.describe(wrk_path or wrk.find())
    described.load_before = load_before
    described.load_after = machine.load_average()
    elapsed = time.perf_counter() - started
    print()
    print(report.table(figures))
    print(f"\nload average before/after: {described.load_before} / {described.load_after}")

    output = arguments.output
    if output is None and not arguments.quick and not only:
        output = DEFAULT_OUTPUT
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(
            report.markdown(
                figures, described, config, pinned=pinned, seconds=elapsed, skipped=skipped
            ),
            encoding="utf-8",
        )
        print(f"wrote {output}")
    if arguments.json is not None:
        document = {
            "config": asdict(config),
            "machine": asdict(described),
            "figures": [asdict(figure) for figure in figures],
            "skipped": skipped,
        }
        arguments.json.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return 0
