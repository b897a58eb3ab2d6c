"""Splits: deterministic, document-level, val/test decontaminated (13-grams) against every train; cross-domain
duplicates are caught and quarantined from one side."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest

from tasks.core.datasets import dataset_hash, load_split
from tasks.core.errors import DataError
from tasks.data.pipeline import build_domain, check_disjoint, finish_domain, prepare_domain
from tasks.data.split import choose_eval, hash_order
from tasks.data.textsig import ngram_hashes, sorted_unique, unique_inverse
from tests.tasks.data_world import folder_domain, prose, with_domains, write_txt_folder


def test_hash_order_is_deterministic_and_seeded():
    ids = [f"d/{i}" for i in range(50)]
    assert hash_order(ids, 1) == hash_order(ids, 1)
    assert hash_order(ids, 1) != hash_order(ids, 2)
    # a document's place does not depend on which other documents exist
    sub = ids[::2]
    order_full = [ids[i] for i in hash_order(ids, 1) if ids[i] in set(sub)]
    assert order_full == [sub[i] for i in hash_order(sub, 1)]


def test_contaminated_eval_candidates_move_to_train():
    rng = random.Random(0)
    texts = [prose(rng, 40) for _ in range(10)]
    shared = " ".join(texts[0].split()[:20])
    texts[1] = texts[1] + " " + shared  # doc 1 shares a 20-word run (so 13-grams) with doc 0
    grams = [ngram_hashes(t, 13) for t in texts]
    order = [1, 2, 0, 3, 4, 5, 6, 7, 8, 9]  # doc 1 is the first eval candidate, doc 0 stays in train
    chosen, moved = choose_eval(grams, order, 2, np.zeros(0, dtype=np.uint64))
    # doc 1 moves to train; its refill doc 0 now shares the run with train doc 1 and moves too
    assert chosen == [2, 3] and moved == 2
    other = ngram_hashes(texts[3], 13)  # another domain holds doc 3's text: it cannot be eval here
    chosen, _ = choose_eval(grams, [3, 2, 4, 5, 6, 7, 8, 9, 0, 1], 2, np.unique(other))
    assert 3 not in chosen


def _choose_eval_by_definition(grams, order, n_eval, others):
    """The rule spelled out: re-sort every train n-gram each round (slow, plainly right)."""
    eval_pos, nxt, moved = list(order[:n_eval]), n_eval, 0
    while True:
        train = [g for i, g in enumerate(grams) if i not in set(eval_pos)]
        banned = set(np.concatenate(train + [others]).tolist())
        dirty = [i for i in eval_pos if banned & set(grams[i].tolist())]
        if not dirty:
            return eval_pos, moved
        moved += len(dirty)
        eval_pos = [i for i in eval_pos if i not in dirty]
        while len(eval_pos) < n_eval and nxt < len(order):
            eval_pos.append(order[nxt])
            nxt += 1


@pytest.mark.parametrize("seed", range(6))
def test_choose_eval_matches_its_definition_on_overlapping_documents(seed):
    """Documents drawn from a tiny vocabulary share n-grams often, so candidates move across several rounds."""
    rng = np.random.default_rng(seed)
    grams = [np.unique(rng.integers(0, 1500, size=rng.integers(1, 12)).astype(np.uint64)) for _ in range(60)]
    others = np.unique(rng.integers(0, 6000, size=30).astype(np.uint64))
    order = rng.permutation(60).tolist()
    assert choose_eval(grams, order, 8, others) == _choose_eval_by_definition(grams, order, 8, others)


def _two_domains(tmp_profile, tmp_path, overlap_text: str | None = None):
    a, b = tmp_path / "a", tmp_path / "b"
    write_txt_folder(a, 60, seed=1)
    write_txt_folder(b, 60, seed=2)
    if overlap_text:
        (a / "shared.txt").write_text(overlap_text, encoding="utf-8")
        (b / "shared.txt").write_text(overlap_text, encoding="utf-8")
    return with_domains(tmp_profile, {"public": folder_domain(a, owner="pub"), "b": folder_domain(b, owner="bee")})


def test_split_is_deterministic_document_level_and_complete(tmp_profile, tmp_path):
    p = _two_domains(tmp_profile, tmp_path)
    first = build_domain(p, "b")
    parts = {s: load_split(p, "b", s) for s in ("train", "val", "test")}
    ids = [set(f["id"]) for f in parts.values()]
    assert ids[0].isdisjoint(ids[1]) and ids[0].isdisjoint(ids[2]) and ids[1].isdisjoint(ids[2])
    assert sum(len(x) for x in ids) == first.accepted == 60
    assert len(parts["test"]) == min(p.data.test_docs, int(60 * p.data.max_eval_fraction))
    h1 = dataset_hash(p, "b")
    second = build_domain(p, "b")
    assert dataset_hash(p, "b") == h1 and second.splits == first.splits


def test_cross_domain_duplicate_is_quarantined_from_public(tmp_profile, tmp_path):
    shared = prose(random.Random(99), 80)
    p = _two_domains(tmp_profile, tmp_path, overlap_text=shared)
    for d in p.domains:
        prepare_domain(p, d)
    for d in p.domains:
        finish_domain(p, d)
    with pytest.raises(DataError, match="not disjoint"):
        check_disjoint(p, repair=False)
    result = check_disjoint(p)
    assert result.exact_pairs == 1 and result.quarantined == {"public": 1}
    q = pd.read_parquet(tmp_path / "data" / "public" / "quarantine.parquet")
    assert "cross-domain exact duplicate of b/shared.txt#0" in q["reason"].iloc[-1]
    all_public = pd.concat([load_split(p, "public", s) for s in ("train", "val", "test")])
    assert "public/shared.txt#0" not in set(all_public["id"])
    assert "b/shared.txt#0" in set(pd.concat([load_split(p, "b", s) for s in ("train", "val", "test")])["id"])
    assert check_disjoint(p, repair=False).exact_pairs == 0  # repaired
    assert json.loads((tmp_path / "reports" / "data" / "disjoint.json").read_text())["exact_pairs"] == 0


def test_eval_is_decontaminated_against_other_domains_train(tmp_profile, tmp_path):
    """Domain b's eval must not share a 13-gram with public's documents; prepared together, split avoids it."""
    p = _two_domains(tmp_profile, tmp_path)
    for d in p.domains:
        prepare_domain(p, d)
    for d in p.domains:
        finish_domain(p, d)
    n = p.data.decontamination_ngram
    public_train = np.unique(np.concatenate([ngram_hashes(t, n) for t in load_split(p, "public", "train")["text"]]))
    for s in ("val", "test"):
        for t in load_split(p, "b", s)["text"]:
            assert not np.isin(ngram_hashes(t, n), public_train).any()
    split_info = json.loads((tmp_path / "data" / "b" / "split.json").read_text())
    assert split_info["decontaminated_against"] == ["b", "public"]


@pytest.mark.parametrize("size", [0, 1, 7, 5000])
def test_sorted_unique_and_unique_inverse_equal_numpy_unique(size):
    values = np.random.default_rng(size).integers(0, max(size // 3, 1) + 1, size=size).astype(np.uint64)
    assert np.array_equal(sorted_unique(values), np.unique(values))
    unique, inverse = unique_inverse(values)
    expected_unique, expected_inverse = np.unique(values, return_inverse=True)
    assert np.array_equal(unique, expected_unique) and np.array_equal(inverse, expected_inverse.ravel())
    assert np.array_equal(unique[inverse], values)


@pytest.mark.parametrize("seed", range(4))
def test_held_elsewhere_is_membership_in_the_other_domains_train(seed):
    """Binary searches in each other domain's train n-grams answer as the plain union would."""
    from tasks.data.pipeline import _held_elsewhere

    rng = np.random.default_rng(seed)
    per_domain = [sorted_unique(rng.integers(0, 300, size=rng.integers(0, 80)).astype(np.uint64)) for _ in range(4)]
    for k in range(4):
        rest = [a for j, a in enumerate(per_domain) if j != k]
        others = set(np.concatenate(rest).tolist())
        for _ in range(50):
            values = rng.integers(0, 320, size=rng.integers(0, 6)).astype(np.uint64)
            assert _held_elsewhere(rest, values) == bool(others & set(values.tolist()))
