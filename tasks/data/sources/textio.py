"""Turning bytes into text for a document, with the problem named instead of raised or hidden.

Why: one bad file must not sink a domain, and nothing may be silently dropped: a document whose bytes are not clean
UTF-8, hold NUL bytes or are too long still becomes a `Document`, with `problem` saying what and where; validation
quarantines it. With `data.on_bad_input: error` the ingest raises a DataError with the same message instead.
"""

from __future__ import annotations

from tasks.data.sources import Document

PREVIEW_CHARS = 200  # how much of an oversized document is kept for the quarantine record (the rest is counted)


def decode_document(raw: bytes, doc_id: str, source_file: str, row: int, max_bytes: int) -> Document:
    """A Document from raw bytes; `problem` names the file, row and byte offset when they are not usable text."""
    where = f"{source_file} row {row}"
    if len(raw) > max_bytes:
        preview = raw[:PREVIEW_CHARS].decode("utf-8", errors="replace")
        return Document(
            doc_id,
            preview,
            source_file,
            row,
            problem=f"too large: {len(raw)} bytes > data.max_doc_bytes={max_bytes} ({where})",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Document(
            doc_id,
            raw.decode("utf-8", errors="replace"),
            source_file,
            row,
            problem=f"not UTF-8: invalid byte 0x{raw[err.start]:02x} at offset {err.start} ({where})",
        )
    if "\x00" in text:
        return Document(
            doc_id,
            text.replace("\x00", "\ufffd"),
            source_file,
            row,
            problem=f"NUL byte at offset {text.index(chr(0))} ({where})",
        )
    return Document(doc_id, text, source_file, row)


def budget_reached(total_bytes: int, count: int, target_bytes: int, max_docs: int) -> bool:
    """Adapters stop once the domain's byte target or document cap is met."""
    return total_bytes >= target_bytes or count >= max_docs
