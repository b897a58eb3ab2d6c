"""The session check of tests/conftest.py fails a suite that leaves a process running, an orphaned grandchild
included, and kills it; a suite that stops what it starts passes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import psutil

from tasks.core.config import REPO_ROOT

# the inner sessions' grace period: their leaked sleepers run for 300 s, so a longer wait changes no outcome
GRACE_S = 1
CONFTEST = "from tests.conftest import _no_process_outlives_the_suite  # noqa: F401\n"
LEAKS = """
import shlex
import subprocess
import sys

SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)", "{marker}"]

def test_starts_a_process_and_forgets_it():
    subprocess.Popen(SLEEPER)

def test_a_parent_that_exits_leaves_its_child():
    subprocess.run(["sh", "-c", shlex.join(SLEEPER) + " & exit 0"], check=True)
"""
CLEAN = """
import subprocess

def test_stops_what_it_starts():
    process = subprocess.Popen(["sleep", "300"])
    process.terminate()
    process.wait()
"""


def _session(tmp_path: Path, tests: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_inner.py").write_text(tests)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=REPO_ROOT,
        env={**os.environ, "FLEXO_TEST_LEAK_GRACE_S": str(GRACE_S)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _with(marker: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]


def test_a_leaked_process_fails_the_session_and_is_killed(tmp_path) -> None:
    marker = uuid.uuid4().hex
    result = _session(tmp_path, LEAKS.format(marker=marker))
    assert result.returncode != 0 and "were still running at the end" in result.stdout, result.stdout[-3000:]
    # both, the child and the orphaned grandchild, are named; pytest may print the message twice (the error and its
    # short summary, whose width depends on the terminal), so count the distinct pids
    named = set(re.findall(rf"pid (\d+): [^\n]*{marker}", result.stdout))
    assert len(named) == 2, result.stdout[-3000:]
    assert not _with(marker)


def test_a_clean_session_passes(tmp_path) -> None:
    result = _session(tmp_path, CLEAN)
    assert result.returncode == 0, result.stdout[-3000:]
