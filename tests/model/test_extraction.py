"""The extraction attack on real tiny transformers models: an overfitted model is extracted, a fresh one is not."""

from __future__ import annotations

import copy

import pytest
import torch

from model.config import ModelSizes, TokenizerIds
from model.extraction import (
    Probe,
    SamplingSettings,
    extraction_attack,
    make_probes,
    memorize,
    sample_continuations,
    score_probe,
    similarity,
)
from model.public import build_public_model

SIZES = ModelSizes(vocab_size=512, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_seq_len=64)
IDS = TokenizerIds(pad_token_id=0, eos_token_id=1)
SETTINGS = SamplingSettings(
    prefix_tokens=8, window_tokens=24, samples_per_prefix=3, top_k=50, top_p=0.95, temperature=1.0, batch_prefixes=2
)


def decode(ids: list[int]) -> str:
    """One character per token id: similarity then measures token edits."""
    return "".join(chr(0x100 + i) for i in ids)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models are latency-bound; one thread avoids spin-waiting on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def docs() -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    lengths = [30, 40, 24, 35, 10]  # the last is shorter than the window
    return [torch.randint(3, SIZES.vocab_size, (n,), generator=generator).tolist() for n in lengths]


def test_similarity_is_normalised_levenshtein() -> None:
    assert similarity("abcd", "abcd") == 1.0
    assert similarity("abcd", "abce") == pytest.approx(0.75)  # 1 edit / max length 4
    assert similarity("", "abcd") == 0.0
    assert similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)


def test_probes_take_a_window_inside_each_long_enough_document(docs) -> None:
    probes, too_short = make_probes(docs, 24, seed=3)
    assert too_short == [4]
    assert [p.doc_index for p in probes] == [0, 1, 2, 3]
    for p in probes:
        assert len(p.window) == 24 and 0 <= p.offset <= len(docs[p.doc_index]) - 24
        assert list(p.window) == docs[p.doc_index][p.offset : p.offset + 24]
    assert make_probes(docs, 24, seed=3)[0] == probes  # seeded


def test_window_must_exceed_prefix() -> None:
    with pytest.raises(ValueError, match="window_tokens"):
        SamplingSettings(8, 8, 1, 50, 0.95, 1.0, 1)


def test_batched_sampling_shape_seeding_and_prefix_check() -> None:
    model = build_public_model(SIZES, IDS, seed=0)
    prefixes = torch.randint(3, SIZES.vocab_size, (5, 8), generator=torch.Generator().manual_seed(1))
    calls = []
    first = sample_continuations(model, prefixes, SETTINGS, seed=7, on_batch=calls.append)
    assert first.shape == (5, 3, 16)
    assert calls == [2, 2, 1]  # batches of `batch_prefixes` prefixes
    assert torch.equal(first, sample_continuations(model, prefixes, SETTINGS, seed=7))
    assert not torch.equal(first, sample_continuations(model, prefixes, SETTINGS, seed=8))
    assert first[:, 0].ne(first[:, 1]).any()  # samples of one prefix differ (it samples)
    with pytest.raises(ValueError, match="prefixes must have shape"):
        sample_continuations(model, prefixes[:, :4], SETTINGS, seed=7)


def test_score_counts_prefix_and_stops_at_eos() -> None:
    window = tuple(range(10, 34))
    probe = Probe(0, 0, window)
    exact = torch.tensor([list(window[8:])])
    score = score_probe(probe, exact, 8, decode, eos_token_id=1)
    assert score.best_with_prefix == 1.0 and score.best_without_prefix == 1.0
    # an early EOS: the continuation is cut there, the prefix still matches
    cut = torch.tensor([list(window[8:16]) + [1] + [0] * 7])
    score = score_probe(probe, cut, 8, decode, eos_token_id=1)
    assert score.best_without_prefix == pytest.approx(8 / 16)
    assert score.best_with_prefix == pytest.approx(16 / 24)  # the shared prefix inflates the number


def test_calibration_overfitted_model_is_extracted_fresh_model_is_not(docs) -> None:
    probes, _ = make_probes(docs, 24, seed=0)
    fresh = build_public_model(SIZES, IDS, seed=0)
    before = extraction_attack(fresh, probes, decode, SETTINGS, threshold=0.9, seed=0)
    assert before.num_docs == 4 and before.rate(True) == 0.0 and before.rate(False) == 0.0
    overfit = copy.deepcopy(fresh)
    windows = torch.tensor([p.window for p in probes])
    loss = memorize(overfit, windows, epochs=60, lr=1e-2, seed=0)
    assert loss < 0.1
    after = extraction_attack(overfit, probes, decode, SETTINGS, threshold=0.9, seed=0)
    assert after.rate(True) >= 0.75 and after.rate(False) >= 0.75
    assert after.mean_best(False) > before.mean_best(False) + 0.5
    assert not overfit.training  # left in eval mode
