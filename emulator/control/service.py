"""The control plane's state: journal, fault rules, snapshots, readiness, and state documents."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emulator.backend import Backend
from emulator.control.faults import Faults
from emulator.control.journal import Journal
from emulator.control.middleware import DropConnection
from emulator.domain.model import OrgGraph, is_text
from emulator.domain.seed import InvalidOrgGraph, complete_org_graph
from emulator.tenancy import ConfigError, Tenancy, orgs_from_document

logger = logging.getLogger("emulator")

STATE_VERSION = 1
# Amplitude ids in state documents: whole numbers JSON clients (JavaScript too) read exactly.
MAX_AMPLITUDE_ID = 2**53 - 1


class InvalidState(ValueError):
    """A state document that cannot be loaded; the message says why."""


class Control:
    def __init__(self, backend: Backend, *, journal_size: int, admin_token: str | None) -> None:
        self.backend = backend
        self.admin_token = admin_token
        self.journal = Journal(capacity=journal_size)
        self.faults = Faults()
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.drop_connection: DropConnection | None = None  # set by the server running the app
        self.ready = False
        self.load_error: str | None = None

    def reset(self, org: str | None = None) -> None:
        """Wipe mappings, amplitude ids, rate windows, journal and fault rules; keep projects."""
        self.backend.reset(org)
        self.journal.clear(org)
        if org is None:
            self.faults.clear()

    # --- state documents -----------------------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        tenancy = self.backend.tenancy
        graphs = self.backend.dump()
        orgs: list[dict[str, Any]] = []
        for org in tenancy.orgs or ():
            graph = graphs.pop(org.name, OrgGraph())
            projects = [
                {
                    "name": project.name,
                    "api_key": project.api_key,
                    "secret_key": project.secret_key,
                    "region": None if project.region is None else project.region.value,
                }
                for project in org.projects
            ]
            orgs.append(_org_json(org.name, graph, projects))
        orgs.extend(_org_json(name, graph, []) for name, graph in sorted(graphs.items()))
        return {"version": STATE_VERSION, "permissive": tenancy.permissive, "orgs": orgs}

    def import_state(self, document: object) -> None:
        """Replace the state with `document`; with "permissive" in it, the projects too."""
        if not isinstance(document, Mapping) or not isinstance(document.get("orgs", []), list):
            raise InvalidState('a state document is an object with a list of "orgs"')
        tenancy: Tenancy | None = None
        if "permissive" in document:
            if document["permissive"] is True:
                tenancy = Tenancy(None)
            elif document["permissive"] is False:
                try:
                    tenancy = Tenancy(orgs_from_document(document, source="state"))
                except ConfigError as error:
                    raise InvalidState(str(error)) from None
            else:
                raise InvalidState('"permissive" must be true or false')
        graphs: dict[str, OrgGraph] = {}
        base = self.backend.settings.amplitude_id_base
        for number, org in enumerate(document.get("orgs", []), start=1):
            if not isinstance(org, Mapping) or not is_text(org.get("name")):
                raise InvalidState(f"org {number} needs a name")
            if org["name"] in graphs:
                raise InvalidState(f"org {org['name']!r} appears twice")
            ids = org.get("amplitude_ids", {})
            mappings = org.get("mappings", {})
            if not _is_map_of(ids, int) or not _is_map_of(mappings, str):
                raise InvalidState(
                    f"org {org['name']!r}: amplitude_ids maps user ids to integers from 0 to "
                    f"{MAX_AMPLITUDE_ID} and mappings maps user ids to global user ids"
                )
            try:
                graphs[org["name"]] = complete_org_graph(org["name"], ids, mappings, base)
            except InvalidOrgGraph as error:
                raise InvalidState(str(error)) from None
        self.backend.replace_all(graphs, tenancy)
        self.journal.clear()

    def load_seed(self, path: Path) -> None:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InvalidState(f"cannot read seed {path}: {error}") from None
        self.import_state(document)

    def snapshot(self, name: str) -> None:
        self.snapshots[name] = self.export_state()

    def restore(self, name: str) -> None:
        self.import_state(copy.deepcopy(self.snapshots[name]))

    def summary(self) -> dict[str, Any]:
        orgs, users, mappings = self.backend.counts()
        clock = self.backend.clock
        return {
            "ready": self.ready,
            "permissive": self.backend.tenancy.permissive,
            "orgs": orgs,
            "users": users,
            "mappings": mappings,
            "journal_entries": len(self.journal),
            "fault_rules": len(self.faults.rules()),
            "snapshots": sorted(self.snapshots),
            "clock": {"now": clock.now(), "frozen": clock.frozen},
        }


def _org_json(name: str, graph: OrgGraph, projects: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "projects": projects,
        "amplitude_ids": graph.amplitude_ids,
        "mappings": graph.mappings,
    }


def _is_map_of(value: object, kind: type) -> bool:
    return isinstance(value, Mapping) and all(
        is_text(key)
        and key
        and isinstance(item, kind)
        and not isinstance(item, bool)
        and (kind is not str or (is_text(item) and item))
        and (not isinstance(item, int) or 0 <= item <= MAX_AMPLITUDE_ID)
        for key, item in value.items()
    )
