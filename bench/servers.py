"""Servers under test as subprocesses: the emulator (`amplitude-emulator serve`) and the baseline.

The server runs pinned to core 0 (`taskset -c 0`) when the machine has two cores or more; this
process and the load generator stay on core 1.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = 0
CLIENT_CORE = 1


def can_pin() -> bool:
    return (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def pin_this_process() -> bool:
    """Move this process (and what it starts without taskset) to the client core."""
    if not can_pin() or not hasattr(os, "sched_setaffinity"):
        return False
    os.sched_setaffinity(0, {CLIENT_CORE})
    return True


def pinned(command: list[str], core: int) -> list[str]:
    return ["taskset", "-c", str(core), *command] if can_pin() else command


def emulator_command(*arguments: str) -> list[str]:
    """`amplitude-emulator serve` (the installed script), or `python -m emulator serve`."""
    script = Path(sys.executable).with_name("amplitude-emulator")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "emulator"]
    return [*command, "serve", "--port", "0", "--log-level", "warning", *arguments]


def baseline_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "bench.baseline", "--port", "0", *arguments]


def clean_environment() -> dict[str, str]:
    """This environment without AMPLITUDE_EMULATOR_* settings, with the repository importable.

    PYTHONDONTWRITEBYTECODE is dropped as well: an installed package has its bytecode compiled,
    so start-up is measured with it (see `warm_bytecode`).
    """
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AMPLITUDE_EMULATOR_") and name != "PYTHONDONTWRITEBYTECODE"
    }
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), environment.get("PYTHONPATH")])
    )
    return environment


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    launched_at: float  # perf_counter() just before the process was started
    log: Path
    _stopped: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mb(self) -> float:
        """Resident memory of the server process, in MiB (from /proc)."""
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc status")

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def launch(name: str, command: list[str], timeout: float = 60.0) -> Server:
    """Start `command` pinned to the server core; returns once it printed its address."""
    log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
    with log.open("wb") as log_file:
        launched_at = time.perf_counter()
        process = subprocess.Popen(
            pinned(command, SERVER_CORE),
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=clean_environment(),
        )
    assert process.stdout is not None
    deadline = launched_at + timeout
    line = b""
    while b"\n" not in line:
        remaining = deadline - time.perf_counter()
        if process.poll() is not None or remaining <= 0:
            process.kill()
            process.wait()
            raise RuntimeError(f"{name} did not start: {log.read_text(errors='replace')[-2000:]}")
        ready, _, _ = select.select([process.stdout], [], [], min(remaining, 0.5))
        if ready:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                continue
            line += chunk
    first = line.split(b"\n", 1)[0].decode()
    if " listening on " not in first:
        process.kill()
        process.wait()
        raise RuntimeError(f"{name} printed {first!r} instead of its address")
    return Server(name, process, first.rsplit(" ", 1)[1], launched_at, log)


def emulator(database_url: str = "sqlite://", *arguments: str) -> Server:
    return launch(
        "emulator",
        emulator_command("--rate-limit", "off", "--database-url", database_url, *arguments),
    )


def baseline(*arguments: str) -> Server:
    return launch("baseline", baseline_command(*arguments))


def file_database(directory: Path, name: str = "bench") -> str:
    """A fresh SQLite file URL in `directory` (WAL mode, as the emulator sets it)."""
    path = directory / f"{name}-{time.monotonic_ns()}.db"
    return f"sqlite:///{path}"


def warm_bytecode() -> None:
    """Import what the servers import once, untimed, so their bytecode is on disk."""
    subprocess.run(
        [sys.executable, "-c", "import emulator.app, emulator.cli, bench.baseline"],
        cwd=ROOT,
        env=clean_environment(),
        check=True,
        timeout=120,
    )
