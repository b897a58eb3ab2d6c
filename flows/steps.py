"""The step registry: the area function each pipeline step runs, the area whose code its result depends on, and how
Prefect runs it.

Why by name ("tasks.<area>.<module>:<function>"), imported when the step first runs: a command imports only the areas
its steps use (`flexo data` imports neither torch nor transformers: `import flows.data` went from 4.9-6.2 to 1.4 s on an
idle 2-core EPYC), and a renamed or moved area function is still an ImportError, in the test that resolves every
step (tests/flows/test_steps.py) and in the step that runs it, never a stage that silently stops running.

Why the fingerprint is computed from packages: a step's result depends on its whole area and on everything that area
builds on, so its cache key hashes those packages as they are on disk; a hand-written file list goes stale the first
time a function moves to a new module.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.config import REPO_ROOT
from tasks.core.hashing import jsonable, tree_sha256

# The packages each area builds on (imports point one way: core <- data <- training <- registry <- evaluation, privacy).
BELOW: dict[str, tuple[str, ...]] = {
    "core": (),
    "data": ("core",),
    "training": ("core", "data"),
    "registry": ("core", "data", "training"),
    "evaluation": ("core", "data", "training", "registry"),
    "privacy": ("core", "data", "training", "registry"),
}
SHARED_CODE = ("tasks/__init__.py", "model")  # under every area: the runtime environment set-up and the pure model code


@dataclass(frozen=True)
class Step:
    """One pipeline step: its area function and how Prefect runs it."""

    target: str | Callable[..., Any]  # "module:function" (imported by `function`), or the function itself
    area: str  # the `tasks/<area>` package the target lives in (a key of BELOW)
    gpu: bool = False  # trains or runs a model: holds a `gpu` slot
    retry: bool = False  # can fail transiently (a registry, a remote): retried with backoff
    cache: bool = True  # False: always runs (a registry read, a revocation, a dvc commit)

    @property
    def function(self) -> Callable[..., Any]:
        return self.target if callable(self.target) else _imported(self.target)


def _imported(target: str) -> Callable[..., Any]:
    """Looked up on every call (a dict read once imported), so a module attribute patched meanwhile is what runs."""
    module, _, name = target.partition(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return function


STEPS: dict[str, Step] = {
    "prepare_domain": Step("tasks.data.pipeline:prepare_domain", "data"),
    "split_domain": Step("tasks.data.pipeline:finish_domain", "data"),
    "check_disjoint": Step("tasks.data.pipeline:check_disjoint", "data"),
    "check_benchmark": Step("tasks.evaluation.evaluate:check_benchmark_data", "evaluation"),
    "train_tokenizer": Step("tasks.data.pipeline:train_tokenizer", "data"),
    "version_domain": Step("tasks.data.pipeline:version_domain", "data", retry=True),
    "write_card": Step("tasks.data.cards:write_card", "data"),
    "record_shared_stages": Step("tasks.data.versioning:record_shared_stages", "data", cache=False),
    "train_public": Step("tasks.training.train:train_public", "training", gpu=True),
    "register_public": Step("tasks.registry.registry:register_public", "registry", retry=True),
    "embed_domain": Step("tasks.training.route:embed_domain", "training"),
    "train_expert": Step("tasks.training.train:train_expert", "training", gpu=True),
    "train_dense": Step("tasks.training.train:train_dense", "training", gpu=True),
    "register_expert": Step("tasks.registry.registry:register_expert", "registry", retry=True),
    "verify_assembly": Step("tasks.registry.verify:verify_assembly", "registry", retry=True, cache=False),
    "assemble": Step("tasks.registry.governance:assemble_and_register", "registry", retry=True),
    "train_ablation": Step("tasks.training.ablations:train_variant", "training", gpu=True),
    "assemble_ablation": Step("tasks.training.ablations:assemble_variant", "training"),
    "evaluate": Step("tasks.evaluation.evaluate:evaluate", "evaluation", gpu=True),
    "attack": Step("tasks.privacy.attack:attack_and_record", "privacy", gpu=True),
    "revoke": Step("tasks.registry.governance:revoke", "registry", retry=True, cache=False),
    "follow_revocations": Step("tasks.registry.governance:follow_revocations", "registry", retry=True, cache=False),
    "active_experts": Step("tasks.registry.registry:resolve_active_experts", "registry", retry=True, cache=False),
}


def code_paths(area: str, root: Path = REPO_ROOT) -> list[Path]:
    """The source a step of `area` depends on: its package, every package below it and the shared code."""
    return [root / "tasks" / name for name in (*BELOW[area], area)] + [root / rel for rel in SHARED_CODE]


def code_fingerprint(step: str, root: Path = REPO_ROOT) -> str:
    """sha256 over the code a step's result depends on (part of its cache key: edit that code, miss the cache).
    `root`: the tree holding `tasks/` and `model/` (the repository; a copy in tests)."""
    return tree_sha256(root, code_paths(STEPS[step].area, root))


def call(step: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run the step's area function; its JSON-able result with its own wall time (`compute_seconds`: the work,
    without the orchestration around it)."""
    started = time.perf_counter()
    out = jsonable(STEPS[step].function(*args, **kwargs))
    out = out if isinstance(out, dict) else {"value": out}
    out["compute_seconds"] = round(time.perf_counter() - started, 3)
    return out
