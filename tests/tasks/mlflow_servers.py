"""Start real MLflow tracking servers on loopback for integration tests (auth-enabled, PostgreSQL-backed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
STARTUP_S = 120  # a cold `mlflow server` on 2 shared cores: imports + DB migrations


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list[str], workdir: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`mlflow server <args>` on 127.0.0.1 with a free port; returns (process, url) once /health answers."""
    port = free_port()
    log_path = workdir / f"mlflow-server-{port}.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=str(workdir),
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})},
        start_new_session=True,  # its own process group: `mlflow server` starts uvicorn and job consumers of its own
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return process, url
        except OSError as err:
            if process.poll() is not None or time.monotonic() > deadline:
                stop(process)
                raise RuntimeError(f"mlflow server did not start:\n{log_path.read_text()[-4000:]}") from err
            time.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group (SIGTERM to `mlflow server` alone leaves its huey job consumers
    running), SIGKILL after 30 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group's stragglers once the server itself has exited
    except ProcessLookupError:
        pass
