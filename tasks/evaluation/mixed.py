"""Mixed-domain documents: held-out documents that switch domain inside the document (a news story, then a math
question; prose, then code), built from paragraphs of several domains' test splits.

Why: FlexOlmo's claim rests on routing per token, so one document may use one expert for its prose and another for
its code; BTM, the weighted soup and prompt routing choose their models once per sequence, from the prefix.
Single-domain documents cannot tell the two apart; these can. Pure (frames and a seed in, documents out) and
deterministic: every document records where each of its segments came from (domain, test document, character span)
and where it sits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.core.config import EvalConfig
from tasks.core.errors import DataError
from tasks.evaluation.tasks import UNIFORM_BYTE_BPB, Item, Task, TaskSpec, cut_at_space, task_rng

MIXED = "mixed"  # the mixed task's `TaskSpec.domain`: no profile domain, so no per-domain table picks it up
MIXED_TASK = "mixed_bpb"
SEPARATOR = "\n\n"  # segments are paragraphs of one document


@dataclass(frozen=True)
class Segment:
    """One domain's paragraph: `text[start:end]` of the mixed document is `source_text[source_start:source_end]` of
    test document `source_id` of `domain`."""

    domain: str
    source_id: str
    source_start: int
    source_end: int
    start: int
    end: int


@dataclass(frozen=True)
class MixedDoc:
    """A document of >= 2 domains' segments, in order; the first `prefix_chars` characters condition (the routing
    baselines see only them), the rest is scored."""

    doc_id: str
    text: str
    segments: tuple[Segment, ...]
    prefix_chars: int

    @property
    def item(self) -> Item:
        return Item(self.doc_id, self.text[: self.prefix_chars], (self.text[self.prefix_chars :],), 0)

    @property
    def first_segment_rest(self) -> str:
        """The scored text before the first domain switch: the rest of the first segment after the prefix."""
        return self.text[self.prefix_chars : self.segments[0].end]


def _paragraph(text: str, rng: np.random.Generator, limit: int) -> tuple[int, int]:
    """(start, end) of at most `limit` characters of `text`, starting at a paragraph start (the document's first
    character or one after a blank line) and ending at whitespace, with no whitespace at either end."""
    starts = [s for s in [0] + [m.end() for m in re.finditer(SEPARATOR, text)] if text[s:].strip()]
    start = starts[int(rng.integers(len(starts)))]
    start += len(text[start:]) - len(text[start:].lstrip())
    rest = text[start:]
    end = start + (cut_at_space(rest, limit) if len(rest) > limit else len(rest))
    end = start + len(text[start:end].rstrip())
    return start, end


def _usable(frame: pd.DataFrame, domain: str) -> tuple[list[str], list[str]]:
    for column in ("id", "text"):
        if column not in frame.columns:
            raise DataError(f"the '{domain}' test split has no column '{column}' (columns: {list(frame.columns)})")
    pairs = [(str(i), str(t)) for i, t in zip(frame["id"], frame["text"], strict=True) if len(str(t).strip()) >= 2]
    if not pairs:
        raise DataError(f"the '{domain}' test split has no document to take a mixed-document paragraph from")
    return [i for i, _ in pairs], [t for _, t in pairs]


def build_mixed(frames: Mapping[str, pd.DataFrame], cfg: EvalConfig, seed: int) -> list[MixedDoc]:
    """`cfg.mixed_docs` documents, each of `cfg.mixed_domains_per_doc` distinct domains' test paragraphs (at most
    `cfg.mixed_segment_chars` each) joined by blank lines. The prefix is at most `cfg.bpb_prefix_chars` and at most
    half the first segment, as for a bpb document. Same frames and seed, same documents."""
    domains = sorted(frames)
    per_doc = cfg.mixed_domains_per_doc
    if cfg.mixed_docs and len(domains) < per_doc:
        raise DataError(
            f"eval.mixed_domains_per_doc is {per_doc} but only {len(domains)} domains have a test split; lower it"
        )
    pools = {d: _usable(frames[d], d) for d in domains} if cfg.mixed_docs else {}
    rng = task_rng(seed, MIXED_TASK)
    docs = []
    for number in range(cfg.mixed_docs):
        chosen = [domains[i] for i in rng.permutation(len(domains))[:per_doc]]
        pieces: list[str] = []
        segments = []
        for domain in chosen:
            ids, texts = pools[domain]
            pick = int(rng.integers(len(ids)))
            source_start, source_end = _paragraph(texts[pick], rng, cfg.mixed_segment_chars)
            start = sum(len(p) for p in pieces) + len(SEPARATOR) * len(pieces)
            pieces.append(texts[pick][source_start:source_end])
            segments.append(Segment(domain, ids[pick], source_start, source_end, start, start + len(pieces[-1])))
        first = pieces[0]
        prefix = cut_at_space(first, min(cfg.bpb_prefix_chars, len(first) // 2))
        doc_id = f"mixed-{number}:" + "+".join(f"{s.domain}/{s.source_id}" for s in segments)
        docs.append(MixedDoc(doc_id, SEPARATOR.join(pieces), tuple(segments), prefix))
    return docs


def mixed_task(docs: list[MixedDoc]) -> Task:
    """The documents as one bits-per-byte task (scored like `<domain>_bpb`, reported in a table of its own); its
    `eligible` counts the distinct test documents the paragraphs came from."""
    description = "bits per byte of held-out documents that switch domain inside the document"
    spec = TaskSpec(MIXED_TASK, MIXED, "bpb", description, UNIFORM_BYTE_BPB, False)
    sources = {(s.domain, s.source_id) for doc in docs for s in doc.segments}
    return Task(spec, [doc.item for doc in docs], len(sources))


def with_mixed(tasks: list[Task], docs: list[MixedDoc]) -> list[Task]:
    """The FLEXMIX tasks, then the mixed-document task where documents were built: what `evaluate` scores, in its
    order, and what it writes for lm-eval (`flexmix_mixed_bpb` scores the whole documents)."""
    return [*tasks, mixed_task(docs)] if docs else list(tasks)
