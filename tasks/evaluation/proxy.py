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
from dataclasses import dataclass

import numpy as np
import torch

from tasks.core.config import Profile
from tasks.core.datasets import read_texts
from tasks.evaluation.inputs import router_rows

PUBLIC = "public"
log = logging.getLogger(__name__)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def _ranked(unit_embeddings: np.ndarray, centroid: np.ndarray, per_domain: int) -> np.ndarray:
    """Indices of the `per_domain` rows with the highest cosine to `centroid`, best first (ties: pool order)."""
    return np.argsort(-(unit_embeddings @ _unit(centroid)), kind="stable")[:per_domain]


def select_proxies(
    texts: Sequence[str], embeddings: np.ndarray, centroids: Mapping[str, np.ndarray], per_domain: int
) -> dict[str, list[str]]:
    """Per domain, the `per_domain` texts whose embedding has the highest cosine to its centroid, best first (one text
    may serve several domains, as one public document may resemble several owners' data)."""
    if len(texts) != len(embeddings):
        raise ValueError(f"{len(texts)} texts but {len(embeddings)} embeddings")
    unit = _unit(embeddings)
    return {domain: [texts[i] for i in _ranked(unit, c, per_domain)] for domain, c in centroids.items()}


def in_domain_shares(
    embeddings: np.ndarray, centroids: Mapping[str, np.ndarray], public_centroid: np.ndarray, per_domain: int
) -> dict[str, float]:
    """Per domain, the share of its proxy set (`select_proxies`' choice) whose nearest centroid, public's included,
    is the domain's own: the owner's centroid calling the document in-domain, where the paper's owner classifier
    would. Why: a proxy set is only the pool's documents *nearest* the owner; where the pool holds little of the
    domain they are still nearer the public mix, and router tuning on them has nothing that teaches it to route the
    domain to its expert."""
    unit = _unit(embeddings)
    names, nearest = nearest_centroid(embeddings, centroids, public_centroid)
    return {
        domain: float(np.mean(nearest[_ranked(unit, centroid, per_domain)] == names.index(domain)))
        for domain, centroid in centroids.items()
    }


def nearest_centroid(
    embeddings: np.ndarray, centroids: Mapping[str, np.ndarray], public_centroid: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """(names: the domains, then public; per embedding, the index in names of its nearest centroid by cosine)."""
    nearest = np.argmax(_unit(embeddings) @ _unit(np.stack([*centroids.values(), public_centroid])).T, axis=1)
    return [*centroids, PUBLIC], nearest


@dataclass(frozen=True)
class ProxySets:
    """Router tuning's proxy sets (domain -> public documents, best first) and how in-domain each one is."""

    texts: dict[str, list[str]]
    in_domain: dict[str, float]  # `in_domain_shares`


def proxy_texts(profile: Profile, domains: Sequence[str], can_encode: bool = True) -> ProxySets | None:
    """Each domain's proxy set: `eval.rt_proxy_docs` of a seeded sample of `eval.rt_proxy_pool` public train
    documents, ranked against the domain's router centroid (the pool's embeddings as the public router step stored
    them, else encoded here), with its in-domain share. None when a router centroid (public's included) is missing,
    or when the pool is not stored and `can_encode` is False (no encoder where this runs)."""
    from tasks.training.route import load_public_pool, sample_documents

    cfg = profile.eval
    centroids = router_rows(profile, [PUBLIC, *domains], "raw")
    if centroids is None:
        return None
    pool = sample_documents(read_texts(profile, PUBLIC, "train"), cfg.rt_proxy_pool, profile.seed)
    embeddings = load_public_pool(profile, pool)
    if embeddings is None:
        if not can_encode:
            return None
        embeddings = _encoded(profile, pool)
    public, *owners = (row.numpy() for row in torch.unbind(centroids))
    rows = dict(zip(domains, owners, strict=True))
    return ProxySets(
        select_proxies(pool, embeddings, rows, cfg.rt_proxy_docs),
        in_domain_shares(embeddings, rows, public, cfg.rt_proxy_docs),
    )


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
