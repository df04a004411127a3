"""`amplitude-emulator`: the command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from emulator import __version__
from emulator.settings import OPTIONS, build_settings, environment_values
from emulator.tenancy import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amplitude-emulator",
        description="A local emulator of Amplitude's User Mapping (aliasing) API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="start the emulator",
        description="Start the emulator. Every option can also be set as an environment "
        "variable: AMPLITUDE_EMULATOR_<OPTION>, e.g. AMPLITUDE_EMULATOR_RATE_LIMIT=off.",
    )
    for option in OPTIONS:
        serve.add_argument(
            option.flag,
            dest=option.name,
            type=option.parse,
            metavar=option.metavar,
            default=argparse.SUPPRESS,
            help=f"{option.help} [{option.env}]",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    try:
        values: dict[str, Any] = {**environment_values(os.environ), **vars(arguments)}
        settings = build_settings(values)
    except ConfigError as error:
        print(f"amplitude-emulator: {error}", file=sys.stderr)
        return 2
    from emulator.server import serve  # the server stack is imported only when it is needed
    from emulator.storage.database import UnsupportedDatabase

    try:
        serve(settings)
    except UnsupportedDatabase as error:
        print(f"amplitude-emulator: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(
            f"amplitude-emulator: cannot listen on {settings.host}:{settings.port}: {error}",
            file=sys.stderr,
        )
        return 1
    return 0
