"""Invariant 1, isolation: training expert i opens only data/<domain_i> (and the public tokenizer); M_pub opens only
public.

File opens are observed with Linux inotify on every data directory, so reads done in C (pyarrow's parquet reader) are
seen too, not only Python's `open`.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from pathlib import Path

import pandas as pd
import pytest

from tasks.core.artifacts import RunPaths
from tasks.training.train import train_expert, train_public
from tests.tasks.training.test_train import documents, small_budgets, write_router_rows, write_world

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only")

IN_OPEN = 0x20
_EVENT = struct.Struct("iIII")


class OpenWatcher:
    """Records which files in the watched directories are opened (IN_OPEN), by any code in this process."""

    def __init__(self, directories: list[Path]) -> None:
        self._libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._dirs: dict[int, Path] = {}
        for directory in directories:
            wd = self._libc.inotify_add_watch(self._fd, str(directory).encode(), IN_OPEN)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch failed for {directory}")
            self._dirs[wd] = directory

    def opened(self) -> set[Path]:
        seen: set[Path] = set()
        while True:
            try:
                buffer = os.read(self._fd, 65536)
            except BlockingIOError:
                return seen
            offset = 0
            while offset < len(buffer):
                wd, _mask, _cookie, length = _EVENT.unpack_from(buffer, offset)
                name = buffer[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0").decode()
                seen.add(self._dirs[wd] / name if name else self._dirs[wd])
                offset += _EVENT.size + length

    def close(self) -> None:
        os.close(self._fd)


@pytest.fixture
def world(tmp_profile):
    profile = small_budgets(tmp_profile)
    write_world(profile)
    write_router_rows(profile)
    paths = RunPaths(profile)
    # another owner's data sits beside math's: it must never be opened
    news = paths.split("news", "train")
    news.parent.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        pd.DataFrame({"id": [f"n{i}" for i in range(40)], "text": documents("public", 40, seed=99)}).to_parquet(
            paths.split("news", split)
        )
    return profile


def _data_dirs(profile) -> list[Path]:
    root = RunPaths(profile).domain_dir("public").parent
    return [p for p in root.iterdir() if p.is_dir()]


def _domains_opened(profile, files: set[Path]) -> set[str]:
    root = RunPaths(profile).domain_dir("public").parent
    return {path.relative_to(root).parts[0] for path in files}


def test_public_and_expert_training_read_only_their_own_data(world) -> None:
    watcher = OpenWatcher(_data_dirs(world))
    try:
        train_public(world)
        public_reads = watcher.opened()
        train_expert(world, "math")
        expert_reads = watcher.opened()
    finally:
        watcher.close()
    assert public_reads, "the watcher saw no reads at all: the test would prove nothing"
    assert _domains_opened(world, public_reads) <= {"public", "tokenizer"}, public_reads
    assert "math" in _domains_opened(world, expert_reads)
    assert _domains_opened(world, expert_reads) <= {"math", "tokenizer"}, expert_reads
