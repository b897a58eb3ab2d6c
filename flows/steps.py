"""The step registry: the area function each pipeline step runs, the area whose code its result depends on, and how
Prefect runs it.

Why by function reference: a renamed or moved area function is an ImportError the moment this module is imported (a
test imports it), never a stage that silently stops running. Why the fingerprint is computed from packages: a step's
result depends on its whole area and on everything that area builds on, so its cache key hashes those packages as they
are on disk; a hand-written file list goes stale the first time a function moves to a new module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.config import REPO_ROOT
from tasks.core.hashing import jsonable, tree_sha256
from tasks.data.cards import write_card
from tasks.data.pipeline import check_disjoint, finish_domain, prepare_domain, train_tokenizer, version_domain
from tasks.data.versioning import record_shared_stages
from tasks.evaluation.evaluate import check_benchmark_data, evaluate
from tasks.privacy.attack import attack_and_record
from tasks.registry.governance import assemble_and_register, follow_revocations, revoke
from tasks.registry.registry import register_expert, register_public, resolve_active_experts
from tasks.registry.verify import verify_assembly
from tasks.training.ablations import assemble_variant, train_variant
from tasks.training.route import embed_domain
from tasks.training.train import train_dense, train_expert, train_public

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

    target: Callable[..., Any]
    area: str  # the `tasks/<area>` package the target lives in (a key of BELOW)
    gpu: bool = False  # trains or runs a model: holds a `gpu` slot
    retry: bool = False  # can fail transiently (a registry, a remote): retried with backoff
    cache: bool = True  # False: always runs (a registry read, a revocation, a dvc commit)


STEPS: dict[str, Step] = {
    "prepare_domain": Step(prepare_domain, "data"),
    "split_domain": Step(finish_domain, "data"),
    "check_disjoint": Step(check_disjoint, "data"),
    "check_benchmark": Step(check_benchmark_data, "evaluation"),
    "train_tokenizer": Step(train_tokenizer, "data"),
    "version_domain": Step(version_domain, "data", retry=True),
    "write_card": Step(write_card, "data"),
    "record_shared_stages": Step(record_shared_stages, "data", cache=False),
    "train_public": Step(train_public, "training", gpu=True),
    "register_public": Step(register_public, "registry", retry=True),
    "embed_domain": Step(embed_domain, "training"),
    "train_expert": Step(train_expert, "training", gpu=True),
    "train_dense": Step(train_dense, "training", gpu=True),
    "register_expert": Step(register_expert, "registry", retry=True),
    "verify_assembly": Step(verify_assembly, "registry", retry=True, cache=False),
    "assemble": Step(assemble_and_register, "registry", retry=True),
    "train_ablation": Step(train_variant, "training", gpu=True),
    "assemble_ablation": Step(assemble_variant, "training"),
    "evaluate": Step(evaluate, "evaluation", gpu=True),
    "attack": Step(attack_and_record, "privacy", gpu=True),
    "revoke": Step(revoke, "registry", retry=True, cache=False),
    "follow_revocations": Step(follow_revocations, "registry", retry=True, cache=False),
    "active_experts": Step(resolve_active_experts, "registry", retry=True, cache=False),
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
    out = jsonable(STEPS[step].target(*args, **kwargs))
    out = out if isinstance(out, dict) else {"value": out}
    out["compute_seconds"] = round(time.perf_counter() - started, 3)
    return out
