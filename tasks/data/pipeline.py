"""The data plane's entry points that flows and the CLI call: build a domain, check domains are disjoint, train the
tokenizer, version a domain with DVC to its owner's remote, and write data cards.

Why one module: these are the steps of docs/interfaces.md; each is a plain function (paths and hashes in and out) so
Prefect, DVC stages and the CLI all run the same code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from tasks.core.artifacts import RunPaths, repo_relative
from tasks.core.config import Profile
from tasks.core.datasets import SPLIT_HASHES, SPLIT_NAMES, SPLIT_RECORD, dataset_hash, load_split, split_hashes
from tasks.core.errors import DataError
from tasks.data.anchor import take_anchor_tokenizer
from tasks.data.ingest import ingest, staging_dir
from tasks.data.signatures import ACCEPTED_FILE, DocSignatures, accepted_sha256, load_ngram_docs, load_signatures
from tasks.data.split import fingerprint, split_domain
from tasks.data.textsig import MinHasher, exact_key, ngram_hashes, sorted_unique, unique_counts
from tasks.data.tokenizer_training import TokenizerResult
from tasks.data.tokenizer_training import train_tokenizer as _train_tokenizer
from tasks.data.validate import QUARANTINE_COLUMNS, validate
from tasks.data.versioning import VersionResult
from tasks.data.versioning import version_domain as _version_domain
from tasks.data.workers import in_process, processes_active


@dataclass(frozen=True)
class DomainBuild:
    domain: str
    ingested: int
    accepted: int
    quarantined: int
    splits: dict[str, int]
    moved_to_train: int
    validation: dict[str, Any]
    report: str
    data_hash: str


def prepare_domain(profile: Profile, domain: str, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Ingest + validate (GX) + fingerprint one domain (the steps that need no other domain); in a process of its own
    while `tasks.data.workers.domain_processes` is active (the data flow prepares two domains at once)."""
    if processes_active():
        return dict(in_process(f"prepare_domain '{domain}'", _prepare_here, profile, domain, progress=progress))
    return _prepare_here(profile, domain, progress)


def _prepare_here(profile: Profile, domain: str, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    ingested = ingest(profile, domain, progress=progress)
    result = validate(profile, domain)
    fingerprint(profile, domain)
    return {"ingested": ingested.documents, "validation": result}


def build_domain(profile: Profile, domain: str, progress: Callable[[int], None] | None = None) -> DomainBuild:
    """ingest -> validate -> split for one domain on its own; DataError if its suite fails.

    The split decontaminates against the fingerprints of the domains prepared so far, so building every domain
    this way, one after the other, makes a domain's split depend on the build order. Whole builds (the `data`
    flow, `flexo data`, `dvc repro`) therefore prepare every domain first and split afterwards."""
    prepare_domain(profile, domain, progress)
    return finish_domain(profile, domain)


def finish_domain(profile: Profile, domain: str) -> DomainBuild:
    """Split one prepared domain (its validation read back from runs/data/<d>/validation.json, written by
    `validate`)."""
    validation_json = staging_dir(profile, domain) / "validation.json"
    if not validation_json.exists():
        raise DataError(f"{validation_json}: missing; prepare domain '{domain}' first (`flexo data --domain {domain}`)")
    validation = json.loads(validation_json.read_text(encoding="utf-8"))
    if not validation["success"]:
        raise DataError(
            f"domain '{domain}' failed its validation suite; not splitting it. Report: {validation['report']}"
        )
    split = split_domain(profile, domain)
    keys = ("domain", "success", "ingested", "accepted", "quarantined", "reasons", "report")
    summary = {k: validation[k] for k in keys}
    return DomainBuild(
        domain,
        validation["ingested"],
        validation["accepted"],
        validation["quarantined"],
        split.counts,
        split.moved_to_train,
        summary,
        validation["report"],
        dataset_hash(profile, domain),
    )


@dataclass(frozen=True)
class DisjointResult:
    domains: list[str]
    exact_pairs: int
    near_pairs: int
    contaminated_eval: int
    quarantined: dict[str, int]
    moved_to_train: dict[str, int]
    report: str


def _priority(profile: Profile, a: str, b: str) -> str:
    """Which of two domains gives up a shared document: public first (the paper removes closed sources from it),
    otherwise the later domain in params.yaml."""
    if "public" in (a, b):
        return "public"
    order = list(profile.domains)
    return a if order.index(a) > order.index(b) else b


def check_disjoint(profile: Profile, repair: bool = True) -> DisjointResult:
    """Exact and near-duplicate check across all built domains, and 13-gram contamination of every val/test split by
    every other domain's train. With `repair`, shared documents are quarantined from one side (reason recorded) and
    contaminated eval documents move to their own train; without it, any finding is a DataError."""
    paths = RunPaths(profile)
    built = [d for d in profile.domains if paths.split(d, "train").exists()]
    frames = {d: {s: load_split(profile, d, s) for s in SPLIT_NAMES} for d in built}
    stores = _stores(profile, built)
    drop, exact_pairs, near_pairs = _cross_domain_duplicates(profile, built, frames, stores)
    if (exact_pairs or near_pairs) and not repair:
        raise DataError(
            f"domains are not disjoint: {exact_pairs} exact and {near_pairs} near-duplicate pairs; "
            f"run the check with repair or remove the shared documents from one source"
        )
    quarantined = {d: len(v) for d, v in drop.items() if v}
    for d, ids in drop.items():
        if ids:
            _quarantine_ids(profile, d, frames[d], ids)
    moved = _decontaminate(profile, built, frames, repair, stores)
    report = paths.data_reports_dir / "disjoint.json"
    result = DisjointResult(built, exact_pairs, near_pairs, sum(moved.values()), quarantined, moved, str(report))
    paths.data_reports_dir.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({**asdict(result), "report": repo_relative(report)}, indent=2), encoding="utf-8")
    return result


