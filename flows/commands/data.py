"""`flexo data`: build the domains (ingest -> GX validate -> split/decontaminate), check they are disjoint, train the
tokenizer on public train, write data cards, and optionally version each domain to its owner's DVC remote.

`--stage` runs one step for one domain (what dvc.yaml's stages call), so `dvc repro` and `flexo data` share code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from flows.commands import ProfileOption, app, console, load

if TYPE_CHECKING:
    from tasks.core.config import Profile

STAGES = ("ingest", "validate", "split", "disjoint", "tokenizer", "cards")


@app.command("data")
def data_command(
    profile: ProfileOption = None,
    domain: Annotated[
        list[str] | None, typer.Option("--domain", "-d", help="Domain(s) to build (default: all).")
    ] = None,
    stage: Annotated[
        str | None, typer.Option(help=f"Run one step only: {', '.join(STAGES)} (dvc.yaml uses this).")
    ] = None,
    version: Annotated[bool, typer.Option("--version/--no-version", help="dvc commit/add + push each domain.")] = False,
) -> None:
    """Build FLEXMIX-small domains; a domain failing its suite is reported (with its report path) and the rest go on."""
    from tasks.core.errors import ConfigError

    p = load(profile, check_data=False)  # it rewrites the cards the sizing check reads
    chosen = list(domain or p.domains)
    unknown = [d for d in chosen if d not in p.domains]
    if unknown:
        raise ConfigError(f"--domain: unknown domain(s) {unknown}; configured: {list(p.domains)}")
    if stage:
        _check_profile_visible_to_dvc(p.name)
        _one_stage(p, stage, chosen)
        return
    _build(p, chosen, version)


def _build(p: Profile, chosen: list[str], version: bool) -> None:
    """The Prefect `data` flow (the `data` stage of `flexo run`), with one line per step as it ends: every step is
    cached, so a rerun of an unchanged build is all cache hits. A domain failing its suite is reported with its report
    path and the others go on; the command then exits non-zero."""
    from flows.commands.run import StageDisplay
    from flows.data import data
    from flows.outcomes import add_listener
    from flows.prefect_server import prefect_api
    from tasks.core.errors import DataError

    remove = add_listener(StageDisplay())
    try:
        with prefect_api(p.orchestration.server_startup_timeout_s):
            rows = data(profile=p, domains=chosen, fail_on_error=False, version=version)
    finally:
        remove()
    for row in rows:
        if row["step"] == "split_domain" and row["status"] in ("completed", "cached"):
            result = row["result"]
            console.print(
                f"[green]{row['domain']}[/]: {result.get('ingested')} ingested, {result.get('accepted')} accepted, "
                f"{result.get('quarantined')} quarantined; train/val/test {result.get('splits')}",
                highlight=False,
            )
    failed = [row for row in rows if row["status"] == "failed"]
    for row in failed:
        console.print(f"[bold red]{row['step']} {row['domain'] or ''}: FAILED[/] {row['detail']}", highlight=False)
    if failed:
        raise DataError(
            f"{len(failed)} data step(s) failed: " + " || ".join(f"{r['step']} {r['domain'] or ''}" for r in failed)
        )


def _check_profile_visible_to_dvc(name: str) -> None:
    """Stages run by `dvc repro` must use params.yaml's `profile:` (what dvc.lock records), not a hidden override."""
    import os

    import yaml

    from tasks.core.config import DEFAULT_PARAMS
    from tasks.core.errors import ConfigError

    params = os.environ.get("FLEXO_PARAMS", DEFAULT_PARAMS)
    declared = (yaml.safe_load(open(params, encoding="utf-8")) or {}).get("profile", "demo")
    if name != declared:
        raise ConfigError(
            f"--stage runs for DVC read the profile from {params} `profile:` ('{declared}'), got '{name}'; "
            f"set `profile: {name}` there so dvc.lock records it"
        )


def _one_stage(p: Profile, stage: str, chosen: list[str]) -> None:
    from tasks.core.errors import ConfigError
    from tasks.data import pipeline as dp

    if stage not in STAGES:
        raise ConfigError(f"--stage: '{stage}' is not one of {STAGES}")
    for d in chosen:
        if stage == "ingest":
            from tasks.data.ingest import ingest

            console.print(str(ingest(p, d)), highlight=False)
        elif stage == "validate":
            from tasks.data.split import fingerprint
            from tasks.data.validate import validate

            console.print(str(validate(p, d)), highlight=False)
            fingerprint(p, d)
        elif stage == "split":
            from tasks.data.split import split_domain

            console.print(str(split_domain(p, d)), highlight=False)
        elif stage == "cards":
            from tasks.data.cards import write_card

            console.print(str(write_card(p, d)), highlight=False)
    if stage == "disjoint":
        console.print(str(dp.check_disjoint(p, repair=False)), highlight=False)
    elif stage == "tokenizer":
        console.print(str(dp.train_tokenizer(p)), highlight=False)
