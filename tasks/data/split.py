"""Split: deterministic document-level train/val/test per domain, with val/test decontaminated against every train.

Why: evaluation numbers mean something only if no eval document shares a 13-gram run with text a model trained on.
Eval candidates are drawn in a seeded hash order; any candidate that shares a `data.decontamination_ngram`-gram with
its own domain's train split or with any other domain's accepted documents (a superset of their train splits, so the
check does not depend on build order) moves to train and the next candidate is tried. Nothing is dropped.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xxhash

from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.datasets import SPLIT_HASHES, split_hashes
from tasks.core.errors import DataError
from tasks.core.hashing import file_sha256
from tasks.data.ingest import staging_dir
from tasks.data.signatures import load_ngram_docs, write_ngrams
from tasks.data.textsig import ngram_hashes, sorted_unique, unique_counts, unique_inverse

SPLITS = ("train", "val", "test")
MAX_ROUNDS = 50  # refill rounds; each round moves every contaminated candidate at once


@dataclass(frozen=True)
class SplitResult:
    domain: str
    counts: dict[str, int]
    moved_to_train: int
    checked_against: list[str]
    files: dict[str, str]


def eval_sizes(profile: Profile, n: int) -> tuple[int, int]:
    """(val, test) sizes: the profile's counts, capped at `data.max_eval_fraction` of a small domain (at least 1)."""
    cap = max(1, int(n * profile.data.max_eval_fraction))
    return min(profile.data.val_docs, cap), min(profile.data.test_docs, cap)


def hash_order(ids: list[str], seed: int) -> list[int]:
    """Positions of `ids` sorted by a seeded hash: deterministic, independent of input order and of other documents."""
    keys = [xxhash.xxh3_64_intdigest(f"{seed}:{i}".encode()) for i in ids]
    return sorted(range(len(ids)), key=lambda k: (keys[k], ids[k]))


def fingerprint(profile: Profile, domain: str) -> Path:
    """runs/data/<d>/ngrams.npy: unique n-gram hashes of every accepted document (other domains decontaminate
    against it), with ngram_docs.npy: how many accepted documents hold each (the split needs no per-document n-grams
    then: see `choose_eval_counted`). Nothing to do when both are stored for this accepted.parquet already."""
    stage = staging_dir(profile, domain)
    accepted_path = stage / "accepted.parquet"
    if load_ngram_docs(profile, domain) is not None:
        return stage / "ngrams.npy"
    accepted = pd.read_parquet(accepted_path, columns=["text"])
    n = profile.data.decontamination_ngram
    grams = [ngram_hashes(t, n) for t in accepted["text"]]
    del accepted
    joined = np.concatenate(grams) if grams else np.zeros(0, dtype=np.uint64)
    del grams  # the per-document arrays go before the sort (hundreds of MB at scale)
    union, docs = unique_counts(joined)
    del joined
    return write_ngrams(profile, domain, union, docs, file_sha256(accepted_path))


def other_fingerprints(profile: Profile, domain: str) -> tuple[np.ndarray, list[str]]:
    """The union of every other domain's fingerprint that exists, and which domains those were."""
    arrays, names = [], []
    for other in profile.domains:
        path = staging_dir(profile, other) / "ngrams.npy"
        if other != domain and path.exists():
            arrays.append(np.load(path, allow_pickle=False))
            names.append(other)
    return (sorted_unique(np.concatenate(arrays)) if arrays else np.zeros(0, dtype=np.uint64)), names


def _choose_from_fingerprint(
    profile: Profile, domain: str, accepted: pd.DataFrame, order: list[int], n_eval: int
) -> tuple[tuple[list[int], int], list[str]] | None:
    """`choose_eval_counted` on the domain's stored fingerprint, with the other domains' fingerprints memory-mapped
    (only the pages a candidate's n-grams land on are read); None when the fingerprint is not this data's."""
    stored = load_ngram_docs(profile, domain)
    if stored is None:
        return None
    arrays, names = [], []
    for other in profile.domains:
        path = staging_dir(profile, other) / "ngrams.npy"
        if other != domain and path.exists():
            arrays.append(np.load(path, mmap_mode="r", allow_pickle=False))
            names.append(other)
    n, texts = profile.data.decontamination_ngram, accepted["text"]
    chosen = choose_eval_counted(lambda i: ngram_hashes(texts.iat[i], n), *stored, order, n_eval, arrays)
    return None if chosen is None else (chosen, names)


