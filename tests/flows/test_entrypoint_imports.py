"""A deployment's flow run loads its entrypoint as a script (Prefect's `load_script_as_module`), which puts flows/
first on sys.path; importing the package takes it off again, so `public` and `evaluate` stay the installed packages
(DVC's lock imports `public`: a deployment run's `version_domain` failed on it)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from tasks.core.config import REPO_ROOT
from tests.flows.entrypoints import load_entrypoint

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


def test_an_entrypoint_loaded_in_this_process_leaves_the_imports_as_they_were() -> None:
    """Prefect leaves flows/ on sys.path once `flows` is already imported (this process): the tests' loader puts it
    back as it was, or a later data build on this worker would import flows/public.py as DVC's `public`."""
    import flows  # noqa: F401  (the case the package's own guard cannot cover: imported before the entrypoint)

    before = list(sys.path)
    flow = load_entrypoint("flows/expert.py:expert")
    assert flow.name == "expert"
    assert sys.path == before
    assert "expert" not in sys.modules
    spec = importlib.util.find_spec("public")
    assert spec is not None and "site-packages" in (spec.origin or ""), spec
