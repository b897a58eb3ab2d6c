"""A domain made of several sources: each adapter gets its weighted share of the domain's byte budget.

Why: at scale no single package holds 10+ MB of one kind of text, so a domain is a weighted list of sources
(`domains.<d>.sources` in a profile). Shares are handed out in order and what one source cannot fill passes to the
sources after it, so a domain still reaches its target when one source is smaller than its share. Every document keeps
the adapter it came from (the `source` column), so the data card can show each source's bytes, tokens and share.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from tasks.data.sources import Document, Source, SourceContext
from tasks.data.sources.textio import budget_reached

SOURCE_COLUMN = "source"  # the document's adapter, a column of a mixed domain's splits


class MixSource(Source):
    """The documents of `parts` (adapters already built with the domain's context), one after the other."""

    name = "mix"

    def __init__(self, domain: str, owner: str, parts: list[tuple[Source, float]], context: SourceContext) -> None:
        super().__init__(domain, owner, {}, context)
        self.parts = parts
        self.yielded: dict[str, dict[str, int]] = {}
        self.license = "; ".join(dict.fromkeys(f"{p.name}: {p.license}" for p, _ in parts))
        self.description = " + ".join(f"{p.name} ({p.description})" for p, _ in parts)

    def documents(self) -> Iterator[Document]:
        remaining_bytes, remaining_docs = self.context.target_bytes, self.context.max_docs
        remaining_weight = sum(weight for _, weight in self.parts)
        for part, weight in self.parts:
            share = weight / remaining_weight
            part.context = replace(
                part.context,
                target_bytes=max(1, round(remaining_bytes * share)),
                max_docs=max(1, round(remaining_docs * share)),
            )
            stats = self.yielded.setdefault(part.name, {"documents": 0, "bytes": 0})
            stats["target_bytes"] = part.context.target_bytes
            for doc in part.documents():
                if budget_reached(stats["bytes"], stats["documents"], part.context.target_bytes, part.context.max_docs):
                    # the mix holds every part to its share, also an adapter that reads all it has (folder); checked
                    # before the next document, so an adapter that stops at its budget by itself ends on its own
                    # (and its extraction is cached) instead of being cut off after its last document
                    break
                doc.meta = {**doc.meta, SOURCE_COLUMN: part.name}
                stats["documents"] += 1
                stats["bytes"] += len(doc.text.encode("utf-8"))
                yield doc
            remaining_bytes = max(0, remaining_bytes - stats["bytes"])
            remaining_docs = max(0, remaining_docs - stats["documents"])
            remaining_weight -= weight
            if remaining_bytes == 0 or remaining_docs == 0:
                return

    def origins(self) -> set[str]:
        return set().union(*(part.origins() for part, _ in self.parts))

    def provenance(self) -> dict[str, Any]:
        return {
            **super().provenance(),
            "parts": [
                {**part.provenance(), "weight": weight, **self.yielded.get(part.name, {})}
                for part, weight in self.parts
            ],
        }
