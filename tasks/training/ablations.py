"""The paper's router ablations (FlexOlmo Tables 1 and 3), trained and merged so `flexo eval` can score them.

Each variant retrains the experts of `ablation.domains` (default Table 1's set: math, educational, code) with one thing
changed and merges them with M_pub into their own MoE under `runs/<profile>/ablations/<variant>/moe`:

- `no_bias`: domain-embedding router rows, no bias b_i (paper: 46.7 -> 45.8).
- `random_router`: random router rows (r_pub from a fixed public seed, r_i from one per owner), no bias (paper: 44.4).
- `public_router`: rows from M_pub's own hidden states on the owner's documents instead of a sentence encoder
  (`model.router.hidden_state_embedding`), bias kept (paper Table 3: 43.5).

Data, token budget, schedule and M_pub are exactly the normal expert's, so the reference is the serving MoE sliced to
the same experts (`model.optout.keep_experts`): FlexOlmo with the same owners, trained the normal way. Ablation experts
are research artifacts: they are not registered and never served.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from model.baselines import random_router_rows
from model.precision import autocast
from model.reproducible_safetensors import save_file
from model.router import hidden_state_embedding
from tasks.core.artifacts import EXPERT_FILE, RunPaths
from tasks.core.config import Profile
from tasks.core.device import resolve_run_precision
from tasks.core.errors import ConfigError, DataError
from tasks.core.tokenizer import load_tokenizer
from tasks.training.assemble import assemble
from tasks.training.dense import trained_public_model
from tasks.training.expert import ExpertSetting, domain_router_row, train_expert
from tasks.training.outcome import TrainOutcome
from tasks.training.route import router_sample

LABELS = {
    "no_bias": "no bias",
    "random_router": "random router init, no bias",
    "public_router": "public-model router init",
}
PAPER_TABLE1 = {"reference": 46.7, "no_bias": 45.8, "random_router": 44.4, "public_router": 43.5}  # task averages


def row_name(variant: str) -> str:
    """The row of the evaluation table for a variant."""
    return f"ablation: {LABELS[variant]}"


def reference_name(profile: Profile) -> str:
    """The row the ablations are compared with: FlexOlmo holding exactly the ablated owners' (normal) experts."""
    return "FlexOlmo (no RT), " + "+".join(["public", *profile.ablation.domains])


def _check_variant(variant: str) -> None:
    if variant not in LABELS:
        raise ConfigError(f"unknown ablation variant '{variant}'; choose one of {list(LABELS)}")


def _document_batches(profile: Profile, domain: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The router sample of the domain's train split (the same documents the sentence encoder embeds), tokenized."""
    texts = router_sample(profile, domain)
    tokenizer = load_tokenizer(profile)
    size = profile.router.embed_batch_size
    for start in range(0, len(texts), size):
        encoded = tokenizer(
            texts[start : start + size],
            truncation=True,
            max_length=profile.train_expert.seq_len,
            padding=True,
            return_tensors="pt",
            add_special_tokens=False,
        )
        yield encoded["input_ids"], encoded["attention_mask"]


def router_row(
    profile: Profile, variant: str, domain: str, public_model: torch.nn.Module | None = None
) -> torch.Tensor:
    """The variant's router row for `domain` (or `public`), cached in the variant's router/ directory."""
    _check_variant(variant)
    if variant == "no_bias":
        return domain_router_row(profile, domain)
    path = RunPaths(profile).ablation_dir(variant) / "router" / f"{domain}.safetensors"
    if path.exists():
        return load_file(str(path))["row"]
    hidden, std = profile.model.hidden_size, profile.model.init_std
    if variant == "random_router":
        seed = profile.router.projection_seed + (0 if domain == "public" else 1 + zlib.crc32(domain.encode()))
        row = random_router_rows(1, hidden, std, seed)[0]
    else:
        if public_model is None:
            raise DataError(f"{path}: missing; train the variant's experts first (`flexo ablate --variant {variant}`)")
        device = next(public_model.parameters()).device
        with autocast(resolve_run_precision(profile, device), device):  # as M_pub was trained
            row = hidden_state_embedding(public_model, _document_batches(profile, domain))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"row": row.contiguous()}, str(path), metadata={"variant": variant, "domain": domain})
    return row


def train_variant(
    profile: Profile, domain: str, variant: str, *, resume: bool = True, logger: Any = None
) -> TrainOutcome:
    """Train `domain`'s expert under `variant` into runs/<profile>/ablations/<variant>/experts/<domain>/."""
    _check_variant(variant)
    if domain not in profile.closed_domains:
        raise ConfigError(f"'{domain}' is not a data owner's domain; choose one of {profile.closed_domains}")
    public_model = trained_public_model(profile)[0] if variant == "public_router" else None
    setting = ExpertSetting(
        label=variant,
        out_dir=RunPaths(profile).ablation_dir(variant) / "experts" / domain,
        r_pub=router_row(profile, variant, "public", public_model),
        r_expert=router_row(profile, variant, domain, public_model),
        bias_init=profile.train_expert.bias_init if variant == "public_router" else None,
    )
    return train_expert(profile, domain, resume=resume, logger=logger, setting=setting)


def assemble_variant(profile: Profile, variant: str) -> dict[str, Any]:
    """Merge M_pub and the variant's experts into runs/<profile>/ablations/<variant>/moe (same top-k rule as
    FlexOlmo)."""
    _check_variant(variant)
    root = RunPaths(profile).ablation_dir(variant)
    files = [root / "experts" / d / EXPERT_FILE for d in profile.ablation.domains]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise DataError(f"ablation '{variant}': expert files missing {missing}; run `flexo ablate --variant {variant}`")
    moe = assemble(profile, files, out_dir=root / "moe", r_pub=router_row(profile, variant, "public"))
    return {
        "variant": variant,
        "model_dir": str(moe.model_dir),
        "sha256": moe.sha256,
        "experts": moe.experts,
        "top_k": moe.top_k,
    }


def run_ablations(profile: Profile, variants: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Every configured variant end to end (train each domain, then merge); for the CLI. The pipeline runs the same two
    functions as separate cached Prefect tasks."""
    out = {}
    for variant in variants or profile.ablation.variants:
        for domain in profile.ablation.domains:
            train_variant(profile, domain, variant)
        out[variant] = assemble_variant(profile, variant)
    return out


def assembled(profile: Profile) -> dict[str, Path]:
    """{variant: MoE directory} of the configured variants that have been assembled."""
    root = RunPaths(profile)
    found = {}
    for variant in profile.ablation.variants:
        directory = root.ablation_dir(variant) / "moe"
        if (directory / "config.json").exists():
            found[variant] = directory
    return found
