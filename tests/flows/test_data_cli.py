"""`flexo data` on the command line: bad options exit with the configuration code and name the problem."""

from __future__ import annotations

import subprocess
import sys

from tasks.core.config import REPO_ROOT


def _flexo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO_ROOT, capture_output=True, text=True)


def test_unknown_domain_and_stage_exit_3_naming_them():
    bad_domain = _flexo("data", "-p", "tiny", "--domain", "nope")
    assert bad_domain.returncode == 3 and "unknown domain(s) ['nope']" in bad_domain.stderr
    bad_stage = _flexo("data", "-p", "demo", "--stage", "nope")
    assert bad_stage.returncode == 3 and "not one of" in bad_stage.stderr


def test_dvc_stage_refuses_a_profile_dvc_lock_cannot_see():
    run = _flexo("data", "-p", "tiny", "--stage", "ingest", "--domain", "news")
    assert run.returncode == 3 and "`profile:`" in run.stderr.replace("\n", " ")
