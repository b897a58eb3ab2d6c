"""A prefect.yaml entrypoint loaded inside the test process, as a deployment's flow run loads it, without the side
effects Prefect's loader keeps.

`load_flow_from_entrypoint` runs the file as a script: it puts flows/ first on `sys.path` and never takes it off. In a
fresh flow-run process `import flows` removes it again (flows/__init__.py), but the test process imported the package
long before, so the folder would stay, and the next first `import public` (DVC's lock, in a later data build on the
same pytest worker) would get flows/public.py instead of the installed package.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tasks.core.config import REPO_ROOT

FLOWS_FOLDER = os.path.abspath(REPO_ROOT / "flows")


def load_entrypoint(entrypoint: str) -> Any:
    """The flow at `entrypoint` ("flows/expert.py:expert"); `sys.path` and `sys.modules` as they were, but for the
    modules the script imported from elsewhere."""
    from prefect.flows import load_flow_from_entrypoint

    path, modules = list(sys.path), set(sys.modules)
    try:
        return load_flow_from_entrypoint(str(REPO_ROOT / entrypoint))
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if not name.startswith("flows.") and _in_flows_folder(sys.modules[name]):
                del sys.modules[name]  # the script itself, under its bare file name


def _in_flows_folder(module: Any) -> bool:
    file = getattr(module, "__file__", None)
    return bool(file) and os.path.dirname(os.path.abspath(file)) == FLOWS_FOLDER
