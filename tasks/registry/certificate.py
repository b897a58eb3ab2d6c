"""The revocation certificate: evidence that a revoked expert is gone from what is served, in the audit trail.

Why: a tag says an expert was revoked; it does not show that the served model no longer computes with it. After
`flexo revoke` re-assembles, the certificate runs sample prompts (the owner's own training texts where they are at hand,
else fixed ones) through the new `serving` MoE and through the MoE that held the expert with that expert sliced out by
independent code: the logits must agree (max |delta logit|, floating-point order at most), and the revoked expert's
attribution in the MoE that held it, masked, and in the new one must be exactly 0. It is written to
reports/revocations/<domain>-v<version>.json and recorded as the audit event `revocation_certificate`, which
`flexo audit` shows.

The extraction rate on the owner's training documents completes it: the attack sits above the registry, so
`flows.certificate.certify_extraction` (what `flexo revoke` and the `revoke` flow run after this) measures it on the new
serving MoE and on M_pub, and `record_extraction` adds the comparison to the certificate file and the audit trail
(`revocation_certificate_extraction`). Both models are probed on the same windows, so the difference of the two rates
gets a paired interval (Newcombe's hybrid score interval for paired proportions, built from Wilson intervals): the
rate is called at M_pub's level only when that interval holds 0, and a calibration the attack failed says the rates
prove nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.datasets import read_texts
from tasks.core.errors import DataError
from tasks.registry import audit
from tasks.registry.consent import holdings
from tasks.registry.names import VersionRef
from tasks.registry.store import client

FIXED_PROMPTS = ("The theorem follows from", "Stocks fell sharply as", "def add(a, b):", "Once upon a time")
SAMPLES = 8  # prompts per certificate
PROMPT_TOKENS = 32  # tokens kept of each prompt
CONFIDENCE = 0.95  # of the interval on the difference of the two extraction rates
Z = 1.959963984540054  # the two-sided standard normal quantile of CONFIDENCE
EXTRACTION_EVENT = "revocation_certificate_extraction"  # the audit event that completes `revocation_certificate`


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


def wilson(extracted: int, n: int) -> tuple[float, float]:
    """The Wilson score interval of a rate `extracted / n` at CONFIDENCE (sensible at 0 and at small n)."""
    if n == 0:
        return 0.0, 1.0
    p, z2 = extracted / n, Z * Z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference_interval(first: Sequence[bool], second: Sequence[bool]) -> tuple[float, float]:
    """The CONFIDENCE interval of rate(first) - rate(second), both measured on the same documents: Newcombe's (1998)
    method 10, the Wilson intervals of the two rates combined through their correlation across documents (phi, with
    Newcombe's correction of its numerator; Altman et al., Statistics with Confidence, 2000, p. 52)."""
    n = len(first)
    both = sum(a and b for a, b in zip(first, second, strict=True))
    only_first, only_second = sum(first) - both, sum(second) - both
    neither = n - both - only_first - only_second
    p1, p2 = sum(first) / n, sum(second) / n
    (l1, u1), (l2, u2) = wilson(sum(first), n), wilson(sum(second), n)
    margins = (both + only_first) * (only_second + neither) * (both + only_second) * (only_first + neither)
    cross = both * neither - only_first * only_second
    corrected = cross - n / 2 if cross > n / 2 else min(cross, 0)
    phi = corrected / math.sqrt(margins) if margins else 0.0
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, p1 - p2 - below), min(1.0, p1 - p2 + above)


def extraction_comparison(
    serving: Sequence[bool], public: Sequence[bool], calibration_rate: float, required_rate: float, source: str
) -> dict[str, object]:
    """The extraction evidence: per probed training document of the revoked owner, whether the new serving MoE and
    M_pub reproduced it (the attack's metric, prefix counted); their rates, the difference with its interval and a
    verdict that claims M_pub's level only when the interval holds 0 and the calibration showed the attack works."""
    n = len(serving)
    rate_serving, rate_public = sum(serving) / n, sum(public) / n
    low, high = paired_difference_interval(serving, public)
    calibrated = calibration_rate >= required_rate
    measured = (
        f"{rate_serving:.1%} on the serving MoE against {rate_public:.1%} on M_pub over {n} of the owner's training "
        f"documents, difference {rate_serving - rate_public:+.1%} ({CONFIDENCE:.0%} CI {low:+.1%} to {high:+.1%})"
    )
    if not calibrated:
        verdict = (
            f"not shown: the attack's calibration model was extracted at {calibration_rate:.0%}, below the "
            f"{required_rate:.0%} that shows the attack works, so these rates prove nothing ({measured})"
        )
    elif low <= 0.0 <= high:
        verdict = f"the extraction rate is at M_pub's level: {measured}"
    else:
        verdict = f"the extraction rate is {'above' if low > 0 else 'below'} M_pub's level: {measured}"
    return {
        "measured": True,
        "documents": n,
        "document_source": source,
        "rate_serving_moe": rate_serving,
        "rate_public": rate_public,
        "difference": rate_serving - rate_public,
        "difference_interval": [low, high],
        "confidence": CONFIDENCE,
        "calibration_rate": calibration_rate,
        "calibration_passed": calibrated,
        "at_public_level": calibrated and low <= 0.0 <= high,
        "verdict": verdict,
    }


def record_extraction(
    profile: Profile, certificate: Mapping[str, object], extraction: Mapping[str, object], who: str | None = None
) -> dict[str, object]:
    """The certificate with its extraction evidence (`extraction_comparison`, or {"measured": False, "verdict": why}),
    written to its file again and recorded in the audit trail of the revoked expert as EXTRACTION_EVENT."""
    completed = {**certificate, "extraction": dict(extraction)}
    write_certificate(profile, completed)
    name, version = str(certificate["expert"]).rsplit(":", 1)
    detail = {"serving_moe": certificate["serving_moe"], "certificate": certificate.get("path"), **extraction}
    audit.record(client(profile), name, version, EXTRACTION_EVENT, who, **detail)
    return completed
