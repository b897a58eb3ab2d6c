"""The append-only audit trail of the registry: who registered, promoted, revoked what, when and why.

Why on the registered model: MLflow OSS has no audit log, and the permission to write a model's trail must be the one
the action needed (a steward of X writes X's trail and nobody else's): MLflow's access control is per registered model,
so each event is a tag of the model it concerns, `mlflow.flexo.audit.<UTC ns>.<event>` (a JSON record). Why under
`mlflow.`: the MLflow UI shows no tag of that namespace in the registry list or on the model page, so the trail no
longer crowds what a reviewer scans (`flexo audit` reads it). Nothing here deletes or rewrites a tag, so the trail
only grows; each record carries `prev`, the sha256 of the model's record before it, so a record removed or edited
outside flexo (the MLflow client, the REST API) breaks the chain and `verify` names where. Stores written before keep
their `audit.<UTC ns>.<event>` tags: they are read as the start of each model's chain.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

AUDIT_PREFIX = "mlflow.flexo.audit."
LEGACY_PREFIX = "audit."  # the trail's tags before it moved out of sight; still read
PREV_KEY = "prev"  # sha256 of the model's previous record as stored ("" for the first)
_FIELDS = {"at", "event", "model", "version", "actor", PREV_KEY}


@dataclass(frozen=True)
class AuditRecord:
    at: str  # ISO-8601 UTC
    event: str  # registered | alias_set | alias_withheld | revoked | revoked_dependency | ...
    model: str
    version: str
    actor: str
    detail: dict[str, Any]


def actor(explicit: str | None = None) -> str:
    """Who acts: the explicit name, else the MLflow user (basic auth), else the OS user."""
    return explicit or os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def digest(stored: str) -> str:
    """The chain's link to a record: sha256 of its JSON exactly as stored."""
    return hashlib.sha256(stored.encode("utf-8")).hexdigest()


def record(
    client: Any, model: str, version: str | int, event: str, who: str | None = None, **detail: Any
) -> AuditRecord:
    """Append one event to `model`'s trail (a new tag chained to the model's last record; never overwrites)."""
    entry = AuditRecord(at=now_iso(), event=event, model=model, version=str(version), actor=actor(who), detail=detail)
    stored = _stored(client.get_registered_model(model).tags)
    payload = {
        "at": entry.at,
        "event": event,
        "model": model,
        "version": entry.version,
        "actor": entry.actor,
        PREV_KEY: digest(stored[-1][1]) if stored else "",
        **detail,
    }
    key = f"{AUDIT_PREFIX}{time.time_ns():020d}.{event}"
    client.set_registered_model_tag(model, key, json.dumps(payload, sort_keys=True))
    return entry


def trail(client: Any, name_prefix: str = "flexo-") -> list[AuditRecord]:
    """Every audit record of the registered models whose name starts with `name_prefix`, oldest first."""
    records: list[tuple[str, AuditRecord]] = []
    for model in _all_models(client, name_prefix):
        records += [(order, _parse(value)) for order, value in _stored(model.tags)]
    return [entry for _, entry in sorted(records, key=lambda item: item[0])]


def verify(client: Any, name_prefix: str = "flexo-") -> list[str]:
    """Where each model's chain is broken (a record removed, edited or inserted outside flexo); empty when whole.
    Records from before the chain (legacy tags without `prev`) are its unverified start."""
    problems: list[str] = []
    for model in _all_models(client, name_prefix):
        previous = None
        for order, value in _stored(model.tags):
            data = json.loads(value)
            if PREV_KEY in data:
                expected = digest(previous) if previous is not None else ""
                if data[PREV_KEY] != expected:
                    problems.append(
                        f"{model.name}: the record {order} ({data.get('event', '?')}, version {data.get('version')}) "
                        "does not follow the one before it: a record was removed or changed outside flexo"
                    )
            previous = value
    return problems


def _stored(tags: dict[str, str]) -> list[tuple[str, str]]:
    """(order key, stored JSON) of a model's audit tags, old and new namespace, oldest first."""
    found = [
        (key[len(prefix) :], value)
        for key, value in tags.items()
        for prefix in (AUDIT_PREFIX, LEGACY_PREFIX)
        if key.startswith(prefix)
    ]
    return sorted(found)


def _parse(value: str) -> AuditRecord:
    data = json.loads(value)
    detail = {k: v for k, v in data.items() if k not in _FIELDS}
    return AuditRecord(data["at"], data["event"], data["model"], data["version"], data["actor"], detail)


def _all_models(client: Any, name_prefix: str) -> list[Any]:
    """All pages of the registered-model search."""
    models, token = [], None
    while True:
        page = client.search_registered_models(filter_string=f"name LIKE '{name_prefix}%'", page_token=token)
        models.extend(page)
        token = page.token
        if not token:
            return models
