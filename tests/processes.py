"""Finding the processes a test started, by a marker in their environment (a child that outlived its parent too)."""

from __future__ import annotations

import psutil


def with_marker(marker: str) -> list[psutil.Process]:
    """Every running process whose environment carries FLEXO_TEST_MARKER=`marker` (zombies left out)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("FLEXO_TEST_MARKER") == marker and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
