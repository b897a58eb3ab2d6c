"""Router tuning's proxy data (paper §3.3.3): for each owner, the public documents most like its domain.

Why: the paper tunes the router rows on D̂_1..D̂_n and D_pub sampled uniformly, where D̂_i ⊆ D_pub holds the public
documents that owner i's classifier (D_i vs D_pub) scores highest. Tuned on public text alone, the router only learns
what helps public text, and nothing teaches it to send a domain's tokens to that domain's expert. flexo's stand-in for
the owner's classifier is the owner's router centroid: the MiniLM mean of its documents, which already left the owner as
its router row (`tasks.training.route.embed_domain`, `raw`). Public documents are ranked by cosine to it; no owner
document is read here. Every proxy document is public text, so the tuned model is still "RT on public data".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from tasks.core.config import Profile
from tasks.core.datasets import read_texts
from tasks.evaluation.inputs import router_rows

PUBLIC = "public"
log = logging.getLogger(__name__)


def select_proxies(
    texts: Sequence[str], embeddings: np.ndarray, centroids: Mapping[str, np.ndarray], per_domain: int
) -> dict[str, list[str]]:
    """Per domain, the `per_domain` texts whose embedding has the highest cosine to its centroid, best first (one text
    may serve several domains, as one public document may resemble several owners' data)."""
    if len(texts) != len(embeddings):
        raise ValueError(f"{len(texts)} texts but {len(embeddings)} embeddings")
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    chosen = {}
    for domain, centroid in centroids.items():
        similarity = unit @ (centroid / max(float(np.linalg.norm(centroid)), 1e-12))
        order = np.argsort(-similarity, kind="stable")[:per_domain]
        chosen[domain] = [texts[i] for i in order]
    return chosen


def proxy_texts(profile: Profile, domains: Sequence[str], can_encode: bool = True) -> dict[str, list[str]] | None:
    """Each domain's proxy set: `eval.rt_proxy_docs` of a seeded sample of `eval.rt_proxy_pool` public train
    documents, ranked against the domain's router centroid (the pool's embeddings as the public router step stored
    them, else encoded here). None when a router centroid is missing, or when the pool is not stored and
    `can_encode` is False (no encoder where this runs)."""
    from tasks.training.route import load_public_pool, sample_documents

    cfg = profile.eval
    centroids = router_rows(profile, domains, "raw")
    if centroids is None:
        return None
    pool = sample_documents(read_texts(profile, PUBLIC, "train"), cfg.rt_proxy_pool, profile.seed)
    embeddings = load_public_pool(profile, pool)
    if embeddings is None:
        if not can_encode:
            return None
        embeddings = _encoded(profile, pool)
    rows = {d: row.numpy() for d, row in zip(domains, torch.unbind(centroids), strict=True)}
    return select_proxies(pool, embeddings, rows, cfg.rt_proxy_docs)


def _encoded(profile: Profile, pool: list[str]) -> np.ndarray:
    """The pool encoded here, where the public router step stored no embeddings of it (an r_pub from before they were
    stored, or one computed under another pool size)."""
    from tasks.training.route import encode, load_encoder

    log.info(
        "router tuning: encoding %d public documents for the proxy sets (the public router step stored none)", len(pool)
    )
    try:
        return np.asarray(encode(pool, profile.router.embed_batch_size, profile.runtime.precision))
    finally:  # nothing later in the stage encodes: the cached encoder would ride along to the end
        load_encoder.cache_clear()
