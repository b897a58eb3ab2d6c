"""The evaluation's inputs, read from the other stages' outputs: test splits (data), the tokenized FLEXMIX requests,
M_pub, the dense models and the MoE (training, registry), router embeddings (route) and packed train text for the
baselines that train a router.

Why separate from the scoring: every input failure is a DataError naming the missing file and the command that makes
it, raised before any model is scored.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import FlexOlmoForCausalLM, Olmo2ForCausalLM

from model.public import load_moe, load_public_model
from model.scoring import Request
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.datasets import load_split, read_texts
from tasks.core.errors import DataError
from tasks.evaluation.metrics import Layout
from tasks.evaluation.mixed import MixedDoc, mixed_task
from tasks.evaluation.results import dense_name
from tasks.evaluation.tasks import Task
from tasks.registry.locate import locate_moe
from tasks.training.assemble import read_manifest


class ReleasedModels(Mapping[str, Olmo2ForCausalLM]):
    """The names of models this process no longer holds: membership, iteration and truth still answer which dense
    models exist (the report and the families' skip checks need that), but reaching a model is an error naming why
    it is gone, so a family scheduled after the release cannot silently score nothing."""

    def __init__(self, names: Sequence[str], why: str) -> None:
        self._names, self._why = list(names), why

    def __getitem__(self, name: str) -> Olmo2ForCausalLM:
        raise RuntimeError(f"the model {name!r} was released ({self._why}); a family that needs it must run earlier")

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@dataclass
class Models:
    """The models the evaluation scores. `release` drops a group once no later family uses it, so the MoE families
    do not run beside every dense model (at anchor sizes 7 x 135M parameters, 3.8 GB in fp32)."""

    public: Olmo2ForCausalLM | None  # None once released
    dense: Mapping[str, Olmo2ForCausalLM]
    moe: FlexOlmoForCausalLM
    moe_dir: Path
    experts: list[str]
    skipped: dict[str, str] = field(default_factory=dict)

    def release(self, group: str, why: str) -> None:
        """Drop this object's references to `group` ("dense" or "public"); the memory is freed once nothing else
        holds the models (`model.memory.release_freed_memory` then hands it back)."""
        if group == "dense":
            self.dense = ReleasedModels(list(self.dense), why)
        elif group == "public":
            self.public = None
        else:
            raise ValueError(f"unknown model group {group!r} (dense or public)")

    def public_model(self) -> Olmo2ForCausalLM:
        """M_pub, or an error saying it was released before a family that needs it."""
        if self.public is None:
            raise RuntimeError("M_pub was released; a family that needs it must run earlier")
        return self.public


def load_test_frames(profile: Profile, domains: list[str] | None = None) -> dict[str, pd.DataFrame]:
    return {domain: load_split(profile, domain, "test") for domain in domains or profile.domains}


def held_out_split_paths(profile: Profile, domains: list[str] | None = None) -> dict[str, Path]:
    """Where each domain's test split lives, for error messages that name the file."""
    paths = RunPaths(profile)
    return {domain: paths.split(domain, "test") for domain in domains or profile.domains}


def tokenize_tasks(tasks: Sequence[Task], tokenizer, max_len: int) -> tuple[list[Request], Layout]:
    """Flat request list + layout. The context keeps at most half the window (its last tokens); the target is cut to
    fit, and its bytes are counted after the cut, so bits per byte always divide by exactly the bytes that were
    scored."""

    def encode(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    requests: list[Request] = []
    n_bytes: list[int] = []
    offsets = []
    fallback = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    for task in tasks:
        contexts = encode([item.context for item in task.items])
        width = len(task.items[0].choices)
        choices = encode([c for item in task.items for c in item.choices])
        index = np.arange(len(requests), len(requests) + width * len(task.items)).reshape(len(task.items), width)
        for row, (item, ctx) in enumerate(zip(task.items, contexts, strict=True)):
            ctx = ctx[-(max_len // 2) :] or [fallback]
            for column in range(width):
                full = choices[row * width + column]
                target = full[: max_len - len(ctx)]
                if not target:
                    raise DataError(f"task {task.spec.name}, item {item.doc_id}: choice {column} tokenizes to nothing")
                requests.append(Request(tuple(ctx), tuple(target)))
                text = item.choices[column] if len(target) == len(full) else tokenizer.decode(target)
                n_bytes.append(len(text.encode("utf-8")))
        offsets.append(index)
    return requests, Layout(offsets, np.asarray(n_bytes, dtype=np.int64))


def append_mixed(
    requests: list[Request], layout: Layout, docs: Sequence[MixedDoc], tokenizer: Any, max_len: int
) -> tuple[Task, list[Request], Layout]:
    """The mixed-domain documents as one more task after `layout`'s: per document, the whole document's request (cut
    as `tokenize_tasks` cuts) and the same request stopped at the first domain switch (its first tokens: the rest of
    the first segment). Every model is causal, so the second's log-likelihood is the first's over those tokens, and
    the difference is what the model scores after the switch."""
    task = mixed_task(list(docs))
    whole, part = tokenize_tasks([task], tokenizer, max_len)
    firsts = tokenizer([doc.first_segment_rest for doc in docs], add_special_tokens=False)["input_ids"]
    before, before_bytes = [], []
    for request, first in zip(whole, firsts, strict=True):
        shared = next((i for i, (a, b) in enumerate(zip(request.target, first, strict=False)) if a != b), None)
        cut = max(1, min(len(request.target), len(first)) if shared is None else shared)
        before.append(Request(request.context, request.target[:cut]))
        before_bytes.append(len(tokenizer.decode(list(request.target[:cut])).encode("utf-8")))
    start = len(requests)
    count = len(docs)
    index = np.stack([np.arange(start, start + count), np.arange(start + count, start + 2 * count)], axis=1)
    n_bytes = np.concatenate([layout.n_bytes, part.n_bytes, np.minimum(before_bytes, part.n_bytes)])
    return task, [*requests, *whole, *before], Layout([*layout.offsets, index], n_bytes.astype(np.int64))


def load_models(profile: Profile, device: torch.device, moe_dir: Path | None = None) -> Models:
    """M_pub, the MoE (`moe_dir`, else the registry's serving one or the run directory's: `locate_moe`) and the dense
    models that exist."""
    paths = RunPaths(profile)
    if not (paths.public_model_dir / "config.json").exists():
        raise DataError(f"{paths.public_model_dir}: M_pub is missing; run `flexo train-public` first")
    public = load_public_model(str(paths.public_model_dir)).to(device).eval()
    moe_dir = moe_dir or locate_moe(profile)
    experts = list(read_manifest(moe_dir)["experts"])
    moe = load_moe(str(moe_dir)).to(device)
    dense, skipped = {}, {}
    for domain in profile.closed_domains:
        directory = paths.dense_dir(domain) / "model"
        if (directory / "config.json").exists():
            dense[domain] = load_public_model(str(directory)).to(device).eval()
        else:
            skipped[dense_name(domain)] = f"{directory} not found (dense training not run for {domain})"
    return Models(public, dense, moe, moe_dir, experts, skipped)


def router_rows(profile: Profile, domains: Sequence[str], key: str) -> torch.Tensor | None:
    """Stacked router embeddings (`projected` rows or `raw` sentence-space centroids); None when any is missing."""
    from safetensors.torch import load_file

    paths = RunPaths(profile)
    files = [paths.router_embedding(d) for d in domains]
    if not all(f.exists() for f in files):
        return None
    return torch.stack([load_file(str(f))[key] for f in files]).float()


def token_batches(
    profile: Profile,
    tokenizer,
    domains: Sequence[str],
    steps: int,
    seed: int,
    extra: Mapping[str, Sequence[str]] | None = None,
) -> Iterator[torch.Tensor]:
    """`steps` batches (train_expert.batch_size x seq_len) of packed text, sources interleaved equally: each domain's
    train split, then each `extra` set of documents (e.g. router tuning's proxy sets, `tasks.evaluation.proxy`)."""
    cfg = profile.train_expert
    sources = [(str(RunPaths(profile).split(d, "train")), read_texts(profile, d, "train")) for d in domains]
    sources += [(f"{name} (router tuning's proxy documents)", list(texts)) for name, texts in (extra or {}).items()]
    need = steps * cfg.batch_size * cfg.seq_len
    rng = np.random.default_rng(seed)
    per_source = []
    for where, texts in sources:
        ids: list[int] = []
        for index in rng.permutation(len(texts)).tolist():
            ids += tokenizer(texts[index], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            if len(ids) >= need // len(sources) + cfg.seq_len:
                break
        chunks = len(ids) // cfg.seq_len
        if chunks == 0:
            raise DataError(f"{where}: too little text for one sequence of {cfg.seq_len} tokens")
        per_source.append(torch.tensor(ids[: chunks * cfg.seq_len]).view(chunks, cfg.seq_len))
    pool = torch.cat(per_source)
    order = torch.from_numpy(rng.permutation(len(pool)))
    for step in range(steps):
        picks = order[(torch.arange(cfg.batch_size) + step * cfg.batch_size) % len(pool)]
        yield pool[picks]
