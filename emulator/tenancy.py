"""Orgs and projects: who an api_key belongs to, and in which region it is valid (spec section 1).

Mappings belong to the org, so any project's api_key reads and writes the org's one graph. With no
configuration the emulator is permissive: every api_key is a project of its own org, in no region.
"""

from __future__ import annotations

import hmac
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from emulator.domain.model import is_text


class Region(StrEnum):
    US = "us"
    EU = "eu"


# Amplitude's API hosts; any other host (localhost, a compose service name) is region-neutral.
_HOST_REGIONS = {
    "api.amplitude.com": Region.US,
    "api2.amplitude.com": Region.US,
    "amplitude.com": Region.US,
    "api.eu.amplitude.com": Region.EU,
    "analytics.eu.amplitude.com": Region.EU,
}

# What misconfigured clients send when their key variable is unset; never a real key.
_NEVER_VALID_KEYS = frozenset({"undefined", "null"})


def region_of_host(host_header: str | None) -> Region | None:
    """The region a `Host` header names; port ignored, case-insensitive; None if neutral."""
    if not host_header:
        return None
    host = host_header.strip().lower()
    if host.startswith("["):  # an IPv6 literal is never one of Amplitude's hosts
        return None
    return _HOST_REGIONS.get(host.rsplit(":", 1)[0] if ":" in host else host)


@dataclass(frozen=True, slots=True)
class Project:
    name: str
    org: str
    api_key: str
    secret_key: str | None  # None: permissive mode, any secret is accepted
    region: Region | None  # None: valid on every host

    def valid_in(self, host_region: Region | None) -> bool:
        return self.region is None or host_region is None or self.region is host_region


@dataclass(frozen=True, slots=True)
class Org:
    name: str
    projects: tuple[Project, ...]


class ConfigError(ValueError):
    """The configuration file cannot be used; the message says why."""


class Tenancy:
    """Resolves api keys to projects. `orgs=None` is permissive mode."""

    def __init__(self, orgs: Iterable[Org] | None = None) -> None:
        self.orgs: tuple[Org, ...] | None = None if orgs is None else tuple(orgs)
        check_unique_api_keys(self.orgs or (), source="configuration")
        self._by_key = {
            project.api_key: project for org in self.orgs or () for project in org.projects
        }

    @property
    def permissive(self) -> bool:
        return self.orgs is None

    def project_for_key(self, api_key: str, host_region: Region | None) -> Project | None:
        """The project an ingestion `api_key` names on this host, or None if it is invalid."""
        if api_key in _NEVER_VALID_KEYS:
            return None
        if self.orgs is None:
            return Project(name=api_key, org=api_key, api_key=api_key, secret_key=None, region=None)
        project = self._by_key.get(api_key)
        if project is None or not project.valid_in(host_region):
            return None
        return project

    def authenticate(
        self, api_key: str, secret_key: str, host_region: Region | None
    ) -> Project | None:
        """The project whose key pair this is on this host, or None."""
        project = self.project_for_key(api_key, host_region)
        if project is None:
            return None
        if project.secret_key is not None and not hmac.compare_digest(
            project.secret_key.encode(), secret_key.encode()
        ):
            return None
        return project


def load_orgs(path: Path) -> list[Org]:
    """Read orgs and projects from a TOML file, or a JSON file of the same structure."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            document: object = json.loads(text)
        else:
            document = tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(
            f"{path} is not valid {path.suffix.lstrip('.') or 'TOML'}: {error}"
        ) from None
    return orgs_from_document(document, source=str(path))


def orgs_from_document(document: object, *, source: str) -> list[Org]:
    if not isinstance(document, Mapping) or not isinstance(document.get("orgs"), list):
        raise ConfigError(f"{source}: expected a list of [[orgs]] tables")
    orgs: list[Org] = []
    for number, org_table in enumerate(document["orgs"], start=1):
        where = f"{source}: org {number}"
        if not isinstance(org_table, Mapping):
            raise ConfigError(f"{where} is not a table")
        org_name = _text(org_table, "name", where)
        projects_table = org_table.get("projects", [])
        if not isinstance(projects_table, list):
            raise ConfigError(f"{where}: projects must be a list of [[orgs.projects]] tables")
        projects = []
        for project_number, table in enumerate(projects_table, start=1):
            project_where = f"{where} ({org_name}), project {project_number}"
            if not isinstance(table, Mapping):
                raise ConfigError(f"{project_where} is not a table")
            region_text = table.get("region", Region.US.value)
            try:
                region = Region(str(region_text).lower())
            except ValueError:
                raise ConfigError(f"{project_where}: region must be 'us' or 'eu'") from None
            name = table.get("name") or f"project-{project_number}"
            if not is_text(name):
                raise ConfigError(f"{project_where}: name must be a string")
            projects.append(
                Project(
                    name=name,
                    org=org_name,
                    api_key=_api_key(table, project_where),
                    secret_key=_text(table, "secret_key", project_where),
                    region=region,
                )
            )
        orgs.append(Org(name=org_name, projects=tuple(projects)))
    if len({org.name for org in orgs}) != len(orgs):
        raise ConfigError(f"{source}: two orgs share a name")
    check_unique_api_keys(orgs, source=source)
    return orgs


def check_unique_api_keys(orgs: Iterable[Org], *, source: str) -> None:
    """Raise ConfigError if two projects share an api_key (a key must name one project)."""
    owners: dict[str, Project] = {}
    for org in orgs:
        for project in org.projects:
            first = owners.setdefault(project.api_key, project)
            if first is not project:
                raise ConfigError(
                    f"{source}: project {project.name!r} of org {project.org!r} has the same "
                    f"api_key as project {first.name!r} of org {first.org!r}; "
                    "each api_key must be unique"
                )


def _api_key(table: Mapping[str, object], where: str) -> str:
    api_key = _text(table, "api_key", where)
    if api_key in _NEVER_VALID_KEYS:
        raise ConfigError(f"{where}: api_key {api_key!r} is what unset client variables send")
    return api_key


def _text(table: Mapping[str, object], key: str, where: str) -> str:
    value = table.get(key)
    if not is_text(value) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    assert isinstance(value, str)
    return value
