"""Fault rules: make matching Amplitude-facing requests fail, so clients' retry logic is testable.

A rule matches on method, path and api_key (each optional) and has one effect: answer with a
status and body, add latency before the real answer, or drop the connection. It applies to the
next `times` matching requests, or to each with a `probability`.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class InvalidFaultRule(ValueError):
    """The rule document is not usable; the message says why."""


@dataclass(slots=True)
class FaultRule:
    id: int
    method: str | None
    path: str | None
    api_key: str | None
    status: int | None
    body: Any
    headers: dict[str, str]
    latency_ms: float
    drop: bool
    times: int | None  # matching requests left; None: unlimited (with probability)
    probability: float
    hits: int = 0

    def matches(self, method: str, path: str, api_key: str | None) -> bool:
        return (
            (self.method is None or self.method == method)
            and (self.path is None or self.path == path)
            and (self.api_key is None or self.api_key == api_key)
        )

    def to_json(self) -> dict[str, Any]:
        effect: dict[str, Any] = {}
        if self.status is not None:
            effect.update(status=self.status, body=self.body, headers=self.headers)
        if self.latency_ms:
            effect["latency_ms"] = self.latency_ms
        if self.drop:
            effect["drop"] = True
        return {
            "id": self.id,
            "match": {"method": self.method, "path": self.path, "api_key": self.api_key},
            "effect": effect,
            "times": self.times,
            "probability": self.probability,
            "hits": self.hits,
        }


def _optional_text(table: Mapping[str, Any], key: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidFaultRule(f"match.{key} must be a non-empty string")
    return value


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidFaultRule(f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


def parse_rule(rule_id: int, document: Any) -> FaultRule:
    """A FaultRule from its JSON form (see the README's control API section)."""
    if not isinstance(document, Mapping):
        raise InvalidFaultRule("a fault rule is a JSON object with 'match' and 'effect'")
    match = document.get("match")
    if match is None:
        match = {}
    effect = document.get("effect")
    if not isinstance(match, Mapping):
        raise InvalidFaultRule("match must be an object")
    if not isinstance(effect, Mapping) or not effect:
        raise InvalidFaultRule(
            "effect must be an object: {status, body?, headers?}, {latency_ms} or {drop: true}"
        )
    status = effect.get("status")
    if status is not None and (
        isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599
    ):
        raise InvalidFaultRule("effect.status must be an HTTP status from 100 to 599")
    headers = effect.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidFaultRule("effect.headers must map header names to strings")
    drop = effect.get("drop", False)
    if not isinstance(drop, bool):
        raise InvalidFaultRule("effect.drop must be true or false")
    latency_ms = _number(effect.get("latency_ms", 0), "effect.latency_ms", 0, 60_000)
    if status is None and not drop and not latency_ms:
        raise InvalidFaultRule("effect needs a status, a latency_ms or drop: true")
    if status is not None and drop:
        raise InvalidFaultRule("effect cannot both answer with a status and drop the connection")
    times = document.get("times")
    probability = _number(document.get("probability", 1.0), "probability", 0, 1)
    if times is None and "probability" not in document:
        times = 1
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise InvalidFaultRule("times must be a whole number of at least 1")
    method = _optional_text(match, "method")
    body = effect.get("body")
    if status is not None and body is None:
        body = {"code": status, "error": "Injected fault"}
    return FaultRule(
        id=rule_id,
        method=method.upper() if method else None,
        path=_optional_text(match, "path"),
        api_key=_optional_text(match, "api_key"),
        status=status,
        body=body,
        headers=dict(headers),
        latency_ms=latency_ms,
        drop=drop,
        times=times,
        probability=probability,
    )


@dataclass
class Faults:
    _rules: list[FaultRule] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    random: random.Random = field(default_factory=random.Random)

    def add(self, document: Any) -> FaultRule:
        with self._lock:
            rule = parse_rule(next(self._ids), document)
            self._rules.append(rule)
            return rule

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    @property
    def needs_api_key(self) -> bool:
        """Whether any rule matches on api_key (only then must a request be read to match)."""
        return any(rule.api_key is not None for rule in self._rules)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def take(self, method: str, path: str, api_key: str | None) -> FaultRule | None:
        """The first rule that fires for this request, counting it; spent rules are removed."""
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, path, api_key):
                    continue
                if rule.probability < 1 and self.random.random() >= rule.probability:
                    continue
                rule.hits += 1
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times == 0:
                        self._rules.remove(rule)
                return rule
            return None

    def clear(self, rule_id: int | None = None) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if rule_id is not None and r.id != rule_id]
            return len(self._rules) != before
