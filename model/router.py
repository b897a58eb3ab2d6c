"""Router embeddings: the rows of every layer's router, initialised from domain embeddings.

r_i = mean over documents of the unit-norm sentence embedding (not re-normalised), as the paper's
`get_domain_embeddings`. The embedder (all-MiniLM-L6-v2) gives d_e = 384 dimensions; the model's hidden size d differs,
so every owner maps its mean through one fixed, seeded, public orthogonal map Q (d x d_e). Because Q is shared and
fixed, owners never need to see each other's data for their rows to live in the same space. For d >= d_e, Q has
orthonormal columns (angles and norms preserved exactly); for d < d_e it has orthonormal rows (an orthogonal projection
onto a d-dimensional subspace).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch


def domain_embedding(document_embeddings: np.ndarray) -> np.ndarray:
    """Mean of unit-normalised document embeddings, shape (d_e,). Rows with NaN/inf are refused, never skipped."""
    embeddings = np.asarray(document_embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"expected a non-empty (documents, dim) array, got shape {embeddings.shape}")
    if not np.isfinite(embeddings).all():
        bad = np.where(~np.isfinite(embeddings).all(axis=1))[0][:5].tolist()
        raise ValueError(f"document embeddings contain NaN/inf (first rows: {bad})")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("a document embedding has zero norm")
    return (embeddings / norms).mean(axis=0).astype(np.float32)


def orthogonal_map(embedding_dim: int, hidden_size: int, seed: int) -> torch.Tensor:
    """The shared public map Q (hidden_size x embedding_dim), from a seeded QR decomposition of a Gaussian matrix."""
    generator = torch.Generator().manual_seed(seed)
    tall, wide = max(hidden_size, embedding_dim), min(hidden_size, embedding_dim)
    gaussian = torch.randn(tall, wide, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # unique QR: deterministic across LAPACK builds
    q = q if hidden_size >= embedding_dim else q.T
    return q.to(torch.float32)


def project(embedding: np.ndarray | torch.Tensor, hidden_size: int, seed: int) -> torch.Tensor:
    """Map a d_e-dimensional domain embedding to the model's hidden size with the shared orthogonal map."""
    vector = torch.as_tensor(np.asarray(embedding), dtype=torch.float32)
    if vector.ndim != 1:
        raise ValueError(f"expected a vector, got shape {tuple(vector.shape)}")
    if vector.shape[0] == hidden_size:
        return vector.clone()  # d_e == d: no map, as in the paper (GritLM 4096 = OLMo 4096)
    return orthogonal_map(vector.shape[0], hidden_size, seed) @ vector


@torch.no_grad()
def hidden_state_embedding(
    model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """The paper's "Public" router init (Table 3): documents embedded by M_pub itself, shape (hidden_size,).

    Each document is the mean of M_pub's last hidden states over its non-pad tokens, unit-normalised; the domain row is
    the raw mean of those (as for the sentence embeddings, so norms and angles are comparable). `batches` yields
    (input_ids, attention_mask) pairs, one document per row. The paper states neither pooling nor layer; these are ours.
    """
    total: torch.Tensor | None = None
    count = 0
    model.eval()
    for input_ids, attention_mask in batches:
        hidden = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states[-1]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        if not torch.isfinite(pooled).all():
            raise ValueError("M_pub produced NaN/inf hidden states; the public model is broken")
        pooled = torch.nn.functional.normalize(pooled.double(), dim=-1)
        total = pooled.sum(dim=0) if total is None else total + pooled.sum(dim=0)
        count += pooled.shape[0]
    if total is None or count == 0:
        raise ValueError("no documents to embed")
    return (total / count).float()
