"""Every setting of the emulator, with its command-line flag, environment variable and default.

Precedence: command line, then environment (`AMPLITUDE_EMULATOR_*`), then the default, which is
Amplitude's own value wherever Amplitude has one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from emulator.tenancy import (
    ConfigError,
    Org,
    Project,
    Region,
    check_unique_api_keys,
    load_orgs,
)

ENV_PREFIX = "AMPLITUDE_EMULATOR_"


@dataclass(slots=True)
class Limits:
    """Request limits; mutable at run time so tests can tighten them."""

    max_batch: int = 2000  # mapping objects per request
    max_request_bytes: int = 1_048_576  # query string plus body
    max_target_bytes: int = 8192  # path plus query string
    rate_limit: int | None = 1500  # mapping objects per org per window; None: off
    rate_window_seconds: float = 30.0
    body_timeout_seconds: float = 30.0  # to receive a request body; 408 after
    # Events (HTTP V2, Batch, Identify): Amplitude's documented limits.
    max_events: int = 2000  # events per /2/httpapi request, identifications per /identify
    batch_max_request_bytes: int = 20 * 1024 * 1024  # /batch body: "must not exceed 20MB"
    event_eps: int | None = 30  # events per second per user or device on /2/httpapi, /identify
    batch_event_eps: int | None = 1000  # the same on /batch
    event_rate_window_seconds: float = 30.0  # the window those rates are averaged over

    @property
    def eps_threshold(self) -> int:
        """Amplitude's 429 body states the limit as events per second."""
        if self.rate_limit is None:
            return 0
        return round(self.rate_limit / self.rate_window_seconds)


class ValidationMode(StrEnum):
    """--validate-responses: check each response against openapi/openapi.yaml (contract.py)."""

    OFF = "off"
    LOG = "log"  # log each violation and keep it for GET /_emulator/violations
    STRICT = "strict"  # as log, and answer 500 naming the violations instead


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = "sqlite://"  # in memory
    orgs: tuple[Org, ...] | None = None  # None: permissive mode
    limits: Limits = field(default_factory=Limits)
    amplitude_id_base: int = 1
    log_level: str = "info"
    admin_token: str | None = None  # required by the control API when set
    seed: Path | None = None  # a state document (GET /_emulator/state) loaded at start
    journal_size: int = 1000  # request journal entries kept
    validate_responses: ValidationMode = ValidationMode.OFF


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{text} is not a positive whole number")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{text} is negative")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{text} is not a positive number of seconds")
    return value


def _rate_limit(text: str) -> int | None:
    return None if text.strip().lower() == "off" else _positive_int(text)


def _region(text: str) -> Region:
    return Region(text.strip().lower())