@dataclass(frozen=True)
class _Stored:
    """What validation and the fingerprint stored for one domain's accepted documents (`tasks.data.signatures`)."""

    signatures: DocSignatures
    ngrams: tuple[np.ndarray, np.ndarray] | None
    accepted: Path


def _stores(profile: Profile, built: list[str]) -> dict[str, _Stored]:
    """Each built domain's stored signatures that belong to its accepted.parquet on disk now (none for a domain
    prepared before they were stored, or whose staging files changed since: its documents are recomputed)."""
    out = {}
    for d in built:
        accepted = staging_dir(profile, d) / ACCEPTED_FILE
        if not accepted.exists():
            continue
        sha = accepted_sha256(profile, d)
        signatures = load_signatures(profile, d, sha)
        if signatures is not None:
            out[d] = _Stored(signatures, load_ngram_docs(profile, d, sha), accepted)
    return out


def _cross_domain_duplicates(
    profile: Profile,
    built: list[str],
    frames: dict[str, dict[str, pd.DataFrame]],
    stores: dict[str, _Stored] | None = None,
) -> tuple[dict[str, dict[str, str]], int, int]:
    """({domain: {id: reason}} of the documents each domain gives up, exact pairs, near pairs): documents are compared
    in params.yaml order, each against every earlier one of another domain; `_priority` picks the side that loses it.
    A document found in its domain's stored signatures (`stores`) reuses its exact key and MinHash signature."""
    hasher = MinHasher(profile.data.minhash_perms, profile.data.minhash_bands, profile.data.shingle_words, profile.seed)
    owner_of: list[tuple[str, str]] = []
    exact: dict[str, tuple[str, str]] = {}
    drop: dict[str, dict[str, str]] = {d: {} for d in built}
    exact_pairs = near_pairs = 0
    for d in built:
        stored = (stores or {}).get(d)
        for s in SPLIT_NAMES:
            for doc_id, text in zip(frames[d][s]["id"], frames[d][s]["text"], strict=True):
                row = stored.signatures.row(text) if stored else None
                key = exact_key(text) if row is None or not stored else stored.signatures.exact[row]
                hit = exact.get(key)
                if hit and hit[0] != d:
                    exact_pairs += 1
                    loser = _priority(profile, hit[0], d)
                    if loser == d:
                        drop[d][doc_id] = f"cross-domain exact duplicate of {hit[1]}"
                        continue
                    drop[hit[0]][hit[1]] = f"cross-domain exact duplicate of {doc_id}"
                    exact[key] = (d, doc_id)  # the kept copy is the one later domains are compared with
                    continue
                exact.setdefault(key, (d, doc_id))
                signature = hasher.signature(text) if row is None or not stored else stored.signatures.minhash[row]
                near = hasher.query_add_signature(signature, profile.data.near_duplicate_threshold)
                owner_of.append((d, doc_id))
                if near is not None and owner_of[near][0] != d and owner_of[near][1] not in drop[owner_of[near][0]]:
                    near_pairs += 1
                    other = owner_of[near]
                    loser = _priority(profile, other[0], d)
                    lost_id, kept_id = (other[1], doc_id) if loser == other[0] else (doc_id, other[1])
                    drop[loser][lost_id] = f"cross-domain near duplicate of {kept_id}"
    return drop, exact_pairs, near_pairs


def _decontaminate(
    profile: Profile,
    built: list[str],
    frames: dict[str, dict[str, pd.DataFrame]],
    repair: bool,
    stores: dict[str, _Stored] | None = None,
) -> dict[str, int]:
    """Move every val/test document sharing an n-gram with another domain's train into its own train (rewriting the
    splits); without `repair` the first such split is a DataError. Returns {domain: documents moved}."""
    n = profile.data.decontamination_ngram
    train_grams = {d: _train_grams(frames[d]["train"], n, (stores or {}).get(d)) for d in built}
    moved: dict[str, int] = {}
    for d in built:
        others = [train_grams[o] for o in built if o != d]
        for s in ("val", "test"):
            frame = frames[d][s]
            dirty = [i for i, t in enumerate(frame["text"]) if _held_elsewhere(others, ngram_hashes(t, n))]
            if dirty and not repair:
                raise DataError(
                    f"data/{d}/{s}.parquet: {len(dirty)} documents share {n}-grams with another domain's train"
                )
            if dirty:
                frames[d]["train"] = pd.concat([frames[d]["train"], frame.iloc[dirty]], ignore_index=True)
                frames[d][s] = frame.drop(index=frame.index[dirty]).reset_index(drop=True)
                moved[d] = moved.get(d, 0) + len(dirty)
        if moved.get(d):
            for s in SPLIT_NAMES:
                frames[d][s].to_parquet(RunPaths(profile).split(d, s), index=False)
            _update_split_json(profile, d, frames[d], moved_extra=moved[d])
    return moved


