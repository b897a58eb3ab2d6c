"""FLEXMIX-small task construction: reproducible for a seed, right chance levels, gold answers really from the held-out
text, distractors from the same domain, clear errors on unusable splits; plus the metrics' bootstrap."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from model.scoring import Scores
from tasks.core.errors import DataError
from tasks.evaluation.metrics import (
    Layout,
    TaskScore,
    bootstrap_indices,
    domain_table,
    item_outcomes,
    relative_gain,
    score_model,
)
from tasks.evaluation.tasks import UNIFORM_BYTE_BPB, build_tasks, cut_at_space, task_specs, write_lm_eval_files


def _frames(rows: int = 30) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(1)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()
    prose = [" ".join(rng.choice(words, 60)) + "." for _ in range(rows)]
    code = [
        f"def f_{i}(x):\n    y = x + {i}\n    return y * 2\n\n"
        + f"value_{i} = compute(value_{i - 1})\nprint(value_{i}, flush=True)\n"
        for i in range(rows)
    ]
    qs = [(f"What is {i} plus {i + 3}?", str(2 * i + 3)) for i in range(rows)]
    return {
        "news": pd.DataFrame({"id": [f"n{i}" for i in range(rows)], "text": prose}),
        "code": pd.DataFrame({"id": [f"c{i}" for i in range(rows)], "text": code}),
        "math": pd.DataFrame(
            {
                "id": [f"m{i}" for i in range(rows)],
                "text": [f"{q}\n{a}" for q, a in qs],
                "question": [q for q, _ in qs],
                "answer": [a for _, a in qs],
            }
        ),
    }


def _by_name(tasks):
    return {t.spec.name: t for t in tasks}


def test_fixed_seed_reproducible_and_seed_matters(tiny_profile):
    cfg = tiny_profile.eval
    first, again, other = build_tasks(_frames(), cfg, 7), build_tasks(_frames(), cfg, 7), build_tasks(_frames(), cfg, 8)
    assert [t.items for t in first] == [t.items for t in again]
    assert [t.items for t in first] != [t.items for t in other]
    assert set(_by_name(first)) == {
        "news_bpb",
        "news_mc",
        "code_bpb",
        "code_mc",
        "code_em",
        "math_bpb",
        "math_mc",
        "math_em",
    }


def test_chance_levels(tiny_profile):
    cfg = tiny_profile.eval
    for domain in ("news", "code", "math"):
        for spec, _ in task_specs(domain, cfg):
            expected = {"bpb": UNIFORM_BYTE_BPB, "mc": 1 / cfg.choices, "em": 0.0}[spec.kind]
            assert spec.chance == expected
            assert spec.higher_is_better == (spec.kind != "bpb")


def test_items_come_from_the_held_out_text(tiny_profile):
    cfg = tiny_profile.eval
    frames = _frames()
    tasks = _by_name(build_tasks(frames, cfg, 3))
    news = dict(zip(frames["news"]["id"], frames["news"]["text"], strict=True))
    mc = tasks["news_mc"]
    assert len(mc.items) == min(cfg.task_items, mc.eligible)
    for item in mc.items:
        assert len(item.choices) == cfg.choices and len(set(item.choices)) == cfg.choices
        assert news[item.doc_id].startswith(item.context + item.choices[item.gold])
        for k, choice in enumerate(item.choices):
            if k != item.gold:
                assert any(choice in text for doc, text in news.items() if doc != item.doc_id)
    golds = [item.gold for item in mc.items]
    assert len(set(golds)) > 1  # the true answer is not always in the same slot
    answers = dict(zip(frames["math"]["id"], frames["math"]["answer"], strict=True))
    for item in tasks["math_em"].items:
        assert item.choices == (answers[item.doc_id],) and item.context.endswith("?\n")
    for item in tasks["math_mc"].items:
        assert item.choices[item.gold] == answers[item.doc_id]
    code = dict(zip(frames["code"]["id"], frames["code"]["text"], strict=True))
    for item in tasks["code_em"].items:
        doc, line = item.doc_id.rsplit(":L", 1)
        assert code[doc].splitlines()[int(line) - 1] == item.choices[0]
        assert (
            code[doc].find(item.context + item.choices[0]) >= 0
            and len(item.choices[0].strip()) >= cfg.code_min_line_chars
        )
    for item in tasks["news_bpb"].items:
        assert item.context + item.choices[0] == news[item.doc_id] and item.choices[0][0].isspace()


def test_unusable_splits_are_clear_errors(tiny_profile):
    cfg = tiny_profile.eval
    with pytest.raises(DataError, match="the 'news' test split: column 'text' is missing"):
        build_tasks({"news": pd.DataFrame({"id": ["a"]})}, cfg, 0)
    with pytest.raises(DataError, match="question"):
        build_tasks(
            {"math": pd.DataFrame({"id": ["a", "b"], "text": ["What is 1 plus 1?\n2", "What is 2 plus 2?\n4"]})}, cfg, 0
        )
    short = pd.DataFrame({"id": ["a", "b"], "text": ["one two three " * 20, "four five six " * 20]})
    with pytest.raises(DataError, match="distinct choices"):
        build_tasks({"news": short}, cfg, 0)


def test_lm_eval_files(tiny_profile, tmp_path):
    tasks = build_tasks(_frames(), tiny_profile.eval, 0)
    write_lm_eval_files(tasks, tmp_path)
    from lm_eval.tasks._yaml_loader import load_yaml  # lm-eval's own reader: the `!function` it names must resolve

    config = load_yaml(tmp_path / "news_mc.yaml")
    assert config["output_type"] == "multiple_choice" and config["doc_to_choice"] == "choices"
    assert config["process_results"].__name__ == "mc_results"
    rows = [json.loads(line) for line in (tmp_path / "news_mc.jsonl").read_text().splitlines()]
    assert len(rows) == len(_by_name(tasks)["news_mc"].items)
    assert set(rows[0]) == {"id", "context", "choices", "gold", "target"}


def test_cut_at_space():
    assert cut_at_space("hello world again", 8) == 5
    assert cut_at_space("abcdef", 3) == 3


def test_metrics_outcomes_and_bootstrap(tiny_profile):
    tasks = [t for t in build_tasks(_frames(), tiny_profile.eval, 0) if t.spec.name in ("news_mc", "news_bpb")]
    bpb, mc = tasks
    n_bpb, n_mc = len(bpb.items), len(mc.items) * 4
    offsets = [np.arange(n_bpb).reshape(-1, 1), n_bpb + np.arange(n_mc).reshape(-1, 4)]
    n_bytes = np.full(n_bpb + n_mc, 10)
    loglik = np.full(n_bpb + n_mc, -10 * np.log(2) * 2.0)  # 2 bits per byte everywhere
    gold = np.array([item.gold for item in mc.items])
    loglik[offsets[1][np.arange(len(gold)), gold]] = -1.0  # the gold choice always wins
    scores = Scores(loglik, np.zeros_like(loglik, dtype=bool), np.zeros_like(loglik))
    layout = Layout(offsets, n_bytes)
    values, _ = item_outcomes(mc, offsets[1], scores, n_bytes)
    assert values.tolist() == [1.0] * len(gold)
    per_task = score_model(tasks, layout, scores, bootstrap_indices(tasks, 50, 0))
    assert per_task["news_bpb"].value == pytest.approx(2.0) and per_task["news_bpb"].se == pytest.approx(0.0)
    assert per_task["news_mc"].value == 1.0
    row = domain_table(tasks, per_task, ["news"], "acc")
    assert row["average"].value == 1.0
    worse = TaskScore(3.0, np.full(50, 3.0))
    assert relative_gain(per_task["news_bpb"], worse, higher_is_better=False).value == pytest.approx(1 / 3)


def test_benchmark_data_check_names_every_unusable_split(tmp_profile):
    """The data stage's pre-flight: all problems at once, each naming its file, before any training."""
    from tasks.core.artifacts import RunPaths
    from tasks.evaluation.evaluate import check_benchmark_data

    paths = RunPaths(tmp_profile)
    frames = _frames()
    frames["reddit"] = pd.DataFrame({"id": ["r0", "r1"], "text": ["one two three " * 20, "four five six " * 20]})
    frames["math"] = frames["math"].drop(columns=["question"])
    for domain, frame in frames.items():
        paths.split(domain, "test").parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(paths.split(domain, "test"))

    counts = check_benchmark_data(tmp_profile, ["news", "code"])["tasks"]
    assert set(counts) == {
        t.spec.name
        for t in build_tasks({"news": frames["news"], "code": frames["code"]}, tmp_profile.eval, tmp_profile.seed)
    }
    assert all(n > 0 for n in counts.values())
    with pytest.raises(DataError) as error:
        check_benchmark_data(tmp_profile, ["news", "reddit", "math"])
    message = str(error.value)
    # each problem names the file where this profile keeps it (tmp_path here), not the default data/ folder
    assert f"{paths.split('reddit', 'test')}: task reddit_mc needs" in message and "max_eval_fraction" in message
    assert f"{paths.split('math', 'test')}: column 'question' is missing" in message and "news" not in message
    with pytest.raises(DataError, match="the test split of 'academic' is missing"):
        check_benchmark_data(tmp_profile, ["academic"])


