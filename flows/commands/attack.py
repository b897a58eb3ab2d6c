"""`flexo attack <domain>`: the extraction attack on one domain's models, its MLflow record and the admission gate."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.commands import ProfileOption, app, console, load


@app.command("attack")
def attack_command(
    domain: Annotated[
        str | None, typer.Argument(help="The owner's domain to attack (default: params.yaml attack.domain).")
    ] = None,
    profile: ProfileOption = None,
    mlflow: Annotated[
        bool, typer.Option("--mlflow/--no-mlflow", help="Log the rates and tag the expert version.")
    ] = True,
) -> None:
    """Sample the domain's TRAIN documents from M_pub, the dense model, FlexOlmo with and without the expert (and the DP
    expert when configured); print the extraction rates. Exit 7 when the gate refuses the expert, 1 when the calibration
    shows the attack is broken."""
    from rich.table import Table

    from tasks.privacy.attack import attack
    from tasks.privacy.gate import check_admission
    from tasks.privacy.record import record_attack
    from tasks.privacy.results import summary_rows

    resolved = load(profile)
    result = attack(resolved, domain)
    table = Table(
        title=f"extraction attack on '{result.domain}' ({result.profile}): "
        f"{result.models['public'].num_docs} train documents, threshold "
        f"{resolved.attack.similarity_threshold}"
    )
    table.add_column("model", no_wrap=True)
    for column in (
        "extracted",
        "rate (prefix counted)",
        "rate (continuation only)",
        "mean best sim.",
        "mean best sim. (continuation)",
    ):
        table.add_column(column, overflow="fold")
    for row in summary_rows(result):
        table.add_row(*row)
    console.print(table)
    console.print(
        f"{result.too_short_docs} of {result.train_docs} train documents are shorter than the "
        f"{resolved.attack.window_tokens}-token window and cannot be attacked; report: {result.report_path}"
    )
    if mlflow:
        version = record_attack(resolved, result)
        where = f"expert version {version}" if version else "no registered expert version with this sha256 (yet)"
        console.print(f"logged to MLflow; tagged {where}")
    console.print(check_admission(result.extraction_rate, resolved))
