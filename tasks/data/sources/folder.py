"""The `folder` adapter: a data owner's own domain as a folder of .txt / .jsonl / .parquet files, configured in
params.yaml only (no code).

Options (domains.<d>.source.options):
  path:        the folder (relative to the repository root, or absolute)          (required)
  txt_mode:    "file" (one document per .txt file, default) or "line" (one per line)
  text_field:  the column/key holding the text in .jsonl/.parquet (default "text")
  extra_fields: further columns copied through (e.g. ["question", "answer"])
  license, description: recorded in the data card
Whole-file defects (truncated parquet, missing columns, unreadable files) raise DataError naming the file; per-document
defects (bad bytes, NUL, empty, oversized, bad JSON) become documents with `problem` set and are quarantined.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tasks.core.config import REPO_ROOT
from tasks.core.errors import ConfigError, DataError
from tasks.data.sources import Document, Source, register
from tasks.data.sources.textio import PREVIEW_CHARS, decode_document

SUFFIXES = (".txt", ".jsonl", ".parquet")


@register("folder")
class FolderSource(Source):
    cache_extraction = False  # local files that can change under the same options: read every time
    description = "a folder of .txt/.jsonl/.parquet files supplied by the data owner"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "path" not in self.options:
            raise ConfigError(f"domains.{self.domain}.source.options.path: required for the folder adapter")
        path = Path(self.options["path"]).expanduser()
        self.root = path if path.is_absolute() else REPO_ROOT / path
        self.license = str(self.options.get("license", "as declared by the data owner"))
        self.description = str(self.options.get("description", self.description))
        self.txt_mode = self.options.get("txt_mode", "file")
        if self.txt_mode not in ("file", "line"):
            raise ConfigError(
                f"domains.{self.domain}.source.options.txt_mode: '{self.txt_mode}' is not 'file' or 'line'"
            )
        self.text_field = str(self.options.get("text_field", "text"))
        self.extra_fields = list(self.options.get("extra_fields", []))

    def origins(self) -> set[str]:
        return {f"folder:{self.root.resolve()}"}

    def files(self) -> list[Path]:
        if not self.root.is_dir():
            raise DataError(
                f"{self.root}: folder for domain '{self.domain}' does not exist; create it or fix options.path"
            )
        found = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if not found:
            raise DataError(f"{self.root}: no {'/'.join(SUFFIXES)} files for domain '{self.domain}'")
        return found

    def documents(self) -> Iterator[Document]:
        for path in self.files():
            rel = path.relative_to(self.root).as_posix()
            if path.suffix == ".parquet":
                yield from self._parquet(path, rel)
            elif path.suffix == ".jsonl":
                yield from self._jsonl(path, rel)
            elif self.txt_mode == "line":
                yield from self._lines(path, rel)
            else:
                yield self._whole(path, rel)

    def _id(self, rel: str, row: int) -> str:
        return f"{self.domain}/{rel}#{row}"

    def _whole(self, path: Path, rel: str) -> Document:
        size = path.stat().st_size
        if size == 0:
            return Document(self._id(rel, 0), "", str(path), 0, problem=f"empty file ({path} row 0)")
        with open(path, "rb") as fh:
            raw = fh.read(self.context.max_doc_bytes + 1)
        if size > self.context.max_doc_bytes:
            return Document(
                self._id(rel, 0),
                raw[:PREVIEW_CHARS].decode("utf-8", "replace"),
                str(path),
                0,
                problem=f"too large: {size} bytes > data.max_doc_bytes={self.context.max_doc_bytes} ({path} row 0)",
            )
        return decode_document(raw, self._id(rel, 0), str(path), 0, self.context.max_doc_bytes)

    def _raw_lines(self, path: Path) -> Iterator[tuple[int, bytes, int]]:
        """(row, first bytes, full length) per line, never holding an oversized line in memory."""
        limit = self.context.max_doc_bytes
        with open(path, "rb") as fh:
            row = 0
            while True:
                chunk = fh.readline(limit + 1)
                if not chunk:
                    return
                length = len(chunk)
                head = chunk
                while not chunk.endswith(b"\n") and len(chunk) == limit + 1:  # an oversized line: count the rest
                    chunk = fh.readline(limit + 1)
                    length += len(chunk)
                yield row, head if length <= limit + 1 else head[:PREVIEW_CHARS], length
                row += 1

    def _lines(self, path: Path, rel: str) -> Iterator[Document]:
        any_line = False
        for row, raw, length in self._raw_lines(path):
            any_line = True
            raw = raw.rstrip(b"\r\n")
            if length > self.context.max_doc_bytes:
                yield Document(
                    self._id(rel, row),
                    raw.decode("utf-8", "replace"),
                    str(path),
                    row,
                    problem=f"too large: line of {length} bytes > data.max_doc_bytes="
                    f"{self.context.max_doc_bytes} ({path} row {row})",
                )
            elif raw.strip():
                yield decode_document(raw, self._id(rel, row), str(path), row, self.context.max_doc_bytes)
        if not any_line:
            yield Document(self._id(rel, 0), "", str(path), 0, problem=f"empty file ({path} row 0)")

    def _jsonl(self, path: Path, rel: str) -> Iterator[Document]:
        any_line = False
        for row, raw, length in self._raw_lines(path):
            any_line = True
            if not raw.strip():
                continue
            doc = decode_document(raw.rstrip(b"\r\n"), self._id(rel, row), str(path), row, self.context.max_doc_bytes)
            if length > self.context.max_doc_bytes:
                doc.problem = (
                    f"too large: line of {length} bytes > data.max_doc_bytes={self.context.max_doc_bytes} "
                    f"({path} row {row})"
                )
            if doc.problem:
                yield doc
                continue
            try:
                record = json.loads(doc.text)
            except json.JSONDecodeError as err:
                doc.problem = f"invalid JSON: {err.msg} at column {err.colno} ({path} row {row})"
                yield doc
                continue
            if not isinstance(record, dict) or not isinstance(record.get(self.text_field), str):
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                doc.problem = f"no string field '{self.text_field}' (found {keys}) ({path} row {row})"
                yield doc
                continue
            yield Document(
                doc.id, record[self.text_field], str(path), row, meta={k: record.get(k) for k in self.extra_fields}
            )
        if not any_line:
            yield Document(self._id(rel, 0), "", str(path), 0, problem=f"empty file ({path} row 0)")

    def _parquet(self, path: Path, rel: str) -> Iterator[Document]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(
                f"{path}: not a readable parquet file ({err}); the file is truncated or corrupt, re-export it"
            ) from err
        names = pf.schema_arrow.names
        missing = [c for c in [self.text_field, *self.extra_fields] if c not in names]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {missing}; found columns {names}. Rename the text column to "
                f"'{self.text_field}' or set domains.{self.domain}.source.options.text_field"
            )
        if pf.metadata.num_rows == 0:
            yield Document(self._id(rel, 0), "", str(path), 0, problem=f"empty file ({path} row 0)")
            return
        row = 0
        try:
            for batch in pf.iter_batches(columns=[self.text_field, *self.extra_fields]):
                for record in batch.to_pylist():
                    text = record[self.text_field]
                    meta = {k: record[k] for k in self.extra_fields}
                    if not isinstance(text, str):
                        yield Document(
                            self._id(rel, row),
                            "",
                            str(path),
                            row,
                            meta=meta,
                            problem=f"'{self.text_field}' is {type(text).__name__}, not text ({path} row {row})",
                        )
                    elif len(text.encode("utf-8")) > self.context.max_doc_bytes:
                        yield Document(
                            self._id(rel, row),
                            text[:PREVIEW_CHARS],
                            str(path),
                            row,
                            meta=meta,
                            problem=f"too large: {len(text.encode('utf-8'))} bytes > data.max_doc_bytes="
                            f"{self.context.max_doc_bytes} ({path} row {row})",
                        )
                    elif "\x00" in text:
                        yield Document(
                            self._id(rel, row),
                            text.replace("\x00", "\ufffd"),
                            str(path),
                            row,
                            meta=meta,
                            problem=f"NUL byte at offset {text.index(chr(0))} ({path} row {row})",
                        )
                    else:
                        yield Document(self._id(rel, row), text, str(path), row, meta=meta)
                    row += 1
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"{path}: unreadable after row {row} ({err}); the file is truncated, re-export it") from err
