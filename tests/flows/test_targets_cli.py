"""`flexo targets` on a written results.json and report: a clear error without them, the table, and `--write`
inserting the report's Targets section once and replacing it after (idempotent)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tasks.evaluation.results import FLEX
from tasks.evaluation.target_section import HEADING
from tests.flows.conftest import flexo_in_process, tmp_params
from tests.tasks.evaluation.test_targets import REPORT, good_payload


def test_flexo_targets_reads_results_and_writes_the_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**os.environ, "FLEXO_PARAMS": str(tmp_params(tmp_path)), "FLEXO_PROFILE": "tiny"}

    def flexo(*args: str) -> subprocess.CompletedProcess[str]:
        return flexo_in_process(monkeypatch, capsys, env, "targets", *args)

    missing = flexo()
    assert missing.returncode == 4
    assert "results.json not found" in missing.stderr and "flexo run -p tiny --stage evaluate" in missing.stderr

    results = tmp_path / "runs" / "tiny" / "eval" / "results.json"
    report = tmp_path / "reports" / "flexmix-tiny.md"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps(good_payload()))
    shown = flexo()
    assert shown.returncode == 0, shown.stderr
    assert "science targets: tiny" in shown.stderr and "holds" in shown.stderr
    assert "not measured" in shown.stderr  # no train_result.json under this run: the training targets say so
    assert not report.exists()  # printing writes nothing
    assert "unpaired SEs (this results.json predates paired_se)" in shown.stderr

    no_report = flexo("--write")
    assert no_report.returncode == 4 and "flexmix-tiny.md not found" in no_report.stderr

    report.parent.mkdir(parents=True)
    report.write_text(REPORT)
    assert flexo("--write").returncode == 0
    inserted = report.read_text()
    assert inserted.count(HEADING) == 1 and inserted.index(HEADING) < inserted.index("## Tasks")
    assert "| **fails**" not in inserted
    assert "sqrt(se_a² + se_b²): this results.json was written before it kept the paired SEs" in inserted
    assert [t["key"] for t in json.loads(results.read_text())["targets"]][-1] == "ordering"

    worse = json.loads(results.read_text())
    worse["accuracy"][FLEX]["average"] = {"value": 0.3, "se": 0.01}
    results.write_text(json.dumps(worse))
    assert flexo("--write").returncode == 0
    replaced = report.read_text()
    assert replaced.count(HEADING) == 1 and "| **fails**" in replaced
    assert replaced.split(HEADING)[0] == inserted.split(HEADING)[0]
    assert replaced.endswith(REPORT[REPORT.index("## Tasks") :])
    assert flexo("--write").returncode == 0
    assert report.read_text() == replaced