def _validation_mode(text: str) -> ValidationMode:
    return ValidationMode(text.strip().lower())


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: `--flag`, `AMPLITUDE_EMULATOR_<NAME>`, how to read it, and what it does."""

    name: str
    parse: Callable[[str], Any]
    help: str
    metavar: str = "VALUE"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("host", str, "interface to listen on (default 127.0.0.1)", "HOST"),
    Option(
        "port", _non_negative_int, "port to listen on; 0 picks a free one (default 8000)", "PORT"
    ),
    Option(
        "database_url",
        str,
        "SQLAlchemy URL of the database (default sqlite://, in memory; "
        "sqlite:///path.db for a file)",
        "URL",
    ),
    Option("config", Path, "TOML or JSON file of orgs and projects (default: permissive)", "FILE"),
    Option("api_key", str, "configure one project with this api_key (org 'default')", "KEY"),
    Option("secret_key", str, "secret_key of the --api-key project", "SECRET"),
    Option("region", _region, "region of the --api-key project: us or eu (default us)", "REGION"),
    Option(
        "rate_limit",
        _rate_limit,
        "mapping objects per org per window, or 'off' (default 1500)",
        "N",
    ),
    Option("rate_window", _positive_float, "rate window in seconds (default 30)", "SECONDS"),
    Option(
        "body_timeout",
        _positive_float,
        "seconds a client may take to send a request body; 408 after (default 30)",
        "SECONDS",
    ),
    Option("max_batch", _positive_int, "mapping objects per request (default 2000)", "N"),
    Option(
        "max_request_bytes", _positive_int, "bytes of query plus body (default 1048576)", "BYTES"
    ),
    Option("max_target_bytes", _positive_int, "bytes of path plus query (default 8192)", "BYTES"),
    Option("max_events", _positive_int, "events per /2/httpapi request (default 2000)", "N"),
    Option(
        "batch_max_request_bytes",
        _positive_int,
        "bytes of a /batch body (default 20971520)",
        "BYTES",
    ),
    Option(
        "event_eps",
        _rate_limit,
        "events per second per user or device on /2/httpapi and /identify, or 'off' (default 30)",
        "N",
    ),
    Option(
        "batch_event_eps",
        _rate_limit,
        "events per second per user or device on /batch, or 'off' (default 1000)",
        "N",
    ),
    Option(
        "event_rate_window",
        _positive_float,
        "window in seconds the event rates are averaged over (default 30)",
        "SECONDS",
    ),
    Option(
        "amplitude_id_base", _non_negative_int, "first amplitude_id of each org (default 1)", "N"
    ),
    Option("log_level", str, "uvicorn log level (default info)", "LEVEL"),
    Option("admin_token", str, "require 'Authorization: Bearer TOKEN' on /_emulator", "TOKEN"),
    Option("seed", Path, "state file (as GET /_emulator/state returns) loaded at start", "FILE"),
    Option("journal_size", _non_negative_int, "request journal entries kept (default 1000)", "N"),
    Option(
        "validate_responses",
        _validation_mode,
        "check every response against the OpenAPI document: off, log (log and keep violations "
        "at /_emulator/violations) or strict (also answer 500 instead) (default off)",
        "MODE",
    ),
)


def environment_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given as environment variables, parsed; raises ConfigError on a bad value."""
    values: dict[str, Any] = {}
    for option in OPTIONS:
        text = environ.get(option.env)
        if text is None or text == "":
            continue
        try:
            values[option.name] = option.parse(text)
        except ValueError as error:
            raise ConfigError(f"{option.env}={text!r}: {error}") from None
    return values


def build_settings(values: Mapping[str, Any]) -> Settings:
    """Settings from parsed option values (names as in OPTIONS); absent names take defaults."""
    defaults = Settings()
    default_limits = Limits()
    orgs: list[Org] | None = None
    if values.get("config") is not None:
        orgs = load_orgs(values["config"])
    if values.get("api_key") is not None:
        if values.get("secret_key") is None:
            raise ConfigError("--api-key needs --secret-key (or AMPLITUDE_EMULATOR_SECRET_KEY)")
        project = Project(
            name="default",
            org="default",
            api_key=values["api_key"],
            secret_key=values["secret_key"],
            region=values.get("region") or Region.US,
        )
        orgs = (orgs or []) + [Org(name="default", projects=(project,))]
        check_unique_api_keys(orgs, source="--api-key")
    limits = Limits(
        max_batch=values.get("max_batch", default_limits.max_batch),
        max_request_bytes=values.get("max_request_bytes", default_limits.max_request_bytes),
        max_target_bytes=values.get("max_target_bytes", default_limits.max_target_bytes),
        rate_limit=values.get("rate_limit", default_limits.rate_limit),
        rate_window_seconds=values.get("rate_window", default_limits.rate_window_seconds),
        body_timeout_seconds=values.get("body_timeout", default_limits.body_timeout_seconds),
        max_events=values.get("max_events", default_limits.max_events),
        batch_max_request_bytes=values.get(
            "batch_max_request_bytes", default_limits.batch_max_request_bytes
        ),
        event_eps=values.get("event_eps", default_limits.event_eps),
        batch_event_eps=values.get("batch_event_eps", default_limits.batch_event_eps),
        event_rate_window_seconds=values.get(
            "event_rate_window", default_limits.event_rate_window_seconds
        ),
    )
    return Settings(
        host=values.get("host", defaults.host),
        port=values.get("port", defaults.port),
        database_url=values.get("database_url", defaults.database_url),
        orgs=None if orgs is None else tuple(orgs),
        limits=limits,
        amplitude_id_base=values.get("amplitude_id_base", defaults.amplitude_id_base),
        log_level=values.get("log_level", defaults.log_level),
        admin_token=values.get("admin_token", defaults.admin_token),
        seed=values.get("seed", defaults.seed),
        journal_size=values.get("journal_size", defaults.journal_size),
        validate_responses=values.get("validate_responses", defaults.validate_responses),
    )


def settings_from_environment(environ: Mapping[str, str] | None = None) -> Settings:
    return build_settings(environment_values(os.environ if environ is None else environ))
