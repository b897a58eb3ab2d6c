"""The append-only audit trail of the registry: who registered, promoted, revoked what, when and why.

Why: MLflow OSS has no audit log. Each event is written as a new registered-model tag `audit.<UTC ns>.<event>` (a JSON
record) on the model it concerns, in the tracking DB itself: it travels with the model, needs no extra permission beyond
the one the action needed (a steward of X can write X's trail and nobody else's), and nothing here ever deletes or
rewrites a tag, so the trail only grows.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

AUDIT_PREFIX = "audit."


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


def record(
    client: Any, model: str, version: str | int, event: str, who: str | None = None, **detail: Any
) -> AuditRecord:
    """Append one event to `model`'s trail (a new tag; never overwrites)."""
    entry = AuditRecord(at=now_iso(), event=event, model=model, version=str(version), actor=actor(who), detail=detail)
    key = f"{AUDIT_PREFIX}{time.time_ns():020d}.{event}"
    payload = {"at": entry.at, "event": event, "model": model, "version": entry.version, "actor": entry.actor, **detail}
    client.set_registered_model_tag(model, key, json.dumps(payload, sort_keys=True))
    return entry


def trail(client: Any, name_prefix: str = "flexo-") -> list[AuditRecord]:
    """Every audit record of the registered models whose name starts with `name_prefix`, oldest first."""
    records: list[tuple[str, AuditRecord]] = []
    for model in _all_models(client, name_prefix):
        for key, value in model.tags.items():
            if not key.startswith(AUDIT_PREFIX):
                continue
            data = json.loads(value)
            detail = {k: v for k, v in data.items() if k not in {"at", "event", "model", "version", "actor"}}
            records.append(
                (
                    key[len(AUDIT_PREFIX) :],
                    AuditRecord(data["at"], data["event"], data["model"], data["version"], data["actor"], detail),
                )
            )
    return [entry for _, entry in sorted(records, key=lambda item: item[0])]


def _all_models(client: Any, name_prefix: str) -> list[Any]:
    """All pages of the registered-model search."""
    models, token = [], None
    while True:
        page = client.search_registered_models(filter_string=f"name LIKE '{name_prefix}%'", page_token=token)
        models.extend(page)
        token = page.token
        if not token:
            return models
