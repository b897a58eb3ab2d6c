"""The published expert: one safetensors file (FFN_i, r_i, b_i per layer, and the r_pub it was trained against).

Metadata records the domain and the sha256 of the exact M_pub weights the expert was coordinated with, so assembly can
refuse an expert trained against another public model (invariants 3 and 6).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from model.hashing import sha256_file
from model.reproducible_safetensors import save_file
from tasks.core.errors import IntegrityError

REQUIRED_METADATA = ("domain", "public_sha256")


def save_expert(
    state: dict[str, torch.Tensor], path: str | Path, domain: str, public_sha256: str, **metadata: str
) -> str:
    """Write the expert file; returns its sha256."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"domain": domain, "public_sha256": public_sha256, **{k: str(v) for k, v in metadata.items()}}
    save_file({k: v.contiguous() for k, v in state.items()}, str(out), metadata=meta)
    return sha256_file(out)


def load_expert(path: str | Path, expected_sha256: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata). With `expected_sha256`, the file is hashed first and refused on mismatch."""
    source = Path(path)
    if not source.exists():
        raise IntegrityError(f"{source}: expert file not found")
    if expected_sha256 is not None:
        actual = sha256_file(source)
        if actual != expected_sha256:
            raise IntegrityError(
                f"{source}: sha256 {actual[:12]}… does not match the recorded {expected_sha256[:12]}…; the file was "
                "changed after registration. Re-download it from the registry or retrain the expert."
            )
    with safe_open(str(source), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise IntegrityError(f"{source}: not a flexo expert file (metadata lacks {missing})")
    return tensors, metadata
