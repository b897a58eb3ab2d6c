"""The revocation certificate: evidence that a revoked expert is gone from what is served, in the audit trail.

Why: a tag says an expert was revoked; it does not show that the served model no longer computes with it. After
`flexo revoke` re-assembles, the certificate runs sample prompts (the owner's own training texts where they are at hand,
else fixed ones) through the new `serving` MoE and through the MoE that held the expert with that expert sliced out by
independent code: the logits must agree (max |delta logit|, floating-point order at most), and the revoked expert's
attribution in the MoE that held it, masked, and in the new one must be exactly 0. It is written to
reports/revocations/<domain>-v<version>.json and recorded as the audit event `revocation_certificate`, which
`flexo audit` shows. The extraction rate on the owner's documents is not part of it: the attack (`flexo attack`) sits
above the registry and measures it separately.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.datasets import read_texts
from tasks.core.errors import DataError
from tasks.registry.consent import holdings
from tasks.registry.names import VersionRef

FIXED_PROMPTS = ("The theorem follows from", "Stocks fell sharply as", "def add(a, b):", "Once upon a time")
SAMPLES = 8  # prompts per certificate
PROMPT_TOKENS = 32  # tokens kept of each prompt


def sample_prompts(profile: Profile, domain: str) -> tuple[list[str], str]:
    """Up to SAMPLES of the revoked owner's training texts (what the expert learned from), else fixed prompts."""
    try:
        return read_texts(profile, domain, "train")[:SAMPLES], f"data/{domain}/train"
    except DataError:
        return list(FIXED_PROMPTS), "fixed prompts"


@torch.no_grad()
def _run(model: Any, tokenizer: Any, prompts: list[str], index: int | None, drop: list[int]) -> tuple[list, float]:
    """Logits per prompt and the largest router share expert `index` got, with experts `drop` masked."""
    from model.attribution import record_routing
    from model.optout import masked_experts

    logits, share = [], 0.0
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"][:, :PROMPT_TOKENS]
        with masked_experts(model, drop), record_routing(model) as record:
            logits.append(model(input_ids=ids).logits[0].float())
        if index is not None:
            share = max(share, float(record.per_token()[0][:, index].max()))
    return logits, share


def certify(
    profile: Profile, expert: VersionRef, previous: tuple[VersionRef, Path], new: tuple[VersionRef, Path]
) -> dict[str, Any]:
    """The certificate of `expert`'s revocation: `previous` (the serving MoE that held it) and `new` (the MoE
    re-assembled without it), each (ref, assembled model dir). The expert's share in `previous` with it masked must be
    0; `new` must compute what `previous` computes with the expert sliced out (`model.optout.keep_experts`, at `new`'s
    top-k). The logits are compared only when the other experts inside are the same versions (else None)."""
    from model.optout import keep_experts
    from tasks.registry.serving import FlexoMoE

    prompts, source = sample_prompts(profile, expert.domain)
    fresh = FlexoMoE(new[1])
    new_index = fresh.experts.index(expert.domain) if expert.domain in fresh.experts else None
    new_logits, new_share = _run(fresh.model, fresh.tokenizer, prompts, new_index, [])
    top_k = fresh.model.config.num_experts_per_tok
    del fresh
    old = FlexoMoE(previous[1])
    index = old.experts.index(expert.domain)
    _, masked_share = _run(old.model, old.tokenizer, prompts, index, [index])
    others = {d: v for d, v in holdings(previous[0]).items() if d != expert.domain}
    delta = None
    if others == holdings(new[0]):
        sliced = keep_experts(old.model, [i for i in range(len(old.experts)) if i != index], top_k=top_k)
        sliced_logits, _ = _run(sliced, old.tokenizer, prompts, None, [])
        delta = max(float((a - b).abs().max()) for a, b in zip(sliced_logits, new_logits, strict=True))
    return {
        "expert": f"{expert.name}:{expert.version}",
        "previous_moe": f"{previous[0].name}:{previous[0].version}",
        "serving_moe": f"{new[0].name}:{new[0].version}",
        "prompts": len(prompts),
        "prompt_source": source,
        "max_abs_delta_logit": delta,  # None: the other experts inside changed since, so there is nothing to compare
        "attribution_masked_previous": masked_share,
        "attribution_serving": new_share,
        "in_serving_moe": new_index is not None,
    }


def write_certificate(profile: Profile, certificate: dict[str, Any]) -> Path:
    """reports/revocations/<domain>-v<version>.json."""
    name, version = str(certificate["expert"]).rsplit(":", 1)
    domain = name.removeprefix(profile.registry.expert_model_prefix)
    path = RunPaths(profile).reports_dir / "revocations" / f"{domain}-v{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(certificate, indent=2, sort_keys=True))
    return path
