"""SIGTERM to a `flexo` command that started the temporary Prefect server (what `timeout`, systemd or Kubernetes send)
ends the command and its server: no uvicorn is left polling after the command is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import yaml

from tasks.core.config import DEFAULT_PARAMS, REPO_ROOT
from tests.profiles import paths_under

STARTUP_S = 180  # imports and the server's start on a busy 2-core machine
STOP_S = 30


def _params_under(tmp_path) -> str:
    """params.yaml with the `tiny` profile's paths under tmp_path (the command touches nothing of the repository)."""
    raw = yaml.safe_load(DEFAULT_PARAMS.read_text())
    raw["profiles"]["tiny"]["paths"] = paths_under(tmp_path)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def _server_of(command: psutil.Process) -> psutil.Process | None:
    for child in command.children(recursive=True):
        try:
            if "uvicorn" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_sigterm_stops_the_command_and_its_prefect_server(tmp_path) -> None:
    env = {**os.environ, "FLEXO_PARAMS": _params_under(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)  # the command starts its own temporary server
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "data", "-p", "tiny"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        command = psutil.Process(proc.pid)
        deadline = time.monotonic() + STARTUP_S
        while (server := _server_of(command)) is None:
            assert proc.poll() is None and time.monotonic() < deadline, "the command never started its Prefect server"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_S) == 128 + signal.SIGTERM
        gone, alive = psutil.wait_procs([server], timeout=STOP_S)
        assert not alive, f"the Prefect server {server.pid} outlived the command"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_to_the_whole_process_group_ends_the_command_promptly(tmp_path) -> None:
    """systemd's default and `kill -- -PGID` signal the server too: the command must not then spend minutes retrying
    its exit-time API calls against a server that is gone (Prefect's client retries with back-off by default)."""
    env = {**os.environ, "FLEXO_PARAMS": _params_under(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    log = tmp_path / "out.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "data", "-p", "tiny"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a service manager starts it
        )
    try:
        deadline = time.monotonic() + STARTUP_S
        while "completed" not in log.read_text():  # a flow run is under way: its exit reports to the server
            assert proc.poll() is None and time.monotonic() < deadline, f"no step completed:\n{log.read_text()}"
            time.sleep(0.2)
        command = psutil.Process(proc.pid)
        family = [command, *command.children(recursive=True)]
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=STOP_S) == 128 + signal.SIGTERM, log.read_text()
        gone, alive = psutil.wait_procs(family, timeout=STOP_S)
        assert not alive, f"left running after the command: {[p.pid for p in alive]}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
