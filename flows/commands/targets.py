"""`flexo targets`: the science targets of a finished evaluation, re-read from its results.json."""

from __future__ import annotations

import typer

from flows.commands import ProfileOption, app, console, load


@app.command("targets")
def targets_command(
    profile: ProfileOption = None,
    write: bool = typer.Option(
        False, "--write", help="Also replace (or insert) the report's '## Targets' section and results.json's list."
    ),
) -> None:
    """Print each target as holds / within noise / fails with ± 2 SE, from runs/<profile>/eval/results.json (no
    re-scoring); --write puts the section into reports/flexmix-<profile>.md."""
    from rich.table import Table

    from tasks.core.artifacts import RunPaths
    from tasks.core.errors import DataError
    from tasks.evaluation.results import write_json
    from tasks.evaluation.target_section import profile_targets, targets_section, with_section
    from tasks.evaluation.targets import FAILS, HOLDS, paired, read_results

    resolved = load(profile, check_data=False)
    paths = RunPaths(resolved)
    results_json = paths.eval_dir / "results.json"
    payload = read_results(results_json, resolved.name)
    verdicts = profile_targets(resolved, payload)
    table = Table("target", "measured", "verdict", title=f"science targets: {resolved.name}", show_lines=True)
    table.caption = (
        "gaps between models: paired SEs"
        if paired(payload)
        else "gaps between models: unpaired SEs (this results.json predates paired_se)"
    )
    for v in verdicts:
        style = {HOLDS: "green", FAILS: "red"}.get(v.verdict, "yellow")
        table.add_row(v.target, v.measured, f"[{style}]{v.verdict}[/]" + (f": {v.diagnosis}" if v.diagnosis else ""))
    console.print(table)
    if not write:
        return
    report = paths.eval_report
    if not report.is_file():
        raise DataError(f"{report} not found: evaluate first (`flexo run -p {resolved.name} --stage evaluate`)")
    section = targets_section(verdicts, resolved.eval.targets, paired(payload))
    report.write_text(with_section(report.read_text(), section))
    payload["targets"] = [v.as_dict() for v in verdicts]
    write_json(results_json, payload)
    console.print(f"wrote the targets into {report} and {results_json}")
