"""Prefect events that start retraining when data changes: `flexo.data.versioned`, once per new DVC md5 of a domain.

Why: a nightly data run that finds nothing new must not retrain anything, and one that versions new data for an owner
must retrain that owner's expert without waiting for the weekly clock. The data flow announces each domain whose DVC
md5 differs from the one it last announced; the expert deployments in prefect.yaml carry a trigger on this event (one
per owner, matched on the resource id), and assembly then evaluation follow the expert run's completion.

The md5 last announced per domain is kept in `runs/<data folder>/announced_versions.json` (staging, not versioned:
it records what was said, not what the data is), written only once the event was handed to Prefect's events client.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flows.outcomes import Outcome
from tasks.core.config import Profile

DATA_VERSIONED = "flexo.data.versioned"  # the event name the expert deployments' triggers expect
DATA_RESOURCE_PREFIX = "flexo.data."  # resource id of a domain's data: flexo.data.<domain>
DOMAIN_LABEL = "flexo.domain"  # resource labels the triggers template parameters from
OWNER_LABEL = "flexo.owner"
PROFILE_LABEL = "flexo.profile"
LEDGER_FILE = "announced_versions.json"


def data_resource_id(domain: str) -> str:
    """The Prefect resource id of a domain's data (what an expert deployment's trigger `match`es)."""
    return f"{DATA_RESOURCE_PREFIX}{domain}"


@dataclass(frozen=True)
class DataVersionChange:
    """A domain whose DVC-versioned data differs from the md5 last announced (`md5_before` None: never announced)."""

    domain: str
    owner: str
    profile: str
    md5_before: str | None
    md5_after: str
    tracked_by: str
    remote: str


def version_change(profile: Profile, outcome: Outcome, previous: str | None) -> DataVersionChange | None:
    """The change a `version_domain` outcome makes against the md5 last announced; None when it versioned nothing
    (failed, skipped, no md5) or the same md5 again (an unchanged nightly run)."""
    if outcome.step != "version_domain" or not outcome.ok or outcome.domain is None:
        return None
    md5 = str(outcome.result.get("md5") or "")
    if not md5 or md5 == previous:
        return None
    return DataVersionChange(
        domain=outcome.domain,
        owner=str(outcome.result.get("owner") or profile.domains[outcome.domain].owner),
        profile=profile.name,
        md5_before=previous,
        md5_after=md5,
        tracked_by=str(outcome.result.get("tracked_by", "")),
        remote=str(outcome.result.get("remote_url", "")),
    )


def data_event(change: DataVersionChange) -> dict[str, Any]:
    """The keyword arguments of `prefect.events.emit_event` for a change: the domain's data as the resource (its
    labels are what the triggers template the expert's parameters from), the md5 before/after in the payload."""
    return {
        "event": DATA_VERSIONED,
        "resource": {
            "prefect.resource.id": data_resource_id(change.domain),
            "prefect.resource.name": f"data/{change.domain}",
            DOMAIN_LABEL: change.domain,
            OWNER_LABEL: change.owner,
            PROFILE_LABEL: change.profile,
        },
        "payload": asdict(change),
    }


def ledger_path(profile: Profile) -> Path:
    """runs/<data folder>/announced_versions.json (beside the data staging, outside what DVC versions)."""
    return profile.path("runs_dir") / profile.path("data_dir").name / LEDGER_FILE


def read_ledger(profile: Profile) -> dict[str, str]:
    """domain → md5 last announced ({} before the first announcement)."""
    path = ledger_path(profile)
    if not path.exists():
        return {}
    try:
        return {str(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    except (ValueError, AttributeError) as exc:
        raise ValueError(
            f"{path}: not a JSON object of domain → md5 ({exc}); delete it to announce every domain's data again"
        ) from exc


def _write_ledger(profile: Profile, ledger: Mapping[str, str]) -> None:
    path = ledger_path(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(ledger.items())), indent=2), encoding="utf-8")
    tmp.replace(path)


def announce_data_versions(profile: Profile, outcomes: Iterable[Outcome]) -> list[DataVersionChange]:
    """Emit `flexo.data.versioned` for each domain the run versioned at a new md5; returns the changes announced.

    A change whose event Prefect did not take (no API to send events to) is not recorded, so the next run with a
    server announces it."""
    from prefect.events import emit_event

    ledger = read_ledger(profile)
    announced = []
    for outcome in outcomes:
        change = version_change(profile, outcome, ledger.get(outcome.domain or ""))
        if change is None or emit_event(**data_event(change)) is None:
            continue
        ledger[change.domain] = change.md5_after
        announced.append(change)
    if announced:
        _write_ledger(profile, ledger)
    return announced
