"""Why a coordinated expert learns less than the dense model on its own domain: one owner's expert retrained under
variants of the recipe, each scored with the same evaluator as M_pub and the dense domain model.

Reads a finished run's M_pub, router rows, dense model and data (a copy of them: `--data-dir`, `--runs-dir`), trains
each variant from scratch into a temporary folder, and prints one JSON line per variant and a table: validation CE
(nats) on the owner's val+test split (the gap closed = (M_pub - variant) / (M_pub - dense)), CE on public val
(forgetting), and per layer the router mass on FFN_i, the bias and FFN_i's relative update norm.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/expert_gap.py --profile demo --domain math \
        --data-dir /tmp/eg/data --runs-dir /tmp/eg/runs --variants recipe recipe+lr_x3 no_bias

Variants (everything else is the profile's expert recipe): recipe; no_bias; bias_0 (bias starts at -0.01);
row_frozen (r_i not trained); layer_<l> (FFN_i, r_i, b_i train in layer l only); mass_1 (FFN_i replaces FFN_pub
outright, p_i = 1: routing dilution removed, a diagnostic, not the method); dense_all (the dense model, rerun),
ffn_only_dense, dense_no_ffn, dense_head (the dense model with only its FFNs / all but its FFNs / only its output layer
trained: where the dense model's gain comes from, a diagnostic). Any variant takes `+lr_x<k>` and `+steps_x<k>` (peak
LR; steps, the schedule's shape kept), e.g. `recipe+steps_x4`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from model.coordinated import CoordinatedExpertModel
from model.training import coordinated_loss, dense_loss, evaluate, train
from tasks.core import build
from tasks.core.config import load_profile
from tasks.core.datasets import read_texts
from tasks.core.tokenizer import load_tokenizer
from tasks.training.dense import trained_public_model
from tasks.training.expert import domain_router_row
from tasks.training.inputs import PUBLIC, owner_inputs, public_inputs, tokenize


def _eval_rows(profile: Any, domain: str, seq_len: int) -> torch.Tensor:
    """Every full row of the domain's val and test splits (the fixed validation batches are only 2 x 16 rows)."""
    tokenizer = load_tokenizer(profile)
    texts = read_texts(profile, domain, "val") + read_texts(profile, domain, "test")
    data = tokenize(tokenizer, texts, seq_len)
    return data.rows(list(range(data.num_sequences)))


def _ce(model: torch.nn.Module, rows: torch.Tensor, spec: Any, coordinated: bool) -> float:
    batches = list(rows.split(spec.batch_size))
    loss = coordinated_loss if coordinated else dense_loss(0.0)
    return evaluate(model, loss, batches, spec)["ce"]


def _static_rows(model: CoordinatedExpertModel, rows: torch.Tensor) -> list[dict[str, float]]:
    """Per layer: |r_pub|, |r_i|, mean logits r_pub.h and r_i.h + b on the owner's tokens, and mean p_i."""
    captured: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: captured.append(i[0].detach())) for b in model.moe_blocks]
    with torch.no_grad():
        model.eval()
        model(rows[:16])
    for hook in hooks:
        hook.remove()
    out = []
    for index, (block, hidden) in enumerate(zip(model.moe_blocks, captured, strict=True)):
        logits = block.router_logits(hidden.float())
        out.append(
            {
                "layer": index,
                "r_pub_norm": float(block.router_public.detach().norm()),
                "r_i_norm": float(block.router_expert.detach().norm()),
                "h_norm": float(hidden.float().norm(dim=-1).mean()),
                "logit_pub": float(logits[..., 0].mean()),
                "logit_i": float(logits[..., 1].mean()),
                "mass_i": float(torch.softmax(logits, -1)[..., 1].mean()),
            }
        )
    return out