def _train_grams(train: pd.DataFrame, n: int, stored: _Stored | None) -> np.ndarray:
    """The sorted unique n-grams of a train split. From the stored fingerprint when every train document is one of
    the accepted documents it was computed from: the grams that more accepted documents hold than the accepted
    documents outside train do (those few are the only ones whose n-grams are computed); otherwise from every
    train document."""
    fast = _train_grams_from_fingerprint(train, n, stored) if stored and stored.ngrams else None
    if fast is not None:
        return fast
    empty = np.zeros(0, dtype=np.uint64)
    return sorted_unique(np.concatenate([ngram_hashes(t, n) for t in train["text"]] or [empty]))


def _train_grams_from_fingerprint(train: pd.DataFrame, n: int, stored: _Stored) -> np.ndarray | None:
    assert stored.ngrams is not None
    grams, docs = stored.ngrams
    rows = [stored.signatures.row(t) for t in train["text"]]
    if any(r is None for r in rows) or len(set(rows)) != len(rows):
        return None  # a train document that is not (once) an accepted one: the fingerprint does not describe it
    outside = sorted(set(range(len(stored.signatures.exact))) - set(rows))
    texts = pq.read_table(stored.accepted, columns=["text"]).column("text").take(outside).to_pylist()
    held = np.concatenate([ngram_hashes(t, n) for t in texts] or [np.zeros(0, dtype=np.uint64)])
    idx = np.searchsorted(grams, held)
    if held.size and (idx.max() >= grams.size or (grams[idx] != held).any()):
        return None
    at, count = unique_counts(idx)
    keep = np.ones(grams.size, dtype=bool)
    keep[at] = docs[at] > count
    return grams[keep]


def _held_elsewhere(others: list[np.ndarray], values: np.ndarray) -> bool:
    """Whether any of `values` is in one of the other domains' train n-grams (each sorted, unique): a binary search
    per eval document and domain, no sort of all domains' n-grams together."""
    if values.size == 0:
        return False
    for grams in others:
        if grams.size:
            idx = np.minimum(np.searchsorted(grams, values), grams.size - 1)
            if (grams[idx] == values).any():
                return True
    return False


def _quarantine_ids(profile: Profile, domain: str, frames: dict[str, pd.DataFrame], reasons: dict[str, str]) -> None:
    """Move documents from a domain's splits into its quarantine (reason recorded), rewriting the split files."""
    paths = RunPaths(profile)
    qpath = paths.domain_dir(domain) / "quarantine.parquet"
    quarantine = pd.read_parquet(qpath)
    moved = []
    for s in SPLIT_NAMES:
        mask = frames[s]["id"].isin(reasons)
        if mask.any():
            for rec in frames[s][mask].itertuples():
                moved.append(
                    {
                        "id": rec.id,
                        "text": rec.text,
                        "reason": reasons[rec.id],
                        "source_file": f"data/{domain}/{s}",
                        "row": -1,
                    }
                )
            frames[s] = frames[s][~mask].reset_index(drop=True)
            frames[s].to_parquet(paths.split(domain, s), index=False)
    quarantine = pd.concat([quarantine, pd.DataFrame(moved, columns=QUARANTINE_COLUMNS)], ignore_index=True)
    quarantine.to_parquet(qpath, index=False)
    _update_split_json(profile, domain, frames, cross_domain_quarantined=len(moved))


def _update_split_json(profile: Profile, domain: str, frames: dict[str, pd.DataFrame], **extra: int) -> None:
    """After the splits were rewritten: their counts and sha256 (what every later read is checked against)."""
    path = RunPaths(profile).domain_dir(domain) / SPLIT_RECORD
    info = json.loads(path.read_text(encoding="utf-8"))
    info["counts"] = {s: len(frames[s]) for s in SPLIT_NAMES}
    info[SPLIT_HASHES] = split_hashes(profile, domain)
    for key, value in extra.items():
        info[key] = info.get(key, 0) + value
    path.write_text(json.dumps(info, indent=2), encoding="utf-8")


def train_tokenizer(profile: Profile) -> TokenizerResult:
    """Byte-level BPE on the public train split only (see tasks.data.tokenizer_training); with an existing model as
    M_pub (`anchor`), nothing is trained: that model's own tokenizer is taken (tasks.data.anchor)."""
    if profile.anchor.pretrained:
        return take_anchor_tokenizer(profile)
    return _train_tokenizer(profile)


def version_domain(profile: Profile, domain: str) -> VersionResult:
    """Track data/<domain> with DVC and push it to its owner's remote only (see tasks.data.versioning)."""
    return _version_domain(profile, domain)
