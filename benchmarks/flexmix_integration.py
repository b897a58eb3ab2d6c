"""FLEXMIX integration run: the real data under data/, a `tiny`-sized pipeline trained from scratch in a scratch folder
(tokenizer, M_pub, router embeddings, 7 coordinated experts, 7 dense models, assembly), then `evaluate`.

Why: `flexo eval` consumes four other stages; this runs all of them for real in ~12 minutes on 2 CPU cores (tiny sizes,
longer budgets than the `tiny` test profile: argv[1] public tokens, expert token ratio 0.3) and writes
reports/integration/flexmix-tiny.md. It checks the wiring, not the science (tiny models; see README).

Usage:  .venv/bin/python benchmarks/flexmix_integration.py [public_tokens=200000] [scratch=/tmp/flexmix-integration]
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import tasks  # noqa: E402,F401  (offline environment)
from tasks.core.artifacts import EXPERT_FILE, RunPaths  # noqa: E402
from tasks.core.config import Profile, load_profile  # noqa: E402


def integration_profile(root: Path, public_tokens: int) -> Profile:
    """`tiny` with every path under `root` (the report under reports/integration/) and longer budgets."""
    base = load_profile("tiny")
    paths = base.paths.model_copy(
        update={
            "data_dir": str(root / "data"),
            "runs_dir": str(root / "runs"),
            "reports_dir": str(REPO / "reports" / "integration"),
            "mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "mlflow_artifacts_dir": str(root / "mlart"),
        }
    )
    once = {"eval_every": 10**6, "checkpoint_every": 10**6}
    tp = base.train_public.model_copy(update={"tokens": public_tokens, **once})
    te = base.train_expert.model_copy(update={"token_ratio": 0.3, **once})
    ev = base.eval.model_copy(
        update={
            "bpb_docs": 32,
            "task_items": 50,
            "bootstrap": 500,
            "btx_router_steps": 30,
            "rt_steps": 30,
            "unrestricted_steps": 60,
            "sweep_docs": 16,
        }
    )
    rt = base.runtime.model_copy(update={"num_threads": 1})
    return base.model_copy(update={"paths": paths, "train_public": tp, "train_expert": te, "eval": ev, "runtime": rt})


def copy_data(profile: Profile, root: Path) -> None:
    """The repository's built splits, copied once into the scratch folder."""
    if (root / "data").exists():
        return
    for d in profile.domains:
        (root / "data" / d).mkdir(parents=True, exist_ok=True)
        for s in ("train", "val", "test"):
            shutil.copy(REPO / "data" / d / f"{s}.parquet", root / "data" / d / f"{s}.parquet")


def train_and_assemble(profile: Profile, started: float) -> None:
    """Every stage the evaluation reads, each skipped when its output already exists in the scratch folder."""
    from tasks.data.pipeline import train_tokenizer
    from tasks.training.assemble import assemble
    from tasks.training.route import embed_domain
    from tasks.training.train import train_dense, train_expert, train_public

    paths = RunPaths(profile)
    if not paths.tokenizer_dir.exists():
        train_tokenizer(profile)
        print("tokenizer", time.time() - started, flush=True)
    if not (paths.public_model_dir / "config.json").exists():
        train_public(profile)
        print("public", time.time() - started, flush=True)
    for d in profile.domains:
        if not paths.router_embedding(d).exists():
            embed_domain(profile, d)
    print("router", time.time() - started, flush=True)
    files = []
    for d in profile.closed_domains:
        f = paths.expert_dir(d) / EXPERT_FILE
        if not f.exists():
            train_expert(profile, d)
        if not (paths.dense_dir(d) / "model" / "config.json").exists():
            train_dense(profile, d)
        files.append(f)
        print("trained", d, time.time() - started, flush=True)
    assemble(profile, files)
    print("assembled", time.time() - started, flush=True)


def main() -> None:
    from tasks.evaluation.evaluate import evaluate

    root = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/flexmix-integration")
    profile = integration_profile(root, int(sys.argv[1]) if len(sys.argv) > 1 else 200000)
    torch.set_num_threads(1)
    copy_data(profile, root)
    started = time.time()
    train_and_assemble(profile, started)
    r = evaluate(profile)
    print("eval", time.time() - started, r.report, r.seconds, flush=True)


if __name__ == "__main__":
    main()
