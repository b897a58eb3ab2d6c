"""Assembly: merge M_pub and the given experts into one FlexOlmo, export it, and write a manifest of exactly what is
inside.

Takes expert *files* (resolved and sha256-checked by the registry, which knows which versions are active and not
revoked); this step itself re-checks that every expert was coordinated with this exact M_pub.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import FlexOlmoForCausalLM, Olmo2ForCausalLM

from model.export import export_pretrained
from model.hashing import sha256_file
from model.merge import MergeError, merge_experts
from model.public import load_public_model
from tasks.core.artifacts import MANIFEST_FILE as MANIFEST
from tasks.core.artifacts import WEIGHTS_FILE, RunPaths
from tasks.core.config import Profile
from tasks.core.errors import DataError, IntegrityError
from tasks.training.expert_file import load_expert
from tasks.training.route import load_router_embedding


@dataclass(frozen=True)
class AssembledMoE:
    model_dir: Path
    sha256: str
    experts: list[str]  # expert order: "public" first, then the domains
    top_k: int


def assemble(
    profile: Profile,
    expert_files: Sequence[Path],
    expected_sha256: Sequence[str | None] | None = None,
    top_k: int | None = None,
    out_dir: Path | None = None,
    r_pub: torch.Tensor | None = None,
) -> AssembledMoE:
    """Merge, export (safetensors + tokenizer) and describe the MoE; returns where it is and what it holds.
    `r_pub` overrides the public router row (the router ablations train against their own)."""
    paths = RunPaths(profile)
    public_weights = paths.public_model_dir / WEIGHTS_FILE
    if not public_weights.exists():
        raise DataError(f"{public_weights}: M_pub is missing; run `flexo train-public` first")
    public_sha = sha256_file(public_weights)
    public = load_public_model(str(paths.public_model_dir))
    if r_pub is None:
        r_pub = load_router_embedding(paths.router_embedding("public"))
    checks = list(expected_sha256) if expected_sha256 is not None else [None] * len(expert_files)
    states, domains, digests = [], [], []
    for path, expected in zip(expert_files, checks, strict=False):
        state, metadata = load_coordinated_expert(path, public_sha, expected)
        states.append(state)
        domains.append(metadata["domain"])
        digests.append(expected or sha256_file(path))
    if len(set(domains)) != len(domains):
        raise IntegrityError(f"two experts for the same domain: {domains}")
    moe = merge_checked(public, r_pub, states, top_k if top_k is not None else profile.router.top_k)
    out = out_dir or paths.moe_dir
    sha = export_pretrained(moe, out, paths.tokenizer_dir if paths.tokenizer_dir.exists() else None)
    result = AssembledMoE(model_dir=out, sha256=sha, experts=["public", *domains], top_k=moe.config.num_experts_per_tok)
    manifest = {
        **asdict(result),
        "model_dir": str(out),
        "public_sha256": public_sha,
        "expert_files": [str(p) for p in expert_files],
        "expert_sha256": digests,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return result


def load_coordinated_expert(
    path: Path, public_sha: str, expected_sha256: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """An expert file's tensors and metadata (sha256-checked when `expected_sha256` is given), refused unless it was
    trained against the M_pub whose weights hash to `public_sha`."""
    state, metadata = load_expert(path, expected_sha256)
    if metadata["public_sha256"] != public_sha:
        raise IntegrityError(
            f"{path}: expert '{metadata['domain']}' was trained against M_pub {metadata['public_sha256'][:12]}…, "
            f"but the current M_pub is {public_sha[:12]}…; retrain the expert on the current public model"
        )
    return state, metadata


def merge_checked(
    public: Olmo2ForCausalLM, r_pub: torch.Tensor, states: Sequence[dict[str, torch.Tensor]], top_k: int | None
) -> FlexOlmoForCausalLM:
    """M_pub and these expert states merged into one FlexOlmo; an expert that does not fit is an IntegrityError."""
    try:
        return merge_experts(public, r_pub, states, top_k)
    except MergeError as err:
        raise IntegrityError(str(err)) from err


def read_manifest(model_dir: Path) -> dict:
    """What an assembled MoE holds (expert order, hashes)."""
    path = Path(model_dir) / MANIFEST
    if not path.exists():
        raise DataError(f"{path}: not an assembled flexo MoE (no manifest)")
    return json.loads(path.read_text())
