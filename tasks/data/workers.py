"""Domain work in its own process: while `domain_processes()` is active (the data flow prepares two domains at once,
one per core), `in_process` runs a step for one domain in a worker process and relays its progress.

Why processes: preparing a domain is pure Python (validation, n-grams), so threads would share one core. Why a fresh
worker for every domain, ended with it: a worker keeps much of its heap after a domain (0.9 GiB measured after the
small at-scale domains); beside the public domain's own peak that took the build over its 6 GiB. A worker that dies
(out of memory, killed) fails its own domain only, named.

Why a fork server: a spawned worker spent about 4 s of its domain importing pandas and Great Expectations (3 s of it
GX alone on a 2-core EPYC), eight times per build. The fork server is a fresh interpreter (not a fork of this process,
which has torch, Prefect and their threads loaded) that imports the domain code once (`PRELOAD`: no torch, one
thread); every worker is forked from it with those imports in place, shared copy-on-write, and still ends with its
domain. Memory: the server holds 0.28 GiB; a fresh worker's own share of it is 8 MiB, where a spawned one had its own
copy of every import. The server ends with `domain_processes()`, so nothing it holds outlives the data stage, and the
next build's server starts from this process's environment as it is then. A process that runs many builds (the test
suite, where every server's imports cost 3-4 s) may keep one server across them with `reused_fork_server()`.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import sys
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from contextvars import ContextVar
from queue import Empty
from typing import Any

from tasks.core.errors import DataError

# Imported once by the fork server; a module that fails to import there is imported by each worker instead.
PRELOAD = ("tasks.data.pipeline", "tasks.data.validate", "great_expectations")
RELAY_EVERY_S = 1.0  # a worker reports its progress count at most this often (each report crosses a pipe)
POLL_S = 0.5  # how often the parent passes reported progress on while it waits

_ACTIVE: ContextVar[bool] = ContextVar("flexo_domain_processes", default=False)
_queue: Any = None  # the worker's progress queue (set in the worker process by `_start`)
_reusers = 0  # how many `reused_fork_server()` contexts are active
_reuse_ignoring: frozenset[str] = frozenset()  # environment variables a reused server may differ in
_server_started_from: tuple[dict[str, str], str, list[str]] | None = None  # `_environment()` when the server started


@contextmanager
def domain_processes() -> Iterator[None]:
    """While active (in this context and the threads started with a copy of it), `prepare_domain` runs each domain in
    a worker process of its own."""
    if _server_started_from is not None and _server_started_from != _environment():
        stop_fork_server()  # kept from an earlier build, but its workers would see that build's environment
    token = _ACTIVE.set(True)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
        if not _reusers:
            stop_fork_server()


@contextmanager
def reused_fork_server(ignoring: Collection[str] = ()) -> Iterator[None]:
    """While active, `domain_processes()` leaves the fork server running for the next build, which uses it while this
    process's environment variables (but those in `ignoring`: ones the domain code never reads), working directory and
    sys.path are those the server started from and starts a fresh one otherwise; the outermost context ends it. Its
    workers inherit the server's environment; sys.path and the working directory they get from this process at each
    fork, but the server's preloaded domain code was found under the ones it started with."""
    global _reusers, _reuse_ignoring
    _reusers += 1
    outer_ignoring, _reuse_ignoring = _reuse_ignoring, _reuse_ignoring | frozenset(ignoring)
    try:
        yield
    finally:
        _reusers -= 1
        _reuse_ignoring = outer_ignoring
        if not _reusers:
            stop_fork_server()


def stop_fork_server() -> None:
    """End the fork server and its preloaded imports (started by the first `in_process`, otherwise kept until this
    process exits). The standard library has no public call for it; without `_stop` the server just lives on."""
    global _server_started_from
    stop = getattr(multiprocessing.forkserver._forkserver, "_stop", None)  # type: ignore[attr-defined]
    if stop is not None:
        stop()
    _server_started_from = None


def _environment() -> tuple[dict[str, str], str, list[str]]:
    """What a fork server depends on from the moment it started: the environment its workers inherit, and the working
    directory and sys.path its preloaded imports were found under."""
    variables = {name: value for name, value in os.environ.items() if name not in _reuse_ignoring}
    return variables, os.getcwd(), list(sys.path)


def end_all_workers() -> None:
    """Terminate every worker process this process started. For an interrupted flow (SIGTERM, Ctrl-C): the threads
    waiting on them then fail their domains at once instead of finishing them, so the command exits promptly."""
    for child in multiprocessing.active_children():
        child.terminate()


def processes_active() -> bool:
    return _ACTIVE.get()


def in_process(label: str, fn: Callable[..., Any], *args: Any, progress: Callable[[int], None] | None = None) -> Any:
    """`fn(*args, progress=...)` in a fresh worker process, forked from the fork server, that ends with the call: its
    result, or its exception raised here; `progress` gets the counts the worker reports. A worker that ends without a
    result is a DataError naming `label`."""
    global _server_started_from
    if "forkserver" not in multiprocessing.get_all_start_methods():  # Windows: a spawned worker, imports and all
        context = multiprocessing.get_context("spawn")
    else:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(PRELOAD))  # read when the server starts, i.e. by the first call
        if _server_started_from is None:
            _server_started_from = _environment()
    queue = context.Queue()
    pool = ProcessPoolExecutor(1, mp_context=context, initializer=_start, initargs=(queue,))
    try:
        future = pool.submit(_call, fn, args, progress is not None)
        while True:
            try:
                return future.result(timeout=POLL_S)
            except TimeoutError:
                pass
            finally:
                _relay(queue, progress)
    except BrokenProcessPool as err:
        raise DataError(
            f"{label}: its worker process ended without a result ({err}); nothing of it was kept. "
            f"Check the machine's memory and rerun the step"
        ) from err
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        queue.close()
        queue.join_thread()


def _relay(queue: Any, progress: Callable[[int], None] | None) -> None:
    latest = None
    try:
        while True:
            latest = queue.get_nowait()
    except Empty:
        pass
    if latest is not None and progress is not None:
        progress(latest)


def _start(queue: Any) -> None:
    global _queue
    _queue = queue


def _call(fn: Callable[..., Any], args: tuple[Any, ...], with_progress: bool) -> Any:
    if not with_progress:
        return fn(*args, progress=None)
    last = [0.0]

    def report(count: int) -> None:
        if time.monotonic() - last[0] >= RELAY_EVERY_S:
            last[0] = time.monotonic()
            _queue.put(count)

    return fn(*args, progress=report)
