"""Mixed-domain documents: deterministic for a seed, built only from the given (test) frames' text, every document of
>= 2 distinct domains with its boundaries recorded; and the pieces that need no model (the scores before and after
the switch, the FLOPs count)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.scoring import Request, Scores
from tasks.core.errors import DataError
from tasks.evaluation.cost import compute_vs_experts, decoder_flops, ensemble_cost, mean_context, model_cost
from tasks.evaluation.metrics import switch_scores
from tasks.evaluation.mixed import MIXED, MIXED_TASK, SEPARATOR, build_mixed, mixed_task


def _frames() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(5)
    words = {
        "news": "minister police government court election report".split(),
        "creative": "moon heart night dream whisper silver".split(),
    }
    frames = {
        domain: pd.DataFrame(
            {
                "id": [f"{domain}-test-{i}" for i in range(12)],
                "text": [
                    " ".join(rng.choice(vocab, 30)) + ".\n\n" + " ".join(rng.choice(vocab, 40)) + "." for _ in range(12)
                ],
            }
        )
        for domain, vocab in words.items()
    }
    code = [f"def f_{i}(x):\n    return x + {i}\n\n\nprint(f_{i}(2))\n" for i in range(12)]
    frames["code"] = pd.DataFrame({"id": [f"code-test-{i}" for i in range(12)], "text": code})
    frames["math"] = pd.DataFrame(
        {"id": [f"math-test-{i}" for i in range(12)], "text": [f"What is {i}+1?\n{i + 1}" for i in range(12)]}
    )
    return frames


def _cfg(tiny_profile, **update):
    return tiny_profile.eval.model_copy(update={"mixed_docs": 20, "mixed_segment_chars": 70, **update})


def test_same_seed_same_documents_other_seed_others(tiny_profile):
    cfg = _cfg(tiny_profile)
    first, again, other = build_mixed(_frames(), cfg, 3), build_mixed(_frames(), cfg, 3), build_mixed(_frames(), cfg, 4)
    assert first == again
    assert [d.text for d in first] != [d.text for d in other]
    assert len(first) == 20


@pytest.mark.parametrize("per_doc", [2, 3])
def test_every_segment_is_test_text_at_its_recorded_place(tiny_profile, per_doc):
    frames = _frames()
    cfg = _cfg(tiny_profile, mixed_domains_per_doc=per_doc)
    texts = {d: dict(zip(f["id"], f["text"], strict=True)) for d, f in frames.items()}
    docs = build_mixed(frames, cfg, 7)
    pairs = set()
    for doc in docs:
        domains = [s.domain for s in doc.segments]
        assert len(domains) == per_doc == len(set(domains)) >= 2
        pairs.add(tuple(domains))
        for k, segment in enumerate(doc.segments):
            piece = doc.text[segment.start : segment.end]
            assert piece == texts[segment.domain][segment.source_id][segment.source_start : segment.source_end]
            assert piece.strip() == piece and 0 < len(piece) <= cfg.mixed_segment_chars
            if k:  # the previous segment, a blank line, this one: nothing else in between
                assert doc.text[doc.segments[k - 1].end : segment.start] == SEPARATOR
        assert doc.segments[0].start == 0 and doc.segments[-1].end == len(doc.text)
        assert 0 < doc.prefix_chars < doc.segments[0].end and doc.prefix_chars <= cfg.bpb_prefix_chars
        item = doc.item
        assert item.context + item.choices[0] == doc.text
        assert doc.first_segment_rest == doc.text[doc.prefix_chars : doc.segments[0].end]
    assert len(pairs) > 3  # the domains are drawn, not fixed


def test_a_paragraph_starts_at_a_paragraph(tiny_profile):
    docs = build_mixed(_frames(), _cfg(tiny_profile, mixed_docs=40), 1)
    starts = {s.source_start for d in docs for s in d.segments if s.domain == "news"}
    frames = _frames()
    texts = dict(zip(frames["news"]["id"], frames["news"]["text"], strict=True))
    for doc in docs:
        for s in doc.segments:
            if s.domain == "news" and s.source_start:
                assert texts[s.source_id][s.source_start - 2 : s.source_start] == SEPARATOR
    assert len(starts) > 1  # both paragraphs are drawn


def test_too_few_domains_and_off(tiny_profile):
    frames = {d: f for d, f in _frames().items() if d in ("news", "code")}
    with pytest.raises(DataError, match="mixed_domains_per_doc is 3"):
        build_mixed(frames, _cfg(tiny_profile, mixed_domains_per_doc=3), 1)
    assert build_mixed(_frames(), _cfg(tiny_profile, mixed_docs=0), 1) == []


def test_the_task_is_bpb_of_its_own_domain(tiny_profile):
    docs = build_mixed(_frames(), _cfg(tiny_profile), 2)
    task = mixed_task(docs)
    assert (task.spec.name, task.spec.domain, task.spec.kind) == (MIXED_TASK, MIXED, "bpb")
    assert [i.context + i.choices[0] for i in task.items] == [d.text for d in docs]
    assert task.eligible == len({(s.domain, s.source_id) for d in docs for s in d.segments})


def test_switch_scores_split_the_bits_at_the_switch():
    """Two documents: whole-document requests 0, 1 and their before-the-switch requests 2, 3."""
    index = np.array([[0, 2], [1, 3]])
    loglik = np.array([-20.0, -30.0, -5.0, -6.0]) * np.log(2)  # in bits: 20, 30 whole; 5, 6 before
    n_bytes = np.array([40, 50, 10, 12])
    scores = Scores(loglik, np.zeros(4, dtype=bool), np.zeros(4))
    out = switch_scores(index, scores, n_bytes, np.array([[0, 1], [1, 1]]))
    assert out["before switch"].value == pytest.approx(11 / 22)
    assert out["after switch"].value == pytest.approx((15 + 24) / (30 + 38))
    assert out["after switch"].replicates.tolist() == pytest.approx([39 / 68, 48 / 76])


def test_flops_count_the_active_matrices(tiny_profile):
    from model.config import ModelSizes, TokenizerIds
    from model.hosts import moe_config
    from model.public import build_public_model

    dense = build_public_model(ModelSizes.from_mapping(tiny_profile.model), TokenizerIds(0, 1), seed=0).config
    d, ff, layers, vocab = dense.hidden_size, dense.intermediate_size, dense.num_hidden_layers, dense.vocab_size
    context = 10.0
    expected = layers * (2 * 4 * d * d + 4 * d * context + 6 * d * ff) + 2 * d * vocab  # MHA: q, k, v, o are d x d
    assert decoder_flops(dense, context) == pytest.approx(expected)
    moe = moe_config(dense, 4, 2)
    assert model_cost(moe, context).per_token == pytest.approx(expected + layers * (6 * d * ff + 2 * d * 4))
    btm = ensemble_cost(dense, 5, 2, context)
    assert (btm.per_token, btm.routing) == (pytest.approx(2 * expected), pytest.approx(5 * expected))
    assert mean_context([Request((1,), (2, 3)), Request((1,), (2,))]) == pytest.approx((6 + 3) / 5)
    # an MoE training measured against the owners' 2-expert trainings: their tokens in the 2-of-2 model are 1x
    two_of_two = expected + layers * (6 * d * ff + 2 * d * 2)
    assert compute_vs_experts(moe_config(dense, 2, 2), 3 * 100, 100, 3, context) == pytest.approx(1.0)
    assert compute_vs_experts(moe, 150, 100, 3, context) == pytest.approx(
        150 * model_cost(moe, context).per_token / (300 * two_of_two)
    )
    assert moe.num_experts == 4 and moe.num_experts_per_tok == 2  # measured on a copy
