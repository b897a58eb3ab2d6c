"""Domain work in worker processes (tasks.data.workers): the result, the progress and the errors come back, a process
that dies is an error naming the domain, a worker starts with the domain code already imported and the fork server
ends with the build, and a domain prepared in a process writes the same files as one prepared here."""

from __future__ import annotations

import os
import shutil
import sys
import time

import pytest

from tasks.core.errors import DataError
from tasks.data.ingest import staging_dir
from tasks.data.pipeline import prepare_domain
from tasks.data import workers
from tasks.data.workers import (
    PRELOAD,
    domain_processes,
    in_process,
    processes_active,
    reused_fork_server,
    stop_fork_server,
)
from tests.tasks.data_world import folder_domain, with_domains, write_txt_folder


def _pid_and_progress(steps: int, progress=None) -> int:
    for k in range(steps):
        if progress:
            progress(k + 1)
        time.sleep(0.3)
    return os.getpid()


def _fails(message: str, progress=None) -> None:
    raise DataError(message)


def _dies(code: int, progress=None) -> None:
    os._exit(code)


def test_a_call_runs_in_another_process_and_its_progress_comes_back():
    seen: list[int] = []
    pid = in_process("test", _pid_and_progress, 8, progress=seen.append)
    assert pid != os.getpid()
    assert seen and seen == sorted(seen) and set(seen) <= set(range(1, 9))  # at most one count a second


def test_an_error_comes_back_and_a_process_that_dies_names_its_label():
    with pytest.raises(DataError, match="source folder gone"):
        in_process("prepare_domain 'b'", _fails, "source folder gone")
    with pytest.raises(DataError, match="prepare_domain 'b': its worker process ended without a result"):
        in_process("prepare_domain 'b'", _dies, 3)


def test_each_call_gets_a_fresh_worker_that_ends_with_it():
    import psutil

    with domain_processes():
        first = in_process("a", _pid_and_progress, 1, progress=None)
        second = in_process("b", _pid_and_progress, 1, progress=None)
    assert first != second
    assert not psutil.pid_exists(first) and not psutil.pid_exists(second)


def _preloaded(progress=None) -> list[str]:
    return [name for name in PRELOAD if name in sys.modules]


def _fork_servers() -> list:
    """This process's running fork servers (a worker that just ended may still be an unreaped zombie child)."""
    import psutil

    servers = []
    for child in psutil.Process().children():
        try:
            if "multiprocessing.forkserver" in " ".join(child.cmdline()):
                servers.append(child)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
    return servers


def test_a_worker_starts_with_the_domain_code_imported_and_the_server_ends_with_the_build(monkeypatch):
    """The imports a domain needs (Great Expectations among them: seconds per process) are the fork server's, made
    once; no torch reaches it (a fork of a process with torch's threads is unsafe); the server does not outlive
    `domain_processes()`."""
    monkeypatch.setattr(workers, "_reusers", 0)  # as a command runs (the suite keeps one server: tests/conftest.py)
    stop_fork_server()  # a server left by another test's call outside the context
    with domain_processes():
        assert in_process("a", _preloaded) == list(PRELOAD)
        assert in_process("b", _imported, "torch") is False
        assert len(_fork_servers()) == 1
    assert _fork_servers() == []


def _imported(name: str, progress=None) -> bool:
    return name in sys.modules


def _server_pid_and_variable(name: str, progress=None) -> tuple[int, str | None]:
    return os.getppid(), os.environ.get(name)


def test_a_reused_server_serves_builds_of_the_same_environment_and_a_changed_one_gets_a_fresh_server(monkeypatch):
    """Two builds in one environment (but for a variable the context ignores) fork their workers from one server; a
    build after another variable changed gets a new server, whose workers see the change; the outermost
    `reused_fork_server()` ends the server."""
    variable, unread = "FLEXO_TEST_FORK_SERVER", "FLEXO_TEST_UNREAD"
    monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(workers, "_reusers", 0)  # this test's context is the outermost (the suite has one too)
    monkeypatch.setattr(workers, "_reuse_ignoring", frozenset())
    stop_fork_server()
    with reused_fork_server(ignoring={unread}):
        with reused_fork_server():
            with domain_processes():
                first, seen = in_process("a", _server_pid_and_variable, variable)
            assert seen is None and [s.pid for s in _fork_servers()] == [first]
        monkeypatch.setenv(unread, "a variable the server may differ in")
        with domain_processes():  # an inner context's end leaves the server to the outer one
            assert in_process("b", _server_pid_and_variable, variable) == (first, None)
        monkeypatch.setenv(variable, "changed")
        with domain_processes():
            second, seen = in_process("c", _server_pid_and_variable, variable)
        assert second != first and seen == "changed"
        assert [s.pid for s in _fork_servers()] == [second]
    assert _fork_servers() == []


def test_processes_are_active_only_inside_the_context():
    assert not processes_active()
    with domain_processes():
        assert processes_active()
    assert not processes_active()


def test_a_domain_prepared_in_a_process_writes_the_same_files(tmp_profile, tmp_path):
    write_txt_folder(tmp_path / "src", 50, seed=3)
    p = with_domains(tmp_profile, {"b": folder_domain(tmp_path / "src", owner="bee")})
    here = prepare_domain(p, "b")
    stage = staging_dir(p, "b")
    files = {f.name: f.read_bytes() for f in sorted(stage.iterdir())}
    shutil.rmtree(stage)
    with domain_processes():
        there = prepare_domain(p, "b")
    assert there == here
    assert {f.name: f.read_bytes() for f in sorted(stage.iterdir())} == files
    assert {"signatures.npz", "signatures.json", "ngram_docs.npy", "accepted.parquet"} <= files.keys()


def test_the_domain_code_reads_none_of_the_variables_the_suite_lets_its_fork_server_differ_in():
    """tests/conftest.py keeps one fork server across builds whose environments differ in `FORK_SERVER_IGNORES`; that
    is sound only while no domain code reads them."""
    from tasks.core.config import REPO_ROOT
    from tests.conftest import FORK_SERVER_IGNORES

    folder = REPO_ROOT / "tasks" / "data"
    sources = {str(path.relative_to(folder)): path.read_text(encoding="utf-8").lower() for path in folder.rglob("*.py")}
    readers = [
        (name, variable)
        for name, text in sorted(sources.items())
        for variable in [*FORK_SERVER_IGNORES, "mlflow"]
        if variable.lower() in text
    ]
    assert readers == []
