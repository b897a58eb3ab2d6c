"""`flexo worker` becomes the Prefect worker (exec): SIGTERM to the command (what systemd, Kubernetes or a test sends)
stops the worker itself, and no process of it is left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil

from tasks.core.config import REPO_ROOT
from tests.processes import with_marker

STARTUP_S = 120  # imports of flexo and of the Prefect worker on a busy 2-core machine
HELD_S = 300  # what the stand-in API keeps a worker's request waiting (the worker must be stopped before)


class _StandInApi(BaseHTTPRequestHandler):
    """Answers /health (so `flexo worker` starts the worker) and holds every other request, so the worker stays
    alive, polling, until it is stopped; counts those requests (proof the worker process is running)."""

    calls: list[str] = []

    def do_GET(self) -> None:
        if self.path.endswith("/health"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"true")
            return
        self.calls.append(self.path)
        time.sleep(HELD_S)

    do_POST = do_PATCH = do_GET

    def log_message(self, *args: object) -> None:
        return


def test_sigterm_to_flexo_worker_leaves_no_process(tmp_path) -> None:
    api = ThreadingHTTPServer(("127.0.0.1", 0), _StandInApi)
    api.daemon_threads = True
    threading.Thread(target=api.serve_forever, daemon=True).start()
    marker = uuid.uuid4().hex
    env = {**os.environ, "FLEXO_TEST_MARKER": marker, "PREFECT_HOME": str(tmp_path / "prefect")}
    url = f"http://127.0.0.1:{api.server_address[1]}/api"
    command = [sys.executable, "-m", "flows.cli", "worker", "--owner", "code", "-p", "tiny", "--api-url", url]
    worker = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + STARTUP_S
        while not _StandInApi.calls:
            assert worker.poll() is None, "flexo worker exited before the worker asked the API anything"
            assert time.monotonic() < deadline, f"the Prefect worker made no API call in {STARTUP_S} s"
            time.sleep(0.5)
        assert psutil.Process(worker.pid).cmdline()[1:3] == ["-m", "prefect"]  # the command itself became the worker
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        deadline = time.monotonic() + 15
        while with_marker(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [" ".join(p.cmdline())[:120] for p in with_marker(marker)]
        assert not left, f"still running after SIGTERM to flexo worker: {left}"
    finally:
        for process in with_marker(marker):
            process.kill()
        if worker.poll() is None:
            worker.kill()
        api.shutdown()
