"""What the benchmark ran on: cores, CPU model, Python, package versions, load average."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from importlib import metadata

PACKAGES = (
    "amplitude-usermap-emulator",
    "fastapi",
    "starlette",
    "uvicorn",
    "h11",
    "httptools",
    "uvloop",
    "sqlalchemy",
    "pydantic",
    "python-multipart",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def wrk_version(wrk: str | None) -> str:
    if wrk is None:
        return "not installed"
    # `wrk --version` prints its banner and exits 1.
    result = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    first = (result.stdout or result.stderr).splitlines()
    return first[0].strip() if first else "unknown"


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


@dataclass(slots=True)
class Machine:
    cores: int
    cpu: str
    python: str
    system: str
    packages: dict[str, str]
    wrk: str
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))


def describe(wrk: str | None) -> Machine:
    return Machine(
        cores=os.cpu_count() or 1,
        cpu=cpu_model(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        system=f"{platform.system()} {platform.release()}",
        packages=package_versions(),
        wrk=wrk_version(wrk),
        load_before=load_average(),
    )
