"""How much each measurement does: the full suite, and `--quick` (a smoke run of a few seconds)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Config:
    quick: bool
    start_runs: int  # serve-to-first-answer, per server
    fixture_runs: int  # pytest subprocesses
    fixture_tests: int  # tests per pytest run (each one resets)
    reset_runs: int  # resets with a small state
    reset_big_runs: int  # resets after loading the big state
    reset_big_mappings: int  # mappings in that state (the target says 100k)
    wrk_runs: int  # repeats of every wrk measurement (baseline and emulator interleaved)
    wrk_seconds: float  # duration of one wrk run
    wrk_warmup_seconds: float
    batch_runs: int
    batches_per_run: int
    batch_size: int  # mapping objects per batch (the target says 2000)
    graph_small: int  # mappings in the small graph (the target says 1k)
    graph_large: int  # mappings in the large graph (the target says 1M)
    read_runs: int
    reads_per_run: int  # GETs of 100 ids, per graph and run
    journal_size: int  # the emulator's journal capacity in the journal measurement
    journal_requests: int  # requests sent in that measurement (several times the capacity)


FULL = Config(
    quick=False,
    start_runs=10,
    fixture_runs=5,
    fixture_tests=30,
    reset_runs=30,
    reset_big_runs=5,
    reset_big_mappings=100_000,
    wrk_runs=3,
    wrk_seconds=5.0,
    wrk_warmup_seconds=1.0,
    batch_runs=3,
    batches_per_run=60,
    batch_size=2000,
    graph_small=1_000,
    graph_large=1_000_000,
    read_runs=3,
    reads_per_run=200,
    journal_size=1000,
    journal_requests=5000,
)

QUICK = Config(
    quick=True,
    start_runs=2,
    fixture_runs=1,
    fixture_tests=5,
    reset_runs=5,
    reset_big_runs=1,
    reset_big_mappings=2_000,
    wrk_runs=1,
    wrk_seconds=1.0,
    wrk_warmup_seconds=0.0,
    batch_runs=1,
    batches_per_run=5,
    batch_size=2000,
    graph_small=1_000,
    graph_large=10_000,
    read_runs=1,
    reads_per_run=20,
    journal_size=50,
    journal_requests=250,
)
