"""PII patterns: what validation flags and what ingest redacts (emails, phone numbers, credit-card-like numbers).

Why one module: the redaction at ingest and the Great Expectations check must agree on what counts as PII.
"""

from __future__ import annotations

import re

PATTERNS: dict[str, str] = {
    "EMAIL": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "PHONE": r"(?:\+\d{1,3}[ .-])?\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b",
    "CARD": r"\b(?:\d{4}[ -]){3}\d{4}\b",
}
_COMPILED = {name: re.compile(rx) for name, rx in PATTERNS.items()}


def redact(text: str) -> tuple[str, int]:
    """`text` with each PII match replaced by <EMAIL>/<PHONE>/<CARD>, and the number of replacements."""
    total = 0
    for name, rx in _COMPILED.items():
        text, n = rx.subn(f"<{name}>", text)
        total += n
    return text, total


def has_pii(text: str) -> bool:
    return any(rx.search(text) for rx in _COMPILED.values())
