"""Per-domain document signatures kept beside the validated data, so the split and the cross-domain check reuse what
validation and the fingerprint already computed instead of recomputing it for every document.

Why: the exact-duplicate keys and MinHash signatures (validation) and the decontamination n-grams (fingerprint) are the
expensive part of `check_disjoint` and `split_domain` at scale, and they are pure functions of a document's text. Each
store records the sha256 of the accepted.parquet it belongs to and the parameters it was computed with; a store that
does not match the data on disk now is never used (the caller recomputes), and a document is looked up by a 128-bit
hash of its text, so a document the store does not hold is recomputed too. Reusing a store therefore gives the same
results as recomputing, only faster.

Files under runs/<data>/<domain>/:
- signatures.npz + signatures.json: per accepted document, its text key, exact-duplicate key and MinHash signature.
- ngrams.npy (the fingerprint other domains decontaminate against) + ngram_docs.npy + ngrams.json: per unique n-gram,
  how many accepted documents hold it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from tasks.core.config import Profile
from tasks.core.hashing import file_sha256
from tasks.data.ingest import staging_dir

ACCEPTED_FILE = "accepted.parquet"
SIGNATURES_FILE = "signatures.npz"
SIGNATURES_META = "signatures.json"
NGRAMS_FILE = "ngrams.npy"
NGRAM_DOCS_FILE = "ngram_docs.npy"
NGRAMS_META = "ngrams.json"


def text_key(text: str) -> int:
    """A 128-bit hash of the document's exact text: how a stored signature is found again (and proven to belong)."""
    return xxhash.xxh3_128_intdigest(text.encode("utf-8", errors="surrogatepass"))


def minhash_params(profile: Profile) -> dict[str, int]:
    data = profile.data
    return {
        "perms": data.minhash_perms,
        "bands": data.minhash_bands,
        "shingle_words": data.shingle_words,
        "seed": profile.seed,
    }


def accepted_sha256(profile: Profile, domain: str) -> str:
    return file_sha256(staging_dir(profile, domain) / ACCEPTED_FILE)


@dataclass(frozen=True)
class DocSignatures:
    """One domain's accepted documents: row by text key, exact-duplicate key and MinHash signature per row."""

    rows: dict[int, int]
    exact: list[str]
    minhash: np.ndarray

    def row(self, text: str) -> int | None:
        return self.rows.get(text_key(text))


def write_signatures(
    profile: Profile, domain: str, texts: list[str], exact: list[str], minhash: np.ndarray, data_sha256: str
) -> Path:
    """Store the accepted documents' signatures (in accepted.parquet's row order); the JSON, written last, names the
    data they belong to."""
    stage = staging_dir(profile, domain)
    keys = [text_key(t) for t in texts]
    mask = (1 << 64) - 1
    hi = np.fromiter((k >> 64 for k in keys), dtype=np.uint64, count=len(keys))
    lo = np.fromiter((k & mask for k in keys), dtype=np.uint64, count=len(keys))
    exact_arr = np.asarray(exact, dtype="<U32") if exact else np.zeros(0, dtype="<U32")
    meta_path = stage / SIGNATURES_META
    meta_path.unlink(missing_ok=True)  # an interrupted write must not leave an old record naming new arrays
    with (stage / SIGNATURES_FILE).open("wb") as fh:
        np.savez(fh, key_hi=hi, key_lo=lo, exact=exact_arr, minhash=minhash.astype(np.uint64, copy=False))
    meta = {"accepted_sha256": data_sha256, "documents": len(texts), "minhash": minhash_params(profile)}
    meta_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return stage / SIGNATURES_FILE


def load_signatures(profile: Profile, domain: str, data_sha256: str | None = None) -> DocSignatures | None:
    """The domain's stored signatures, or None when there are none or they belong to other data or parameters.
    `data_sha256`: accepted.parquet's sha256 when the caller already has it."""
    stage = staging_dir(profile, domain)
    meta = _meta(stage / SIGNATURES_META)
    if meta is None or meta.get("minhash") != minhash_params(profile) or not (stage / SIGNATURES_FILE).exists():
        return None
    if not (stage / ACCEPTED_FILE).exists() or meta.get("accepted_sha256") != (
        data_sha256 or accepted_sha256(profile, domain)
    ):
        return None
    with np.load(stage / SIGNATURES_FILE, allow_pickle=False) as z:
        hi, lo, exact, minhash = z["key_hi"], z["key_lo"], z["exact"], z["minhash"]
    if not len(hi) == len(lo) == len(exact) == len(minhash) == meta.get("documents"):
        return None
    keys = [(int(h) << 64) | int(lo_) for h, lo_ in zip(hi.tolist(), lo.tolist(), strict=True)]
    return DocSignatures({k: i for i, k in enumerate(keys)}, exact.tolist(), minhash)


def write_ngrams(profile: Profile, domain: str, grams: np.ndarray, docs: np.ndarray, data_sha256: str) -> Path:
    """Store the fingerprint (sorted unique n-grams of every accepted document) and, per n-gram, how many accepted
    documents hold it."""
    stage = staging_dir(profile, domain)
    meta_path = stage / NGRAMS_META
    meta_path.unlink(missing_ok=True)
    out = stage / NGRAMS_FILE
    np.save(out, grams, allow_pickle=False)
    np.save(stage / NGRAM_DOCS_FILE, docs.astype(np.uint32, copy=False), allow_pickle=False)
    meta = {"accepted_sha256": data_sha256, "ngram": profile.data.decontamination_ngram, "grams": int(grams.size)}
    meta_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return out


def load_ngram_docs(
    profile: Profile, domain: str, data_sha256: str | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """(sorted unique n-grams of the accepted documents, documents holding each), or None when not stored for the
    accepted.parquet on disk now and this profile's n."""
    stage = staging_dir(profile, domain)
    meta = _meta(stage / NGRAMS_META)
    if meta is None or meta.get("ngram") != profile.data.decontamination_ngram:
        return None
    if not all((stage / f).exists() for f in (NGRAMS_FILE, NGRAM_DOCS_FILE, ACCEPTED_FILE)):
        return None
    if meta.get("accepted_sha256") != (data_sha256 or accepted_sha256(profile, domain)):
        return None
    grams = np.load(stage / NGRAMS_FILE, allow_pickle=False)
    docs = np.load(stage / NGRAM_DOCS_FILE, allow_pickle=False)
    if not grams.size == docs.size == meta.get("grams"):
        return None
    return grams, docs


def _meta(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
