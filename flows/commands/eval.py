"""`flexo eval`: the FLEXMIX-small benchmark (tasks.evaluation.evaluate), logged to MLflow as one stage run."""

from __future__ import annotations

import typer

from flows.commands import ProfileOption, app, console, load


@app.command("eval")
def eval_command(
    profile: ProfileOption = None,
    track: bool = typer.Option(
        True, "--track/--no-track", help="Log metrics, tables, figures and the report to MLflow."
    ),
) -> None:
    """Score M_pub, the dense models, soups, BTM, BTX, prompt routing, FlexOlmo (+RT), the unrestricted MoE and the
    ablations on FLEXMIX-small; write reports/flexmix-<profile>.md with its figures."""
    from tasks.evaluation.evaluate import evaluate

    resolved = load(profile)
    result = evaluate(resolved)
    if track:
        from tasks.evaluation.report import log_to_mlflow

        log_to_mlflow(resolved, result)
    console.print(f"report: {result.report}")
    for name, why in result.skipped.items():
        console.print(f"[yellow]not evaluated[/] {name}: {why}")
