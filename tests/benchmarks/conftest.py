"""The benchmark scripts loaded by file path: `benchmarks` is not importable by name here (opacus installs a top-level
package of that name into site-packages)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tasks.core.config import REPO_ROOT


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module (loaded once per test session)."""
    key = f"flexo_benchmark_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, REPO_ROOT / "benchmarks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