def _hits(sorted_unique: np.ndarray, values: np.ndarray) -> bool:
    """Whether any of `values` occurs in the sorted, unique array (binary search, no re-sorting)."""
    if sorted_unique.size == 0 or values.size == 0:
        return False
    idx = np.minimum(np.searchsorted(sorted_unique, values), sorted_unique.size - 1)
    return bool((sorted_unique[idx] == values).any())


def choose_eval(
    doc_grams: list[np.ndarray], order: list[int], n_eval: int, others: np.ndarray
) -> tuple[list[int], int]:
    """Pick up to `n_eval` clean eval positions in `order`; returns (positions, how many candidates moved to train).

    A candidate is dirty when one of its n-grams is in `others` (sorted, unique) or in a document of the domain that is
    not an eval candidate (train). Each document's n-grams are unique, so "some train document holds gram g" is
    "more documents hold g than eval candidates do": one sort of all the domain's n-grams up front, then every refill
    round is a few vectorised counts (a 300 MB domain would otherwise re-sort its whole train set every round)."""
    sizes = np.fromiter((g.size for g in doc_grams), dtype=np.int64, count=len(doc_grams))
    pair_doc = np.repeat(np.arange(len(doc_grams), dtype=np.int64), sizes)
    grams = np.concatenate(doc_grams) if doc_grams else np.zeros(0, dtype=np.uint64)
    unique, gram_of_pair = unique_inverse(grams)
    docs_with_gram = np.bincount(gram_of_pair, minlength=unique.size)
    in_others = _members(others, unique)
    eval_pos = list(order[:n_eval])
    next_candidate, moved = n_eval, 0
    for _ in range(MAX_ROUNDS):
        is_eval = np.zeros(len(doc_grams), dtype=bool)
        is_eval[eval_pos] = True
        eval_pair = is_eval[pair_doc]
        in_train = docs_with_gram > np.bincount(gram_of_pair[eval_pair], minlength=unique.size)
        banned_pair = (in_others | in_train)[gram_of_pair]
        dirty_docs = set(pair_doc[eval_pair & banned_pair].tolist())
        if not dirty_docs:
            return eval_pos, moved
        moved += len(dirty_docs)
        eval_pos, next_candidate = _refill(eval_pos, dirty_docs, order, next_candidate, n_eval)
    raise DataError(f"decontamination did not settle in {MAX_ROUNDS} rounds; lower val_docs/test_docs")


def _refill(
    eval_pos: list[int], dirty_docs: set[int], order: list[int], next_candidate: int, n_eval: int
) -> tuple[list[int], int]:
    """One refill round of the eval choice: drop the dirty candidates, take the next ones in `order` until `n_eval`
    are held again (or `order` runs out); returns the candidates and where the next refill starts."""
    eval_pos = [i for i in eval_pos if i not in dirty_docs]
    while len(eval_pos) < n_eval and next_candidate < len(order):
        eval_pos.append(order[next_candidate])
        next_candidate += 1
    return eval_pos, next_candidate


