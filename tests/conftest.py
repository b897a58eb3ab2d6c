"""Shared fixtures. Importing `tasks` first makes the test process offline and telemetry-free, as entry points do.

No process a test starts may outlive the suite: the session ends with a check that fails it when one is still running.
`make test TEST_WORKERS=2` runs the suite on two pytest-xdist workers, a whole file per worker (module-scoped worlds
are built once); each worker has its own Prefect home, and files are handed out longest first (`tests/durations.json`).
A new SQLite MLflow store gets its tables as a copy of the first one MLflow built in the process
(`tests/mlflow_schema.py`).
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import torch

import tasks  # noqa: F401  (offline environment)
from tasks.core.config import Profile, load_profile
from tests.mlflow_schema import SchemaTemplate
from tests.profiles import profile_under

# One intra-op thread for the tests' models, here and (through the environment) in every process a test starts: they
# are tiny (hidden sizes 16-64), a second thread buys nothing, and on a shared 2-core machine whose other core is busy,
# OpenMP's barrier waits make each op many times slower (40 bf16 training steps of tests/model: 0.35 s on one thread,
# 2.5-5.4 s on two with the other core loaded). An OMP_NUM_THREADS set by the user wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Under pytest-xdist, each worker's Prefect home (its ephemeral servers' SQLite database and persisted task results) is
# its own folder inside the one `tasks` chose: the commands two workers' tests run at the same time, and the servers
# they start, do not share one database. Tests that need another home still set PREFECT_HOME for their subprocesses.
if _WORKER := os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["PREFECT_HOME"] = str(Path(os.environ["PREFECT_HOME"]) / f"xdist-{_WORKER}")

# Seconds each test file took in a measured default run (the sum of its `--durations=0` entries). Only the order in
# which xdist hands files to workers depends on it: longest first, so that no long file starts last while the other
# worker idles. A file missing from it (new, or fast) goes after them in collection order; a stale entry costs time,
# never a result.
DURATIONS = Path(__file__).with_name("durations.json")


_MLFLOW_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
# the interpreter's own helpers, which end with it (they are not something a test started and forgot)
_INTERPRETER_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
# what a process stopped by the last test may take to exit; tests/test_process_check.py shortens it for the sessions
# it starts, whose leaked sleepers never exit
LEAK_GRACE_S = float(os.environ.get("FLEXO_TEST_LEAK_GRACE_S", "15"))


def _adopt_orphans() -> None:
    """Make this process the reaper of its descendants' orphans (Linux): a grandchild whose parent was killed, such as
    a server a killed command started, then becomes a child of pytest and is still counted below."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, the files longest first (`DURATIONS`); tests keep their order within a file. Every worker
    sorts the same collection the same way, as xdist requires. A run without xdist keeps the collection order."""
    if not hasattr(config, "workerinput"):  # what xdist gives its workers' configs
        return
    seconds = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    files = list(dict.fromkeys(item.nodeid.split("::")[0] for item in items))
    rank = {name: (-float(seconds.get(name, 0.0)), index) for index, name in enumerate(files)}
    items.sort(key=lambda item: rank[item.nodeid.split("::")[0]])


_MLFLOW_SCHEMA = SchemaTemplate()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A new SQLite MLflow store gets its tables as a copy of the first one's (tests/mlflow_schema.py), once MLflow is
    imported."""
    _MLFLOW_SCHEMA.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    _MLFLOW_SCHEMA.remove()


def _running_children(before: set[int]) -> list[psutil.Process]:
    """Children of this process started during the session and still running (zombies are reaped, not counted)."""
    running = []
    for child in psutil.Process().children():
        try:
            if child.pid in before or any(h in " ".join(child.cmdline()) for h in _INTERPRETER_HELPERS):
                continue
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
                continue
        except (psutil.NoSuchProcess, ChildProcessError):
            continue
        running.append(child)
    return running


@pytest.fixture(scope="session", autouse=True)
def _no_process_outlives_the_suite():
    """Fails the session when a process a test started is still running at its end (after a grace period), and
    kills it, so a leak is a red suite instead of a process polling a server for days."""
    _adopt_orphans()
    before = {child.pid for child in psutil.Process().children()}
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    while (leaked := _running_children(before)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if leaked:
        described = []
        for process in leaked:
            try:
                described.append(f"pid {process.pid}: {' '.join(process.cmdline())[:200]}")
                process.kill()
            except psutil.NoSuchProcess:
                continue
        pytest.fail("processes started by the tests were still running at the end:\n" + "\n".join(described))


# variables the tests change between data builds that no domain worker reads: pytest's name of the running test, and
# the MLflow store a test points at (nothing under tasks/data uses MLflow: tests/tasks/data/test_data_workers.py)
FORK_SERVER_IGNORES = frozenset({"PYTEST_CURRENT_TEST", *_MLFLOW_URI_VARS, "MLFLOW_EXPERIMENT_ID"})


@pytest.fixture(scope="session", autouse=True)
def _one_fork_server_across_data_builds():
    """The suite's in-process data builds fork their domain workers from one server per test process while the
    environment stays the same, instead of a server per build importing Great Expectations (3-4 s each on 2 cores):
    `tasks.data.workers.reused_fork_server`. A build's workers still start from a fresh fork and end with their
    domain; `flexo` commands the tests start run as commands do, a server per build."""
    from tasks.data.workers import reused_fork_server

    with reused_fork_server(ignoring=FORK_SERVER_IGNORES):
        yield


def _restored_mlflow_uris() -> Iterator[None]:
    """Put MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI back as they were when this began."""
    before = {name: os.environ.get(name) for name in _MLFLOW_URI_VARS}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _mlflow_uri_does_not_leak():
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; without this a test's temporary store would reach every
    later test's subprocesses as if the user had set it."""
    yield from _restored_mlflow_uris()


@pytest.fixture(autouse=True, scope="module")
def _mlflow_uri_does_not_leak_from_a_module():
    """The same around each test file: a module-scoped world set up before the per-test guard took its snapshot
    (tests/tasks/registry/test_revocation_serving.py's served registry) otherwise stayed exported, and a later file's
    in-process `flexo attack` read that registry as the user's."""
    yield from _restored_mlflow_uris()


@pytest.fixture(scope="session")
def tiny_profile() -> Profile:
    """The `tiny` profile from the real params.yaml (tests run in seconds on it)."""
    return load_profile("tiny")


@pytest.fixture
def tmp_profile(tiny_profile: Profile, tmp_path) -> Profile:
    """The tiny profile with every path under tmp_path (nothing touches the repository's data/, runs/ or mlflow/)."""
    return profile_under(tiny_profile, tmp_path)


HARNESS_STARTUP_S = 180  # the shared 2-core build machine can take long to start the server


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness (a temporary SQLite-backed server), once per session (per xdist worker)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=HARNESS_STARTUP_S):
        yield
