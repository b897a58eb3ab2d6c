"""A deployment's flow run loads its entrypoint as a script (Prefect's `load_script_as_module`), which puts flows/
first on sys.path; importing the package takes it off again, so `public` and `evaluate` stay the installed packages
(DVC's lock imports `public`: a deployment run's `version_domain` failed on it)."""

from __future__ import annotations

import subprocess
import sys

from tasks.core.config import REPO_ROOT

PROBE = """
import sys
from prefect.utilities.importtools import load_script_as_module
load_script_as_module("flows/data.py")
import public, evaluate, flufl.lock
print(public.__file__); print(evaluate.__file__); print(callable(flufl.lock.Lock))
"""


def test_an_entrypoint_loaded_as_a_script_shadows_no_installed_package() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    public_file, evaluate_file, lock = done.stdout.split()[-3:]
    assert "site-packages" in public_file and "site-packages" in evaluate_file, done.stdout
    assert lock == "True"
