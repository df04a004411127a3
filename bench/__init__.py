"""The emulator's benchmark suite: `python -m bench` prints a table and writes docs/performance.md.

Every figure is a median over repeated runs; every throughput figure is a ratio against a bare
FastAPI app (bench/baseline.py) measured in the same run on the same uvicorn settings. The server
under test is pinned to core 0 and the load generator (wrk, and this process) to core 1.
"""
