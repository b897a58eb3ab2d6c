"""Prefect flows (thin wiring over `tasks/`) and the `flexo` command line.

A Prefect deployment loads its entrypoint (`flows/data.py:data`, prefect.yaml) as a script and leaves this folder first
on `sys.path`, where `flows/public.py` and `flows/evaluate.py` would shadow the installed packages `public` (atpublic,
which DVC's lock imports) and `evaluate`. The package is `flows`: its folder is not a place to import from, so it is
taken off `sys.path` as soon as any flow module imports the package.
"""

import os
import sys

import tasks  # noqa: F401  (offline, telemetry-free environment before anything else)

_FOLDER = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _FOLDER]
