"""Stored signatures (tasks.data.signatures): the split and the cross-domain check that reuse what validation and the
fingerprint computed write byte-identical files to the ones that recompute every document, and a store that belongs
to other data is never used."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.core.datasets import load_split
from tasks.data.ingest import staging_dir
from tasks.data.pipeline import _train_grams, check_disjoint, finish_domain, prepare_domain
from tasks.data.signatures import NGRAMS_META, SIGNATURES_META, load_ngram_docs, load_signatures
from tasks.data.split import choose_eval, choose_eval_counted
from tasks.data.textsig import MinHasher, exact_key, ngram_hashes, unique_counts
from tests.tasks.data_world import folder_domain, prose, with_domains, write_txt_folder


def _world(tmp_profile, tmp_path: Path):
    """Three domains sharing an exact duplicate, a near duplicate and 20-word runs (13-grams) across and within."""
    rng = random.Random(7)
    folders = {d: tmp_path / "src" / d for d in ("public", "b", "c")}
    texts = {d: write_txt_folder(f, 60, seed=k, words=60) for k, (d, f) in enumerate(folders.items())}
    shared = prose(rng, 80)
    for d in ("public", "b"):
        (folders[d] / "shared.txt").write_text(shared, encoding="utf-8")
    words = prose(rng, 90).split()
    (folders["public"] / "near.txt").write_text(" ".join(words), encoding="utf-8")
    (folders["b"] / "near.txt").write_text(" ".join(words[:-1] + ["zebra."]), encoding="utf-8")
    for i in range(30):  # c's documents quote public's, and b's quote each other
        run = " ".join(texts["public"][i].split()[10:30])
        (folders["c"] / f"quote{i:03d}.txt").write_text(prose(rng, 30) + " " + run, encoding="utf-8")
        run = " ".join(texts["b"][i].split()[5:25])
        (folders["b"] / f"quote{i:03d}.txt").write_text(prose(rng, 30) + " " + run, encoding="utf-8")
    owners = {"public": "pub", "b": "bee", "c": "sea"}
    return with_domains(tmp_profile, {d: folder_domain(f, owner=owners[d]) for d, f in folders.items()})


def _forget(p, domain: str) -> None:
    for name in (SIGNATURES_META, NGRAMS_META):
        (staging_dir(p, domain) / name).unlink()


def _build(p, tmp_path: Path, stored: bool) -> dict[str, bytes]:
    """c split before public is prepared (so the cross-domain check has eval documents to move), then the rest and
    the check; every file the build wrote under data/ and reports/, by path."""
    for folder in ("data", "runs", "reports"):
        shutil.rmtree(tmp_path / folder, ignore_errors=True)
    order = [("prepare", "c"), ("finish", "c"), ("prepare", "public"), ("prepare", "b")]
    order += [("finish", "public"), ("finish", "b")]
    for step, d in order:
        if step == "prepare":
            prepare_domain(p, d)
            assert (load_signatures(p, d) is not None) and (load_ngram_docs(p, d) is not None)
            if not stored:
                _forget(p, d)
        else:
            finish_domain(p, d)
    result = check_disjoint(p)
    assert result.exact_pairs == 1 and result.near_pairs == 1 and result.contaminated_eval > 0
    return {
        str(f.relative_to(tmp_path)): f.read_bytes()
        for root in ("data", "reports")
        for f in sorted((tmp_path / root).rglob("*"))
        if f.is_file()
    }


def test_split_and_disjoint_from_stored_signatures_write_the_same_files(tmp_profile, tmp_path):
    p = _world(tmp_profile, tmp_path)
    plain = _build(p, tmp_path, stored=False)
    fast = _build(p, tmp_path, stored=True)
    assert sorted(fast) == sorted(plain)
    assert any(name.endswith("train.parquet") for name in fast)
    for name in plain:
        assert fast[name] == plain[name], name
    moved = json.loads(plain["reports/data/disjoint.json"])["moved_to_train"]
    assert moved.get("c")  # the check moved c's eval documents quoting public's train


def test_stored_signatures_are_what_validation_computes(tmp_profile, tmp_path):
    p = _world(tmp_profile, tmp_path)
    prepare_domain(p, "b")
    store = load_signatures(p, "b")
    assert store is not None
    accepted = pd.read_parquet(staging_dir(p, "b") / "accepted.parquet")
    hasher = MinHasher(p.data.minhash_perms, p.data.minhash_bands, p.data.shingle_words, p.seed)
    assert [store.row(t) for t in accepted["text"]] == list(range(len(accepted)))
    assert store.exact == [exact_key(t) for t in accepted["text"]]
    assert np.array_equal(store.minhash, np.stack([hasher.signature(t) for t in accepted["text"]]))
    grams, docs = load_ngram_docs(p, "b") or (None, None)
    every = np.concatenate([ngram_hashes(t, p.data.decontamination_ngram) for t in accepted["text"]])
    want_grams, want_docs = np.unique(every, return_counts=True)
    assert np.array_equal(grams, want_grams) and np.array_equal(docs, want_docs)
    assert store.row("a text no document has") is None


def test_a_store_of_other_data_is_not_used(tmp_profile, tmp_path):
    p = _world(tmp_profile, tmp_path)
    prepare_domain(p, "b")
    path = staging_dir(p, "b") / "accepted.parquet"
    frame = pd.read_parquet(path)
    frame.iloc[1:].to_parquet(path, index=False)  # the accepted documents changed after the store was written
    assert load_signatures(p, "b") is None and load_ngram_docs(p, "b") is None
    prepare_domain(p, "b")
    other = p.model_copy(update={"data": p.data.model_copy(update={"minhash_perms": p.data.minhash_perms * 2})})
    assert load_signatures(p, "b") is not None and load_signatures(other, "b") is None
    longer = p.model_copy(update={"data": p.data.model_copy(update={"decontamination_ngram": 8})})
    assert load_ngram_docs(longer, "b") is None


def test_train_grams_from_the_fingerprint_equal_every_train_document(tmp_profile, tmp_path):
    p = _world(tmp_profile, tmp_path)
    for d in ("public", "b"):
        prepare_domain(p, d)
    finish_domain(p, "b")
    from tasks.data.pipeline import _stores

    stored = _stores(p, ["b"])["b"]
    n = p.data.decontamination_ngram
    train = load_split(p, "b", "train")
    for frame in (train, train.iloc[5:], train.iloc[:0]):
        assert np.array_equal(_train_grams(frame, n, stored), _train_grams(frame, n, None))
    foreign = pd.concat([train, pd.DataFrame({"id": ["x"], "text": ["not an accepted document at all"]})])
    assert np.array_equal(_train_grams(foreign, n, stored), _train_grams(foreign, n, None))


@pytest.mark.parametrize("seed", range(6))
def test_choose_eval_counted_equals_choose_eval(seed):
    """Documents drawn from a tiny vocabulary share n-grams often, so candidates move across several rounds."""
    rng = np.random.default_rng(seed)
    grams = [np.unique(rng.integers(0, 1500, size=rng.integers(0, 12)).astype(np.uint64)) for _ in range(60)]
    others = [np.unique(rng.integers(0, 6000, size=k).astype(np.uint64)) for k in (20, 0, 15)]
    union = np.unique(np.concatenate(others))
    order = rng.permutation(60).tolist()
    fingerprint = unique_counts(np.concatenate(grams))
    counted = choose_eval_counted(grams.__getitem__, *fingerprint, order, 8, others)
    assert counted == choose_eval(grams, order, 8, union)
    assert counted is not None and counted[1] > 0
    stale = choose_eval_counted(lambda i: grams[i] + np.uint64(7000), *fingerprint, order, 8, others)
    assert stale is None
