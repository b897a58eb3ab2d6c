"""How long the `demo` extraction attack on one domain takes (target: <= 3 minutes on 2 CPU cores).

Two modes:
- real (default when the demo artifacts exist): `tasks.privacy.attack.attack(load_profile("demo"), domain)` on the
  trained models in runs/demo, data/<domain>/train.parquet and data/tokenizer. Rates are real.
- `--synthetic`: the same work at the same sizes in a temporary directory, for a machine without trained models: the
  real tokenizer and train split when they exist (else a BPE tokenizer and split of random word documents), a
  random-init M_pub, start-state experts for every owner's domain assembled into an 8-expert FlexOlmo (as the
  pipeline's serving MoE), the dense model = M_pub. The timing is what the demo attack costs; the rates (all near zero
  except calibration) say nothing about leakage.

Prints one JSON object (timings per phase, rates) and a table. Usage:
    .venv/bin/python benchmarks/attack_speed.py [--domain math] [--synthetic]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import tasks  # noqa: E402,F401  (offline environment)
from tasks.core.artifacts import EXPERT_FILE, RunPaths  # noqa: E402
from tasks.core.config import Profile, load_profile  # noqa: E402

BUDGET_SECONDS = 180.0  # the target for the demo attack on one domain
SYNTHETIC_TRAIN_DOCS = 400  # train documents in the synthetic split (>= attack.num_docs long enough ones)
SYNTHETIC_DOC_WORDS = 220  # words per synthetic document (longer than the demo window in tokens)
SYNTHETIC_LOGIT_SCALE = 30.0  # final-norm weight: the logit scale of a trained LM (random init caps logits near 1)


def _synthetic_workspace(profile: Profile, domain: str, root: Path) -> Profile:
    """Demo-size tokenizer and split (the real ones when they exist), M_pub, router rows, experts, MoE, dense model."""
    from transformers import PreTrainedTokenizerFast

    real = RunPaths(profile)
    use_real_data = (real.tokenizer_dir / "tokenizer.json").exists() and real.split(domain, "train").exists()
    paths_cfg = profile.paths.model_copy(
        update={
            "data_dir": str(real.profile.path("data_dir") if use_real_data else root / "data"),
            "runs_dir": str(root / "runs"),
            "reports_dir": str(root / "reports"),
            "mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "mlflow_artifacts_dir": str(root / "mlartifacts"),
            "dvc_remotes_dir": str(root / "remotes"),
        }
    )
    profile = profile.model_copy(update={"paths": paths_cfg})
    paths = RunPaths(profile)
    if use_real_data:  # the real tokenizer and train split: real document lengths, only the models are stand-ins
        tok = PreTrainedTokenizerFast.from_pretrained(str(paths.tokenizer_dir), local_files_only=True)
    else:
        tok = _synthetic_data(profile, domain, paths)
    _synthetic_models(profile, domain, paths, tok)
    return profile


def _synthetic_data(profile: Profile, domain: str, paths: RunPaths):
    """A BPE tokenizer and a train split of random-word documents (when no real data exists)."""
    import numpy as np
    import pandas as pd
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(profile.seed)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=rng.integers(2, 9))) for _ in range(3000)]
    texts = [" ".join(rng.choice(words, size=SYNTHETIC_DOC_WORDS)) for _ in range(SYNTHETIC_TRAIN_DOCS)]
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=profile.tokenizer.vocab_size, special_tokens=["<pad>", "<eos>", "<unk>"])
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tok.save_pretrained(paths.tokenizer_dir)
    split = paths.split(domain, "train")
    split.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": [f"{domain}-{i}" for i in range(len(texts))], "text": texts}).to_parquet(split)
    return tok


def _synthetic_models(profile: Profile, domain: str, paths: RunPaths, tok) -> None:
    """Random-init demo-size M_pub, router rows, start-state experts for every domain, the serving MoE, dense =
    M_pub."""
    from safetensors.torch import save_file

    from model.config import ModelSizes, TokenizerIds
    from model.coordinated import CoordinatedExpertModel
    from model.export import export_pretrained
    from model.public import build_public_model
    from tasks.training.assemble import assemble
    from tasks.training.expert_file import save_expert

    public = build_public_model(
        ModelSizes.from_mapping(profile.model), TokenizerIds(tok.pad_token_id, tok.eos_token_id), profile.seed
    ).eval()
    with torch.no_grad():
        public.model.norm.weight.fill_(SYNTHETIC_LOGIT_SCALE)
    public_sha = export_pretrained(public, paths.public_model_dir, paths.tokenizer_dir)
    export_pretrained(public, paths.dense_dir(domain) / "model")
    generator = torch.Generator().manual_seed(profile.seed)
    rows = {}
    for name in ["public", *profile.closed_domains]:
        rows[name] = torch.randn(profile.model.hidden_size, generator=generator) * 0.3
        target = paths.router_embedding(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file({"raw": rows[name].clone(), "projected": rows[name].clone()}, str(target))
    files = []
    for name in profile.closed_domains:
        state = CoordinatedExpertModel.from_public(public, rows["public"], rows[name]).expert_state()
        for key, value in state.items():  # distinct experts: perturb each FFN a little
            if key.endswith(".weight"):
                value.add_(torch.randn(value.shape, generator=generator) * 0.01)
        path = paths.expert_dir(name) / EXPERT_FILE
        save_expert(state, path, domain=name, public_sha256=public_sha)
        if name != domain:
            files.append(path)
    assemble(profile, files)  # the serving MoE without the attacked domain; the attack adds it back


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default=None, help="domain to attack (default: attack.domain)")
    parser.add_argument("--synthetic", action="store_true", help="build demo-size stand-in models in a temp dir")
    parser.add_argument(
        "--threads",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="torch threads (2 = the target machine; 1 on a shared, oversubscribed machine, where the "
        "process CPU time is then an upper bound of a dedicated core's wall time)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = load_profile("demo")
    domain = args.domain or profile.attack.domain
    from tasks.privacy.attack import attack
    from tasks.privacy.results import summary_rows

    with tempfile.TemporaryDirectory() as tmp:
        setup_seconds = 0.0
        if args.synthetic:
            started = time.perf_counter()
            profile = _synthetic_workspace(profile, domain, Path(tmp))
            setup_seconds = time.perf_counter() - started
        started, cpu_started = time.perf_counter(), time.process_time()
        result = attack(profile, domain, progress=True)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        report = json.loads(result.report_path.read_text())
    a = profile.attack
    out = {
        "benchmark": "attack_speed",
        "mode": "synthetic" if args.synthetic else "real",
        "profile": profile.name,
        "domain": domain,
        "threads": torch.get_num_threads(),
        "docs": a.num_docs,
        "samples_per_prefix": a.samples_per_prefix,
        "prefix_tokens": a.prefix_tokens,
        "window_tokens": a.window_tokens,
        "generated_tokens_per_model": a.num_docs * a.samples_per_prefix * (a.window_tokens - a.prefix_tokens),
        "setup_seconds": round(setup_seconds, 1),
        "attack_seconds": round(seconds, 1),
        "attack_cpu_seconds": round(cpu_seconds, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "budget_seconds": BUDGET_SECONDS,
        "within_budget": seconds <= BUDGET_SECONDS,
        "calibration_seconds": round(result.calibration.seconds, 1),
        "calibration_rate": result.calibration.rate.rate,
        "model_seconds": {n: round(m.seconds, 1) for n, m in result.models.items()},
        "rates": {n: m.rate for n, m in result.models.items()},
        "rates_no_prefix": {n: m.rate_no_prefix for n, m in result.models.items()},
        "flexolmo": report["models"]["flexolmo"]["description"],
    }
    print(json.dumps(out, indent=2))
    print(f"\n{'model':<18}{'extracted':>10}{'rate':>8}{'no prefix':>11}{'mean sim':>10}{'(no prefix)':>13}")
    for name, extracted, rate, no_prefix, mean, mean_no_prefix in summary_rows(result):
        print(f"{name:<18}{extracted:>10}{rate:>8}{no_prefix:>11}{mean:>10}{mean_no_prefix:>13}")
    print(
        f"\nattack {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU (budget {BUDGET_SECONDS:.0f} s) on "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
