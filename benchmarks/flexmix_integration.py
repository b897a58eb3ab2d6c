"""FLEXMIX integration run: the real data under data/, a `tiny`-sized pipeline trained from scratch in a scratch folder
(tokenizer, M_pub, router embeddings, 7 coordinated experts, 7 dense models, assembly), then `evaluate`.

Why: `flexo eval` consumes four other stages; this runs all of them for real in ~12 minutes on 2 CPU cores (tiny sizes,
longer budgets than the `tiny` test profile: argv[1] public tokens, expert token ratio 0.3) and writes
reports/integration/flexmix-tiny.md. It checks the wiring, not the science (tiny models; see README).

Usage:  .venv/bin/python benchmarks/flexmix_integration.py [public_tokens=200000] [scratch=/tmp/flexmix-integration]
"""

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import tasks  # noqa
import torch
from tasks.core.config import load_profile
from tasks.core.artifacts import RunPaths

root = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/flexmix-integration")
REPO = Path(__file__).resolve().parent.parent
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
tp = base.train_public.model_copy(
    update={"tokens": int(sys.argv[1]) if len(sys.argv) > 1 else 200000, "eval_every": 10**6, "checkpoint_every": 10**6}
)
te = base.train_expert.model_copy(update={"token_ratio": 0.3, "eval_every": 10**6, "checkpoint_every": 10**6})
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
profile = base.model_copy(update={"paths": paths, "train_public": tp, "train_expert": te, "eval": ev, "runtime": rt})
torch.set_num_threads(1)
if not (root / "data").exists():
    for d in profile.domains:
        (root / "data" / d).mkdir(parents=True, exist_ok=True)
        for s in ("train", "val", "test"):
            shutil.copy(REPO / "data" / d / f"{s}.parquet", root / "data" / d / f"{s}.parquet")
t = time.time()
from tasks.data.pipeline import train_tokenizer
from tasks.training.assemble import assemble
from tasks.training.route import embed_domain
from tasks.training.train import train_dense, train_expert, train_public

P = RunPaths(profile)
if not P.tokenizer_dir.exists():
    train_tokenizer(profile)
    print("tokenizer", time.time() - t, flush=True)
if not (P.public_model_dir / "config.json").exists():
    train_public(profile)
    print("public", time.time() - t, flush=True)
for d in profile.domains:
    if not P.router_embedding(d).exists():
        embed_domain(profile, d)
print("router", time.time() - t, flush=True)
files = []
for d in profile.closed_domains:
    f = P.expert_dir(d) / "expert.safetensors"
    if not f.exists():
        train_expert(profile, d)
    if not (P.dense_dir(d) / "model" / "config.json").exists():
        train_dense(profile, d)
    files.append(f)
    print("trained", d, time.time() - t, flush=True)
assemble(profile, files)
print("assembled", time.time() - t, flush=True)
from tasks.evaluation.evaluate import evaluate

r = evaluate(profile)
print("eval", time.time() - t, r.report, r.seconds, flush=True)
