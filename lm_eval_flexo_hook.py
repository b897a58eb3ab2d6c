"""Registers flexo's `flexo` model type with lm-evaluation-harness, so bare `lm_eval --model flexo ...` finds it.

Why a start-up hook: lm-eval 0.4.13 finds model types only in its registry, which it fills when `lm_eval.models` is
imported, and it reads no entry points. `lm_eval_flexo_hook.pth` (installed beside this module by setup.py) calls
`install()` when the interpreter starts; that only puts a finder on `sys.meta_path`. Nothing else is imported then: when
some program imports `lm_eval.models`, the finder lets it load as usual and registers `flexo` as a lazy placeholder, so
torch and flexo's evaluation code load only once `--model flexo` is asked for. Without lm-eval installed the finder is
never triggered. This module imports only the standard library: it runs in every interpreter of the environment.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence
from typing import Any

TRIGGER = "lm_eval.models"
MODEL_TYPE = "flexo"
TARGET = "tasks.evaluation.lm_eval_model:FlexoLM"  # what `@register_model("flexo")` upgrades the placeholder to


def register() -> None:
    """Put `flexo` in lm-eval's model registry as a lazy "module:class" placeholder (no-op when already there)."""
    from lm_eval.api.registry import model_registry

    if MODEL_TYPE not in model_registry:
        model_registry.register(MODEL_TYPE, target=TARGET)


class _RegisteringLoader(importlib.abc.Loader):
    """Loads `lm_eval.models` with its own loader, then registers `flexo`; anything else is asked of that loader."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        register()

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ...: tracebacks and inspect keep working
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Steps aside for every module but `lm_eval.models`, whose real spec it wraps once."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TRIGGER:
            return None
        uninstall()  # once: the real finders answer from here on, this one included
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


def install() -> None:
    """Called from the .pth at start-up: registers `flexo` when lm-eval loads its models (now, if it already has)."""
    if TRIGGER in sys.modules:
        register()
    elif not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def uninstall() -> None:
    """Remove the finder (tests use it to start clean)."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _Finder)]
