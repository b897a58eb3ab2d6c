"""Extracted documents cached once per machine: what an adapter made of its packages (HTML, man pages, pickles,
generated items turned into documents) is kept beside the downloads and read back on the next build.

Why: at scale, turning 300+ MB of package files into documents is most of a rebuild (the technical manuals alone take
minutes of HTML parsing); downloading *and extracting* should happen once per machine. The cache key holds everything
the documents depend on: the adapter and its options, the budget and seed it was given, and the source code of every
adapter module (a changed cleaner re-extracts). The downloaded package files themselves are pinned by the source cache
(a package is fetched once; delete its folder to fetch it again), so they need no key of their own. A user's own folder
and the local standard library are not cached (`cache_extraction = False`): they can change under the same options.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.data.sources import Document, Source, SourceContext
from tasks.data.sources.fetch import cache_root

BATCH_DOCS = 2000  # documents per parquet row group: streamed both ways, never the whole corpus in memory
COLUMNS = ("id", "text", "source_file", "row", "meta", "problem")


def _code_sha() -> str:
    """sha256 of every adapter module's source (tasks/data/sources/*.py)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class ExtractedSource(Source):
    """`inner`'s documents, from the extraction cache when present, else from `inner` (and then cached)."""

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        super().__init__(inner.domain, inner.owner, inner.options, inner.context)
        self.name, self.license, self.description = inner.name, inner.license, inner.description
        self.cached_provenance: dict[str, Any] | None = None
        self.hit = False

    @property  # type: ignore[override]
    def context(self) -> SourceContext:
        """The inner adapter's budget and seed (a mix sets each part's share through this)."""
        return self.inner.context

    @context.setter
    def context(self, value: SourceContext) -> None:
        self.inner.context = value

    @property
    def path(self) -> Path:
        context = {k: v for k, v in dataclasses.asdict(self.inner.context).items() if k != "cache_dir"}
        key = json.dumps(
            {
                "adapter": self.inner.name,
                "domain": self.domain,
                "options": self.inner.options,
                "context": context,
                "code": _code_sha(),
            },
            sort_keys=True,
            default=str,
        )
        name = f"{self.inner.name}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.parquet"
        return cache_root(self.inner.context.cache_dir) / "extracted-documents" / name

    def documents(self) -> Iterator[Document]:
        path = self.path
        if path.exists() and path.with_suffix(".json").exists():
            self.hit = True
            self.cached_provenance = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            yield from _read(path)
            return
        yield from _write_through(self.inner, path)

    def origins(self) -> set[str]:
        return self.inner.origins()

    def provenance(self) -> dict[str, Any]:
        if self.cached_provenance is not None:
            return self.cached_provenance
        return self.inner.provenance()


def _read(path: Path) -> Iterator[Document]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_DOCS):
        for rec in batch.to_pylist():
            yield Document(
                rec["id"], rec["text"], rec["source_file"], rec["row"], json.loads(rec["meta"]), rec["problem"]
            )


def _write_through(inner: Source, path: Path) -> Iterator[Document]:
    """Yield `inner`'s documents and write them to `path`; the file (and its provenance beside it) appears only when
    the adapter ran to its end, so a build stopped half-way never leaves a partial cache."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("id", pa.string()),
            ("text", pa.string()),
            ("source_file", pa.string()),
            ("row", pa.int64()),
            ("meta", pa.string()),
            ("problem", pa.string()),
        ]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    rows: list[dict[str, Any]] = []
    finished = False
    try:
        with pq.ParquetWriter(part, schema) as writer:
            for doc in inner.documents():
                rows.append(
                    {
                        "id": doc.id,
                        "text": doc.text,
                        "source_file": doc.source_file,
                        "row": doc.row,
                        "meta": json.dumps(doc.meta, default=str),
                        "problem": doc.problem,
                    }
                )
                if len(rows) >= BATCH_DOCS:
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                    rows = []
                yield doc
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        finished = True
    finally:
        if finished:
            path.with_suffix(".json").write_text(json.dumps(inner.provenance(), default=str), encoding="utf-8")
            part.replace(path)
        else:
            part.unlink(missing_ok=True)
