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
    from tasks.core.errors import ConfigError, DataError

    p = load(profile)
    chosen = list(domain or p.domains)
    unknown = [d for d in chosen if d not in p.domains]
    if unknown:
        raise ConfigError(f"--domain: unknown domain(s) {unknown}; configured: {list(p.domains)}")
    if stage:
        _check_profile_visible_to_dvc(p.name)
        _one_stage(p, stage, chosen)
        return
    prepared, failed = _prepare(p, chosen)
    _finish(p, chosen, prepared, version)
    if failed:
        raise DataError(f"{len(failed)} domain(s) failed: " + " || ".join(f"{d}: {m}" for d, m in failed.items()))


def _prepare(p: Profile, chosen: list[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """Ingest + validate each domain with a progress bar; (prepared domains, failed domain -> why)."""
    from rich.progress import Progress

    from tasks.core.errors import DataError
    from tasks.data import pipeline as dp

    failed: dict[str, str] = {}
    prepared = {}
    with Progress(console=console, transient=True) as bar:
        for d in chosen:
            task = bar.add_task(f"ingest+validate {d}", total=None)
            try:
                prepared[d] = dp.prepare_domain(p, d, progress=lambda n, t=task: bar.update(t, completed=n))
            except DataError as err:
                failed[d] = str(err)
                console.print(f"[bold red]{d}: FAILED[/] {err}", highlight=False)
            bar.remove_task(task)
    return prepared, failed


def _finish(p: Profile, chosen: list[str], prepared: dict[str, dict], version: bool) -> None:
    """Split the prepared domains, check them disjoint, train the tokenizer, write the cards (and version)."""
    from tasks.data import pipeline as dp
    from tasks.data.cards import write_card

    for d in chosen:
        if d in prepared:
            built = dp.finish_domain(p, d)
            console.print(
                f"[green]{d}[/]: {built.ingested} ingested, {built.accepted} accepted, {built.quarantined} "
                f"quarantined; train/val/test {built.splits}; report {built.report}",
                highlight=False,
            )
    if prepared:  # against every built domain, not only the ones built now
        res = dp.check_disjoint(p)
        console.print(
            f"disjointness: {res.exact_pairs} exact + {res.near_pairs} near cross-domain duplicates "
            f"(quarantined {res.quarantined}); {res.contaminated_eval} eval docs moved to train",
            highlight=False,
        )
    if "public" in prepared:
        tok = dp.train_tokenizer(p)
        console.print(
            f"tokenizer: {tok.path} (vocab {tok.vocab_size}); bytes/token {tok.bytes_per_token}", highlight=False
        )
    for d in prepared:
        console.print(f"card: {write_card(p, d)}", highlight=False)
        if version:
            v = dp.version_domain(p, d)
            console.print(f"dvc: {d} -> remote '{v.remote}' ({v.remote_url}) md5 {v.md5}", highlight=False)


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
