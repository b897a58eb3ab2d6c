"""FLEXMIX-small: the registry of task specs per domain, built from each domain's held-out test split with a fixed seed.

Why a registry: tasks are defined once, here, and run through one harness (`model.scoring`); every task is a set of
lm-evaluation-harness `loglikelihood` requests, and `write_lm_eval_files` writes each as a JSONL file plus an lm-eval
task YAML, so the same items can be run through `lm-eval` where it is available.

Kinds (chance levels in `TaskSpec.chance`):
- `bpb`  bits per byte of each test document's continuation after a short prefix (lower is better; a uniform byte model
         scores 8.0);
- `mc`   multiple choice: pick the true continuation among same-domain distractors (HellaSwag-style; scored by
         log-likelihood per byte of each choice; chance 1/choices). For math: pick the true answer among other items'
         answers;
- `em`   greedy exact match: math answers from the `question`/`answer` columns, code next line; a model scores an item
         iff greedy decoding reproduces the target (chance ~0).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from tasks.core.config import EvalConfig
from tasks.core.errors import DataError

UNIFORM_BYTE_BPB = 8.0  # a model that gives every byte probability 1/256: the bpb "chance" level

Kind = Literal["bpb", "mc", "em"]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    domain: str
    kind: Kind
    description: str
    chance: float  # bpb: uniform-byte level; mc: 1/choices; em: 0
    higher_is_better: bool


@dataclass(frozen=True)
class Item:
    """One question: a context and its choices (a single choice for bpb and em); `gold` indexes the true one."""

    doc_id: str
    context: str
    choices: tuple[str, ...]
    gold: int


@dataclass
class Task:
    spec: TaskSpec
    items: list[Item]
    eligible: int  # test documents that could yield an item (items = min(eligible, eval.task_items or bpb_docs))


Builder = Callable[[pd.DataFrame, str, EvalConfig, np.random.Generator], tuple[list[Item], int]]


def task_rng(seed: int, task_name: str) -> np.random.Generator:
    """A generator per task: fixed by the profile seed and the task's name, independent of task order."""
    return np.random.default_rng([seed, zlib.crc32(task_name.encode())])


def cut_at_space(text: str, limit: int) -> int:
    """An index <= limit where text[index] is whitespace (so the continuation starts with it); `limit` when none."""
    limit = max(1, min(limit, len(text) - 1))
    index = max(text.rfind(" ", 1, limit + 1), text.rfind("\n", 1, limit + 1))
    return index if index > 0 else limit