def test_benchmark_data_check_builds_the_mixed_documents_from_every_domain(tmp_profile):
    """With every domain's test split the pre-flight also builds the mixed-domain documents, and names the setting
    when there are fewer domains than each document should mix."""
    from tasks.core.artifacts import RunPaths
    from tasks.evaluation.evaluate import check_benchmark_data
    from tasks.evaluation.mixed import MIXED_TASK

    paths = RunPaths(tmp_profile)
    frames = _frames()
    for domain in tmp_profile.domains:
        frame = frames[domain] if domain in frames else frames["news"].assign(id=domain + frames["news"]["id"])
        paths.split(domain, "test").parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(paths.split(domain, "test"))
    assert check_benchmark_data(tmp_profile)["tasks"][MIXED_TASK] == tmp_profile.eval.mixed_docs
    assert MIXED_TASK not in check_benchmark_data(tmp_profile, ["news", "code"])["tasks"]
    too_many = tmp_profile.eval.model_copy(update={"mixed_domains_per_doc": len(tmp_profile.domains) + 1})
    with pytest.raises(DataError, match="mixed-domain documents: eval.mixed_domains_per_doc is 9"):
        check_benchmark_data(tmp_profile.model_copy(update={"eval": too_many}))


def test_math_tasks_use_the_items_of_a_mixed_math_domain_only(tiny_profile):
    """At scale the math domain also holds manuals (prose without question/answer): the math tasks skip them."""
    frames = _frames()
    manuals = pd.DataFrame({"id": ["manual0", "manual1"], "text": ["A group is a set with an operation."] * 2})
    frames["math"] = pd.concat([frames["math"], manuals], ignore_index=True).astype(
        {"question": "string", "answer": "string"}
    )
    tasks = _by_name(build_tasks(frames, tiny_profile.eval, 7))
    used = {item.doc_id for name in ("math_mc", "math_em") for item in tasks[name].items}
    assert used and not any(doc.startswith("manual") for doc in used)
