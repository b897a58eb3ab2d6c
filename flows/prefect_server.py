"""The Prefect API a command talks to: PREFECT_API_URL when set, else the temporary local server, started up front in
a session of its own.

Why its own session: a signal to the command's whole process group (systemd's default stop, `kill -- -PGID`, a
terminal's Ctrl-C) would otherwise stop the server together with the command, and the command's exit-time state
reports would then retry against a dead server for minutes (Prefect's client retries with back-off). In its own session
the server outlives the signal long enough to record the crash; Prefect's exit hook still stops it when the command
ends, so nothing is left running. (A SIGKILL gives no exit hook a chance: `kill -9` of the command leaves the server,
as it always did; stop it with `pkill -f 'prefect.server.api.server:create_app'`.)
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def prefect_api(startup_timeout_s: int) -> Iterator[None]:
    """Within: Prefect's client reaches PREFECT_API_URL, or the temporary server started here (waiting up to
    `startup_timeout_s` for it on a busy machine)."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    with temporary_settings({PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: startup_timeout_s}):
        if not os.environ.get("PREFECT_API_URL"):
            start_temporary_server(startup_timeout_s)
        yield


def start_temporary_server(timeout_s: int) -> None:
    """Start the server Prefect's ephemeral mode would start on first use (the same instance: Prefect keeps one per
    process), with its process in a new session."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    if server.running:
        return
    popen = subprocess.Popen
    subprocess.Popen = functools.partial(popen, start_new_session=True)  # type: ignore[misc,assignment]
    try:
        server.start(timeout=timeout_s)
    finally:
        subprocess.Popen = popen  # type: ignore[misc]