def _texts(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    for column in ("id", "text"):
        if column not in frame.columns:
            raise DataError(f"column '{column}' is missing (columns: {list(frame.columns)})")
    return frame["id"].astype(str).tolist(), frame["text"].astype(str).tolist()


def build_bpb(frame: pd.DataFrame, domain: str, cfg: EvalConfig, rng: np.random.Generator) -> tuple[list[Item], int]:
    """Each document: a prefix of at most `bpb_prefix_chars` (and at most half the document) conditions, the rest is
    scored."""
    ids, texts = _texts(frame)
    usable = [i for i, t in enumerate(texts) if len(t.strip()) >= 2]
    chosen = rng.permutation(usable)[: cfg.bpb_docs]
    items = []
    for index in sorted(chosen.tolist()):
        text = texts[index]
        split = cut_at_space(text, min(cfg.bpb_prefix_chars, len(text) // 2))
        items.append(Item(ids[index], text[:split], (text[split:],), 0))
    return items, len(usable)


def _segments(texts: list[str], cfg: EvalConfig) -> list[tuple[int, str, str]]:
    """(doc index, context, true continuation) for docs long enough that the context is at least as long as the
    continuation."""
    out = []
    for index, text in enumerate(texts):
        if len(text) < 2 * cfg.mc_continuation_chars:
            continue
        split = cut_at_space(text, min(cfg.mc_context_chars, len(text) - cfg.mc_continuation_chars))
        rest = text[split:]
        end = cut_at_space(rest, cfg.mc_continuation_chars) if len(rest) > cfg.mc_continuation_chars else len(rest)
        continuation = rest[:end].rstrip()
        if text[:split].strip() and continuation.strip():
            out.append((index, text[:split], continuation))
    return out


def _multiple_choice(
    candidates: list[tuple[str, str, str]], pool: list[str], cfg: EvalConfig, rng: np.random.Generator, task: str
) -> list[Item]:
    """Items from (doc id, context, gold) with `choices - 1` distinct distractors drawn from `pool` (same domain)."""
    distinct = sorted(set(pool))
    if len(distinct) < cfg.choices:
        raise DataError(
            f"task {task} needs {cfg.choices} distinct choices but the test split yields only "
            f"{len(distinct)}; lower eval.choices, or add test documents (data.test_docs; a small domain's test split "
            "is capped at data.max_eval_fraction of its documents)"
        )
    items = []
    for position in rng.permutation(len(candidates))[: cfg.task_items].tolist():
        doc_id, context, gold = candidates[position]
        others = [c for c in distinct if c != gold]
        distractors = [others[i] for i in rng.choice(len(others), cfg.choices - 1, replace=False)]
        gold_at = int(rng.integers(cfg.choices))
        choices = distractors[:gold_at] + [gold] + distractors[gold_at:]
        items.append(Item(doc_id, context, tuple(choices), gold_at))
    return sorted(items, key=lambda item: item.doc_id)


def build_continuation_mc(
    frame: pd.DataFrame, domain: str, cfg: EvalConfig, rng: np.random.Generator
) -> tuple[list[Item], int]:
    ids, texts = _texts(frame)
    segments = _segments(texts, cfg)
    candidates = [(ids[i], context, cont) for i, context, cont in segments]
    return _multiple_choice(candidates, [c for _, _, c in segments], cfg, rng, f"{domain}_mc"), len(segments)


def _math_rows(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    for column in ("question", "answer"):
        if column not in frame.columns:
            raise DataError(f"column '{column}' is missing; the math tasks need question/answer")
    rows = []
    items = frame[frame["question"].notna() & frame["answer"].notna()]  # a mixed math domain also holds prose
    columns = (items["id"].astype(str), items["question"].astype(str), items["answer"].astype(str))
    for doc_id, question, answer in zip(*columns, strict=True):
        if question.strip() and answer.strip():
            rows.append((doc_id, question + "\n", answer))  # the training text is `question\nanswer`
    return rows


def build_math_mc(
    frame: pd.DataFrame, domain: str, cfg: EvalConfig, rng: np.random.Generator
) -> tuple[list[Item], int]:
    rows = _math_rows(frame)
    return _multiple_choice(rows, [a for _, _, a in rows], cfg, rng, "math_mc"), len(rows)


def build_math_em(
    frame: pd.DataFrame, domain: str, cfg: EvalConfig, rng: np.random.Generator
) -> tuple[list[Item], int]:
    rows = _math_rows(frame)
    chosen = sorted(rng.permutation(len(rows))[: cfg.task_items].tolist())
    return [Item(rows[i][0], rows[i][1], (rows[i][2],), 0) for i in chosen], len(rows)


def build_code_em(
    frame: pd.DataFrame, domain: str, cfg: EvalConfig, rng: np.random.Generator
) -> tuple[list[Item], int]:
    """One line per file segment: the code before it (whole lines, at most `code_context_chars`) is the context."""
    ids, texts = _texts(frame)
    candidates = []
    for doc_id, text in zip(ids, texts, strict=True):
        lines = text.splitlines(keepends=True)
        starts = np.cumsum([0] + [len(line) for line in lines])
        eligible = [k for k in range(1, len(lines)) if len(lines[k].strip()) >= cfg.code_min_line_chars]
        if eligible:
            candidates.append((doc_id, text, lines, starts, eligible))
    items = []
    for position in sorted(rng.permutation(len(candidates))[: cfg.task_items].tolist()):
        doc_id, text, lines, starts, eligible = candidates[position]
        k = eligible[int(rng.integers(len(eligible)))]
        begin = int(starts[k])
        first = next((int(s) for s in starts[:k] if begin - int(s) <= cfg.code_context_chars), int(starts[k - 1]))
        items.append(Item(f"{doc_id}:L{k + 1}", text[first:begin], (lines[k].rstrip("\r\n"),), 0))
    return items, len(candidates)


_BUILDERS: dict[str, Builder] = {
    "bpb": build_bpb,
    "mc": build_continuation_mc,
    "math_mc": build_math_mc,
    "math_em": build_math_em,
    "code_em": build_code_em,
}


def _bpb(domain: str) -> TaskSpec:
    description = "bits per byte of held-out text after a short prefix"
    return TaskSpec(f"{domain}_bpb", domain, "bpb", description, UNIFORM_BYTE_BPB, False)


def _mc(name: str, domain: str, description: str, cfg: EvalConfig) -> TaskSpec:
    return TaskSpec(name, domain, "mc", description, 1.0 / cfg.choices, True)


def _em(name: str, domain: str, description: str) -> TaskSpec:
    return TaskSpec(name, domain, "em", description, 0.0, True)


def task_specs(domain: str, cfg: EvalConfig) -> list[tuple[TaskSpec, str]]:
    """The registry: every domain's tasks as (spec, builder key). Every domain has a bpb and a multiple-choice task;
    math's multiple choice picks among answers and math adds exact-match answers; code adds the exact next line."""
    specs = [(_bpb(domain), "bpb")]
    if domain == "math":
        answers = "pick the true answer to a held-out question among other items' answers"
        specs.append((_mc("math_mc", "math", answers, cfg), "math_mc"))
        answer = "greedy answer to a held-out question equals the reference answer"
        specs.append((_em("math_em", "math", answer), "math_em"))
    else:
        continuation = "pick the true continuation among same-domain distractors"
        specs.append((_mc(f"{domain}_mc", domain, continuation, cfg), "mc"))
    if domain == "code":
        specs.append((_em("code_em", "code", "greedy next line of held-out code equals the true line"), "code_em"))
    return specs


def build_tasks(
    frames: dict[str, pd.DataFrame], cfg: EvalConfig, seed: int, sources: Mapping[str, str | Path] | None = None
) -> list[Task]:
    """All tasks of all given domains (test splits), reproducible for a given seed. `sources` names where each
    domain's frame came from (its test.parquet), so an error points at that file wherever `paths.data_dir` is."""
    tasks = []
    for domain, frame in frames.items():
        source = (sources or {}).get(domain, f"the '{domain}' test split")
        for spec, key in task_specs(domain, cfg):
            try:
                items, eligible = _BUILDERS[key](frame, domain, cfg, task_rng(seed, spec.name))
            except DataError as exc:
                raise DataError(f"{source}: {exc}") from exc
            if not items:
                raise DataError(
                    f"{source}: task {spec.name} found no usable test documents ({len(frame)} rows); "
                    "check the split or the eval cuts in params.yaml `eval:`"
                )
            tasks.append(Task(spec, items, eligible))
    return tasks


def write_lm_eval_files(tasks: list[Task], out_dir: Path) -> list[Path]:
    """Each task's items as `<name>.jsonl` (one row per item: id, context, choices, gold and the gold `target`) plus its
    lm-evaluation-harness task config (`tasks.evaluation.lm_eval_tasks`), so `lm-eval` scores the same items."""
    from tasks.evaluation.lm_eval_tasks import write_task_config

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for task in tasks:
        data = out_dir / f"{task.spec.name}.jsonl"
        with data.open("w", encoding="utf-8") as handle:
            for item in task.items:
                record = {
                    "id": item.doc_id,
                    "context": item.context,
                    "choices": list(item.choices),
                    "gold": item.gold,
                    "target": item.choices[item.gold],
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        written += [data, write_task_config(task, data)]
    return written