def _coordinated(profile: Any, domain: str, public: Any, variant: str) -> CoordinatedExpertModel:
    cfg = profile.train_expert
    r_pub, r_i = domain_router_row(profile, PUBLIC), domain_router_row(profile, domain)
    bias: float | None = cfg.bias_init
    if variant == "no_bias":
        bias = None
    if variant == "bias_0":
        bias = -0.01
    model = CoordinatedExpertModel.from_public(public, r_pub, r_i, bias, cfg.lm_z_loss, cfg.router_z_loss)
    if variant == "row_frozen":
        for block in model.moe_blocks:
            block.router_expert.requires_grad_(False)
    if variant.startswith("layer_"):
        keep = int(variant.split("_")[1])
        for index, block in enumerate(model.moe_blocks):
            if index != keep:
                for p in block.parameters():
                    p.requires_grad_(False)
    if variant == "mass_1":  # FFN_i replaces FFN_pub outright (p_i = 1): no router, nothing for r_i and b_i to do
        for block in model.moe_blocks:
            block.router_expert.requires_grad_(False)
            if block.bias_theta is not None:
                block.bias_theta.requires_grad_(False)
            block.forward = _expert_only(block)  # type: ignore[method-assign]
    return model


def _expert_only(block: Any) -> Any:
    def forward(hidden: torch.Tensor) -> torch.Tensor:
        block.last_router_logits = torch.zeros(*hidden.shape[:-1], 2, dtype=hidden.dtype, device=hidden.device)
        block.last_expert_mass = torch.ones((), device=hidden.device)
        return block.ffn_expert(hidden)

    return forward


# dense diagnostics: which of M_pub's parameters train (a name matches one of the fragments); all = the dense model
DENSE_PARTS = {
    "dense_all": ("",),
    "ffn_only_dense": (".mlp.",),
    "dense_no_ffn": ("embed_tokens", "self_attn", "norm", "lm_head"),
    "dense_head": ("lm_head", "model.norm"),
}