def choose_eval_counted(
    grams_of: Callable[[int], np.ndarray],
    grams: np.ndarray,
    docs_with_gram: np.ndarray,
    order: list[int],
    n_eval: int,
    others: list[np.ndarray],
) -> tuple[list[int], int] | None:
    """`choose_eval` from the domain's fingerprint instead of every document's n-grams: `grams` (sorted unique n-grams
    of all the domain's documents) with `docs_with_gram` (how many documents hold each), `grams_of(i)` the n-grams of
    document i (asked only for eval candidates), `others` the other domains' fingerprints (each sorted, unique). The
    same rule, so the same result: a gram is in train when more documents hold it than eval candidates do. None when
    a candidate holds a gram the fingerprint lacks (other data: the caller falls back to `choose_eval`)."""
    seen: dict[int, tuple[np.ndarray, bool]] = {}

    def lookup(i: int) -> tuple[np.ndarray, bool] | None:
        if i not in seen:
            values = grams_of(i)
            idx = np.searchsorted(grams, values)
            if values.size and (idx.max() >= grams.size or (grams[idx] != values).any()):
                return None
            seen[i] = idx, any(_members(o, values).any() for o in others)
        return seen[i]

    eval_pos = list(order[:n_eval])
    next_candidate, moved = n_eval, 0
    for _ in range(MAX_ROUNDS):
        found = [lookup(i) for i in eval_pos]
        if any(f is None for f in found):
            return None
        held = [f for f in found if f is not None]
        eval_grams, eval_count = unique_counts(np.concatenate([h[0] for h in held] or [np.zeros(0, dtype=np.int64)]))
        in_train = eval_grams[docs_with_gram[eval_grams] > eval_count]
        dirty_docs = {
            i for i, (idx, other) in zip(eval_pos, held, strict=True) if other or _members(in_train, idx).any()
        }
        if not dirty_docs:
            return eval_pos, moved
        moved += len(dirty_docs)
        eval_pos, next_candidate = _refill(eval_pos, dirty_docs, order, next_candidate, n_eval)
    raise DataError(f"decontamination did not settle in {MAX_ROUNDS} rounds; lower val_docs/test_docs")


def _members(sorted_unique: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per value, whether it occurs in the sorted, unique array (binary search)."""
    if sorted_unique.size == 0 or values.size == 0:
        return np.zeros(values.size, dtype=bool)
    idx = np.minimum(np.searchsorted(sorted_unique, values), sorted_unique.size - 1)
    return sorted_unique[idx] == values


def split_domain(profile: Profile, domain: str) -> SplitResult:
    """Write data/<d>/{train,val,test}.parquet (+ quarantine.parquet and split.json) from the accepted documents."""
    stage = staging_dir(profile, domain)
    accepted_path = stage / "accepted.parquet"
    if not accepted_path.exists():
        raise DataError(f"{accepted_path}: missing; validate domain '{domain}' first (`flexo data --domain {domain}`)")
    accepted = pd.read_parquet(accepted_path)
    n_val, n_test = eval_sizes(profile, len(accepted))
    if len(accepted) < n_val + n_test + 1:
        raise DataError(
            f"domain '{domain}': {len(accepted)} accepted documents are too few for val={n_val} + test={n_test}"
        )
    n = profile.data.decontamination_ngram
    order = hash_order(accepted["id"].tolist(), profile.seed)
    chosen_eval = _choose_from_fingerprint(profile, domain, accepted, order, n_val + n_test)
    if chosen_eval is None:  # no fingerprint of this accepted.parquet: every document's n-grams
        doc_grams = [ngram_hashes(t, n) for t in accepted["text"]]
        others, checked = other_fingerprints(profile, domain)
        chosen_eval = choose_eval(doc_grams, order, n_val + n_test, others), checked
    (eval_pos, moved), checked = chosen_eval
    rank = {position: k for k, position in enumerate(order)}
    eval_pos = sorted(eval_pos, key=rank.__getitem__)
    test_pos, val_pos = eval_pos[:n_test], eval_pos[n_test:]
    chosen = set(eval_pos)
    parts = {"train": [i for i in order if i not in chosen], "val": val_pos, "test": test_pos}
    out = RunPaths(profile).domain_dir(domain)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, pos in parts.items():
        path = RunPaths(profile).split(domain, name)
        accepted.iloc[pos].reset_index(drop=True).to_parquet(path, index=False)
        files[name] = str(path)
    shutil.copyfile(stage / "quarantine.parquet", out / "quarantine.parquet")
    counts = {name: len(pos) for name, pos in parts.items()}
    result = SplitResult(domain, counts, moved, checked, files)
    (out / "split.json").write_text(
        json.dumps(
            {
                "domain": domain,
                "counts": counts,
                "moved_to_train": moved,
                "decontaminated_against": [domain, *checked],
                "ngram": n,
                "seed": profile.seed,
                SPLIT_HASHES: split_hashes(profile, domain),  # every read is checked against these
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return result
