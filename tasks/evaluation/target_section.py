"""The report's "## Targets" section: one row per science target, and putting it into a written report.

Why apart from `targets`: the verdicts are computed once (evaluation) or again from results.json (`flexo targets`);
both write the same section, and a report written before the section existed gets it inserted without re-scoring.
"""

from __future__ import annotations

from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile, TargetsConfig
from tasks.evaluation.targets import FAILS, Verdict, evaluate_targets, load_training

HEADING = "## Targets"
_BEFORE = "## Tasks"  # the section goes right after the report's header paragraph, before the task list


def profile_targets(profile: Profile, payload: dict) -> list[Verdict]:
    """The verdicts of one profile's evaluation: its results.json payload and its training records."""
    training = load_training(RunPaths(profile), profile.closed_domains)
    return evaluate_targets(payload, training, profile.anchor.pretrained, profile.eval.targets)


def targets_section(verdicts: list[Verdict], cfg: TargetsConfig, paired: bool) -> list[str]:
    """The markdown lines of the section: how to read it (and whether its gaps' SEs are paired), then
    target | measured | verdict."""
    how = (
        "A gap between two models gets its SE from the shared bootstrap draws (paired: results.json's `paired_se`)"
        if paired
        else "A gap between two models gets the unpaired, conservative SE sqrt(se_a² + se_b²): this results.json was "
        "written before it kept the paired SEs (`paired_se`), so gaps the tables call real can read *within noise* here"
    )
    lines = [
        HEADING,
        "",
        "What FlexOlmo claims, checked on this run (`tasks/evaluation/targets.py`; thresholds in `eval.targets`). "
        f"± is one standard error; a verdict compares with {cfg.noise_se:g} SE: **holds** beyond it, **within "
        f"noise** inside it, **fails** beyond it the other way. {how}; the opt-out deltas carry their paired SE; "
        "ratios and relative gains get theirs by the delta method. The gain-share target decides on FlexOlmo's gain − "
        f"{100 * cfg.min_gain_share:g}% × the dense gain, which stays defined where the dense gain is near zero.",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
    ]
    for v in verdicts:
        verdict = f"**{v.verdict}**" if v.verdict == FAILS else v.verdict
        if v.diagnosis:
            verdict += f": {v.diagnosis}"
        lines.append(f"| {_cell(v.target)} | {_cell(v.measured)} | {_cell(verdict)} |")
    return lines + [""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def with_section(report: str, section: list[str]) -> str:
    """`report` with its Targets section replaced by `section`, or inserted before the task list (or, failing that,
    before the first second-level heading, or at the end) where it has none; the rest is left as it was."""
    lines = report.split("\n")
    if HEADING in lines:
        start = lines.index(HEADING)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        return "\n".join(lines[:start] + section + lines[end:])
    at = next((i for i, line in enumerate(lines) if line == _BEFORE), None)
    if at is None:
        at = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    return "\n".join(lines[:at] + section + lines[at:])
