"""`flexo eval`: the FLEXMIX-small benchmark (tasks.evaluate), logged to MLflow as one stage run."""

from __future__ import annotations

import typer

from flows.commands import ProfileOption, app, console, load


@app.command("eval")
def eval_command(
    profile: ProfileOption = None,
    track: bool = typer.Option(True, "--track/--no-track", help="Log metrics, tables, figures and the report to MLflow."),
) -> None:
    """Score M_pub, the dense models, soups, BTM, BTX, prompt routing, FlexOlmo (+RT), the unrestricted MoE and the
    ablations on FLEXMIX-small; write reports/flexmix-<profile>.md with its figures."""
    from tasks.evaluate import evaluate

    resolved = load(profile)
    result = evaluate(resolved)
    if track:
        import mlflow

        from tasks.eval_report import mlflow_key
        from tasks.tracking import log_image_file, log_metrics, stage_run

        with stage_run(resolved, "evaluate", params={"eval": resolved.eval.model_dump()}):
            log_metrics(result.metrics)
            for path in result.figures.values():
                log_image_file(path)
            mlflow.log_artifact(str(result.report), artifact_path="report")
            for path in [*result.tables.values(), result.results_json]:
                mlflow.log_artifact(str(path), artifact_path="eval")
            if result.skipped:
                mlflow.set_tags({mlflow_key(f"skipped.{k}")[:250]: v[:500] for k, v in result.skipped.items()})
    console.print(f"report: {result.report}")
    for name, why in result.skipped.items():
        console.print(f"[yellow]not evaluated[/] {name}: {why}")
