"""Prose signals for validation at scale: how English a document is, how much markup is left, and whether it is
boilerplate (a license text or a table of contents) rather than writing.

Why: package documentation and e-texts carry licence headers, tables of contents, markup the cleaners missed and
passages in other languages. The checks that use these signals quarantine such documents with a reason instead of
letting them into an owner's training data; they are switched on by `data.min_english_ratio`,
`data.max_markup_ratio` and `data.drop_boilerplate` (the at-scale profiles), so the demo's data stays as it was.
"""

from __future__ import annotations

import re

# The most frequent English function words: ordinary English prose has 35-50% of its words in this set, other
# languages and code far fewer.
COMMON_ENGLISH = frozenset(
    """the of and to a in is it that for was on are as with be by this at from or have an not but which they you
    he his her she we were their been has had there all can if more when will would one so what its about who also
    into than them these some may other could no only out do such then should any our my me him how each most many
    those us very your our between after before where while because through under over both same own i""".split()
)
MIN_WORDS = 8  # shorter documents (a proverb, a chat line) are not judged for language
_WORDS = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
_MARKUP = re.compile(
    r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>\n]{0,200})?/?>"  # an HTML/XML tag
    r"|&(?:[a-zA-Z]{2,8}|#\d{2,5});"  # an entity
    r"|\\[A-Za-z]+\*?(?:\[[^\]\n]{0,80}\])?\{"  # a LaTeX command with an argument
    r"|^\.[A-Z]{1,2}\b"  # a roff request at the start of a line
    r"|\[\[|\]\]|\{\{|\}\}",  # wiki links and templates
    re.M,
)
LICENSE_PHRASES = (  # lower case; found with `in` on the lower-cased text (a regex alternation is far slower)
    "permission is hereby granted",
    "without warranty of any kind",
    "general public license",
    "redistribution and use in source and binary forms",
    "all rights reserved",
    "licensed under the apache license",
    "this program is free software",
    "creative commons",
    'the software is provided "as is',
    "you may not use this file except in compliance",
)
LICENSE_MIN_PHRASES = 2  # distinct licence phrases that make a document a licence text
LICENSE_MAX_CHARS = 8000  # a long document that quotes a licence is still writing
_TOC_LINE = re.compile(r"^\s*(?:[\dIVXLC]+(?:\.\d+)*\.?\s+)?\S.{0,100}?(?:\s*\.{3,}\s*|\s{2,}|\t)\d{1,4}\s*$")
TOC_MIN_LINES = 6
TOC_SHARE = 0.6  # a table of contents: this share of its non-blank lines end in a page number


def english_ratio(text: str) -> float:
    """Share of the document's words that are common English function words (1.0 for very short documents)."""
    words = _WORDS.findall(text.lower())
    if len(words) < MIN_WORDS:
        return 1.0
    return sum(word in COMMON_ENGLISH for word in words) / len(words)


def markup_ratio(text: str) -> float:
    """Share of the characters inside leftover markup (tags, entities, LaTeX commands, roff requests, wiki syntax)."""
    return sum(len(m.group(0)) for m in _MARKUP.finditer(text)) / max(len(text), 1)


def boilerplate(text: str) -> str | None:
    """Why a document is boilerplate ("licence text", "table of contents"), or None when it is writing."""
    if len(text) <= LICENSE_MAX_CHARS:
        lowered = text.lower()
        if sum(phrase in lowered for phrase in LICENSE_PHRASES) >= LICENSE_MIN_PHRASES:
            return "licence text"
    lines = [line for line in text.splitlines() if line.strip()]
    needed = TOC_SHARE * len(lines)
    if len(lines) < TOC_MIN_LINES or sum(line.rstrip()[-1:].isdigit() for line in lines) < needed:
        return None  # most documents: too few lines end in a number to be a table of contents (no regex run)
    if sum(bool(_TOC_LINE.match(line)) for line in lines) >= needed:
        return "table of contents"
    return None