def run_variant(profile: Any, domain: str, variant: str, work: Path) -> dict[str, Any]:
    """Train one variant: a base (a coordinated setting or a DENSE_PARTS key) with optional `+` modifiers lr_x<k> and
    steps_x<k> (e.g. `ffn_only_dense+steps_x4`)."""
    cfg = profile.train_expert
    data = owner_inputs(profile, domain)
    base, *mods = variant.split("+")
    factor = {m.split("_x")[0]: float(m.split("_x")[1]) for m in mods}
    steps = int(data.steps * factor.get("steps", 1))
    spec = build.train_spec(profile, cfg, steps, "cpu")
    spec = replace(spec, lr=spec.lr * factor.get("lr", 1), eval_every=max(1, steps // 4), checkpoint_every=10**9)
    public, _ = trained_public_model(profile)
    own_rows = _eval_rows(profile, domain, cfg.seq_len)
    pub_rows = _eval_rows(profile, PUBLIC, cfg.seq_len)[:64]
    tick = time.perf_counter()
    if base in DENSE_PARTS:
        model: Any = public
        for name, p in model.named_parameters():
            p.requires_grad_(any(part in name for part in DENSE_PARTS[base]))
        decay = cfg.dense_weight_decay if base == "dense_all" else spec.weight_decay
        spec = replace(spec, weight_decay=decay)
        result = train(model, dense_loss(cfg.lm_z_loss), data.train, data.val, spec, work / variant, resume=False)
        own, pub = _ce(model, own_rows, spec, False), _ce(model, pub_rows, spec, False)
        layers: list[dict[str, float]] = []
    else:
        model = _coordinated(profile, domain, public, base)
        static = _static_rows(model, own_rows)
        result = train(model, coordinated_loss, data.train, data.val, spec, work / variant, resume=False)
        own, pub = _ce(model, own_rows, spec, True), _ce(model, pub_rows, spec, True)
        model.eval()
        with torch.no_grad():
            model(own_rows[:16])
        diag = {k: float(v) for k, v in model.diagnostics().items()}
        layers = [
            {
                **static[i],
                "mass_end": diag[f"router_mass_l{i}"],
                "bias_end": diag[f"bias_l{i}"],
                "ffn_update": diag[f"ffn_update_l{i}"],
            }
            for i in range(len(static))
        ]
    return {
        "variant": variant,
        "steps": steps,
        "lr": spec.lr,
        "own_ce": own,
        "public_ce": pub,
        "final_train_ce": result.train_metrics.get("ce"),
        "seconds": round(time.perf_counter() - tick, 1),
        "layers": layers,
    }


def references(profile: Any, domain: str) -> dict[str, float]:
    """M_pub's and the dense domain model's CE with the same evaluator."""
    from model.public import load_public_model

    cfg = profile.train_expert
    spec = build.train_spec(profile, cfg, 2, "cpu")
    public, _ = trained_public_model(profile)
    dense = load_public_model(str(Path(profile.paths.runs_dir) / profile.name / "dense" / domain / "model"))
    own_rows = _eval_rows(profile, domain, cfg.seq_len)
    pub_rows = _eval_rows(profile, PUBLIC, cfg.seq_len)[:64]
    return {
        "public_own": _ce(public, own_rows, spec, False),
        "public_public": _ce(public, pub_rows, spec, False),
        "dense_own": _ce(dense, own_rows, spec, False),
        "dense_public": _ce(dense, pub_rows, spec, False),
        "own_rows": int(own_rows.shape[0]),
    }


def merged_reference(profile: Any, domain: str, moe_dir: str) -> dict[str, Any]:
    """The assembled FlexOlmo MoE (all owners' experts, `flexo_manifest.json` says their order): CE on the owner's rows
    and, per layer, the owner expert's mean router probability and how often it is in the top-k."""
    from transformers import AutoModelForCausalLM

    manifest = json.loads((Path(moe_dir) / "flexo_manifest.json").read_text())
    index = manifest["experts"].index(domain)
    moe = AutoModelForCausalLM.from_pretrained(moe_dir).eval()
    spec = build.train_spec(profile, profile.train_expert, 2, "cpu")
    own_rows = _eval_rows(profile, domain, profile.train_expert.seq_len)
    captured: list[torch.Tensor] = []
    hooks = [
        layer.mlp.gate.register_forward_hook(lambda m, i, o: captured.append(o[0].detach()))
        for layer in moe.model.layers
    ]
    with torch.no_grad():
        moe(input_ids=own_rows[:16])
    for hook in hooks:
        hook.remove()
    top_k = moe.config.num_experts_per_tok
    layers = []
    for logits in captured:
        probs = torch.softmax(logits.float(), dim=-1)
        chosen = probs.topk(top_k, dim=-1).indices
        layers.append(
            {
                "mass_own": float(probs[:, index].mean()),
                "mass_public": float(probs[:, 0].mean()),
                "in_top_k": float((chosen == index).any(-1).float().mean()),
            }
        )
    return {"moe_own": _ce(moe, own_rows, spec, False), "moe_layers": layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--domain", default="math")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--runs-dir", required=True)
    parser.add_argument("--variants", nargs="*", default=["recipe"])
    parser.add_argument("--moe-dir", help="an assembled FlexOlmo MoE of the same run: its CE and routing are added")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 beside other work; all cores idle)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = load_profile(args.profile)
    paths = base.paths.model_copy(update={"data_dir": args.data_dir, "runs_dir": args.runs_dir})
    profile = base.model_copy(update={"paths": paths})
    public_inputs(profile)  # the tokenizer and data are where they should be
    refs = references(profile, args.domain)
    if args.moe_dir:
        refs.update(merged_reference(profile, args.domain, args.moe_dir))
    print(json.dumps({"domain": args.domain, "references": refs}), flush=True)
    gap = refs["public_own"] - refs["dense_own"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            torch.manual_seed(profile.seed)
            out = run_variant(profile, args.domain, variant, Path(tmp))
            out["gap_closed"] = (refs["public_own"] - out["own_ce"]) / gap
            print(json.dumps({"domain": args.domain, **out}), flush=True)
            rows.append(out)
    print(
        f"\n{args.domain}: M_pub {refs['public_own']:.3f}  dense {refs['dense_own']:.3f} (public val: M_pub "
        f"{refs['public_public']:.3f}, dense {refs['dense_public']:.3f})"
    )
    print(f"{'variant':16} {'steps':>5} {'lr':>8} {'own CE':>7} {'gap%':>6} {'pub CE':>7}  mass per layer (start->end)")
    for r in rows:
        mass = " ".join(f"{x.get('mass_i', 1):.2f}->{x['mass_end']:.2f}" for x in r["layers"])
        print(
            f"{r['variant']:16} {r['steps']:5d} {r['lr']:8.1e} {r['own_ce']:7.3f} {100 * r['gap_closed']:6.1f} "
            f"{r['public_ce']:7.3f}  {mass}"
        )


if __name__ == "__main__":
    main()
