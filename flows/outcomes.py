"""What each step of a run did (`Outcome`), who hears about it as it happens, and the run's summary: markdown and
tables in the Prefect UI, JSON for scripts, and the flow's return value (or its failure)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.core.errors import FlexoError


@dataclass
class Outcome:
    """One step of one run: completed, cached (reused), skipped (its upstream was not produced) or failed."""

    stage: str
    step: str
    domain: str | None
    status: str
    seconds: float
    detail: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "cached")


Listener = Callable[[str, str, str | None, str], None]  # (stage, step, domain, status)
_listeners: list[Listener] = []


def add_listener(listener: Listener) -> Callable[[], None]:
    """Register a progress callback (the CLI's display); returns its remover. In-process only, by design."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


def notify(stage: str, step: str, domain: str | None, status: str) -> None:
    for listener in list(_listeners):
        listener(stage, step, domain, status)


def upstream_missing(stage: str, step: str, domain: str | None, needs: Iterable[Outcome]) -> Outcome | None:
    """A 'skipped' outcome when a step's inputs were not produced (an upstream step failed or was skipped)."""
    bad = [o for o in needs if not o.ok]
    if not bad:
        return None
    why = "; ".join(f"{o.step}{'/' + o.domain if o.domain else ''} {o.status}" for o in bad)
    outcome = Outcome(stage, step, domain, "skipped", 0.0, f"upstream not available: {why}")
    notify(stage, step, domain, outcome.status)
    return outcome


def summary_table(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    return [
        {
            "stage": o.stage,
            "step": o.step,
            "domain": o.domain or "",
            "status": o.status,
            "seconds": round(o.seconds, 2),
            "detail": o.detail[:300],
        }
        for o in outcomes
    ]


def summary_markdown(title: str, outcomes: Sequence[Outcome], links: Mapping[str, str] | None = None) -> str:
    """The run's markdown summary: counts, every step, and which failed and why."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    lines = [f"# {title}", "", ", ".join(f"**{n}** {s}" for s, n in sorted(counts.items())) or "nothing ran", ""]
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        lines += ["## Failed", ""] + [f"- `{o.step}` {o.domain or ''}: {o.detail}" for o in failed] + [""]
    lines += ["## Steps", "", "| stage | step | domain | status | seconds | detail |", "|---|---|---|---|---:|---|"]
    for row in summary_table(outcomes):
        detail = str(row["detail"]).replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {row['stage']} | {row['step']} | {row['domain']} | {row['status']} | {row['seconds']} | {detail} |"
        )
    if links:
        lines += ["", "## Where to look", ""] + [f"- {k}: `{v}`" for k, v in links.items()]
    return "\n".join(lines) + "\n"


def publish(key: str, title: str, outcomes: Sequence[Outcome], links: Mapping[str, str] | None = None) -> str:
    """Markdown + table artifacts in the Prefect UI for one run (key: lowercase letters, digits, dashes)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    markdown = summary_markdown(title, outcomes, links)
    create_markdown_artifact(markdown=markdown, key=key, description=title)
    if outcomes:
        create_table_artifact(table=summary_table(outcomes), key=f"{key}-steps", description=f"{title}: every step")
    return markdown


def publish_table(key: str, rows: Sequence[Mapping[str, Any]], description: str) -> None:
    """A table artifact in the Prefect UI (nothing when there are no rows)."""
    from prefect.artifacts import create_table_artifact

    if rows:
        create_table_artifact(table=[dict(r) for r in rows], key=key, description=description)


def write_summary(path: Path, outcomes: Sequence[Outcome], extra: Mapping[str, Any] | None = None) -> Path:
    """The run summary as JSON (for scripts and the benchmark)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"steps": as_rows(outcomes), **dict(extra or {})}
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def as_rows(outcomes: Iterable[Outcome]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(o) for o in outcomes]


def outcomes_from(rows: Iterable[Mapping[str, Any]]) -> list[Outcome]:
    """Outcomes back from a subflow's JSON result."""
    return [Outcome(**dict(row)) for row in rows]


class StepsFailed(FlexoError):
    """Raised at the end of a flow (after its summary is published) when any of its steps failed."""


def finish(outcomes: Sequence[Outcome], fail_on_error: bool) -> list[dict[str, Any]]:
    """A flow's return value; with `fail_on_error` the flow run ends Failed, naming each failed step and why."""
    failed = [o for o in outcomes if o.status == "failed"]
    if failed and fail_on_error:
        raise StepsFailed("; ".join(f"{o.step}{'/' + o.domain if o.domain else ''}: {o.detail[:300]}" for o in failed))
    return as_rows(outcomes)
