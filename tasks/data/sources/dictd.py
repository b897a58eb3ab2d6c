"""Dictionary definitions from Debian dictd packages (WordNet, FOLDOC, the Jargon File), grouped into documents.

Why: dictionaries are clean, edited English prose about words and computing terms; the dictd format (`<db>.index`
with base64 offsets into a gzip-compatible `<db>.dict.dz`) is the same for every package, so one reader serves all.
Entries are grouped into documents of about `group_chars` characters drawn across the alphabet (a seeded shuffle,
as `public_mix` does for GCIDE); the dictd header entries (`00-database-*`) are skipped. Dictionaries are opened
lazily and interleaved, so a small budget downloads only what it reads.
"""

from __future__ import annotations

import gzip
import random
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.core.errors import DataError
from tasks.data.sources import Document, register
from tasks.data.sources.debian_docs import DebianSource
from tasks.data.sources.debian_manuals import PER_PACKAGE_BYTES, copyright_licenses, interleave, open_count
from tasks.data.sources.fetch import debian_package
from tasks.data.sources.textio import decode_document

GROUP_CHARS = 1500  # entries are grouped into documents of about this many characters
DICTD_DIR = "usr/share/dictd"
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
DEFAULT_PACKAGES = ("dict-wn", "dict-foldoc", "dict-jargon")  # jargon-text is the same Jargon File as plain text


def dictd_number(code: str) -> int:
    """A dictd index offset/length (base64 digits, most significant first)."""
    value = 0
    for ch in code:
        value = value * 64 + _B64.index(ch)
    return value


def dictd_entries(index: Path, dz: Path) -> Iterator[tuple[str, bytes]]:
    """(headword, raw definition bytes) per distinct definition in index order; header entries skipped."""
    try:
        with gzip.open(dz, "rb") as fh:  # dictzip is gzip-compatible; the file is small enough to read whole
            body = fh.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{dz}: not a readable dictzip/gzip file ({err}); re-download the package") from err
    seen: set[int] = set()
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
            continue
        try:
            offset, length = dictd_number(parts[1]), dictd_number(parts[2])
        except ValueError as err:
            raise DataError(f"{index}: malformed index line {line[:80]!r}; the package layout changed") from err
        if offset in seen:
            continue  # several headwords point at one definition
        seen.add(offset)
        yield parts[0], body[offset : offset + length].strip()


@register("dictd")
class DictdSource(DebianSource):
    license = "per dictionary: WordNet 3.0 license (dict-wn), GFDL (dict-foldoc), GPL-2+ (dict-jargon); see `licenses`"
    description = "dictionary definitions (WordNet, FOLDOC, the Jargon File) grouped into documents across the alphabet"

    packages = DEFAULT_PACKAGES

    def provenance(self) -> dict[str, Any]:
        packages = self.package_list()
        return {
            **super().provenance(),
            "license_files": {p: f"debian:{p}:usr/share/doc/{p}/copyright" for p in packages},
            "licenses": {p: copyright_licenses(self.context.cache_dir, p) for p in packages},
        }

    def documents(self) -> Iterator[Document]:
        packages = self.package_list()
        random.Random(self.context.seed).shuffle(packages)
        per_package = int(self.options.get("per_package_bytes", PER_PACKAGE_BYTES))
        width = open_count(self.context.target_bytes, per_package, packages)
        groups = [self._groups(p) for p in packages]
        yield from interleave(groups, width, self.context.target_bytes, self.context.max_docs)

    def _groups(self, package: str) -> Iterator[list[Document]]:
        """One document (a group of shuffled entries) at a time; the package is downloaded on first use."""
        root = debian_package(self.context.cache_dir, package) / DICTD_DIR
        indexes = sorted(root.glob("*.index")) if root.is_dir() else []
        if not indexes:
            raise DataError(f"{root}: no dictd .index file in {package}; is it a dictd dictionary package?")
        group_chars = int(self.options.get("group_chars", GROUP_CHARS))
        for index in indexes:
            dz = index.with_name(index.name.removesuffix(".index") + ".dict.dz")
            if not dz.is_file():
                raise DataError(f"{dz}: missing next to {index.name} in {package}; package layout changed")
            entries = list(dictd_entries(index, dz))
            random.Random(f"{self.context.seed}:{package}").shuffle(entries)
            group: list[bytes] = []
            size, first, row = 0, "", 0
            for n, (word, raw) in enumerate(entries):
                first = first or word
                group.append(raw)
                size += len(raw)
                if size >= group_chars or n == len(entries) - 1:
                    doc_id = f"{self.domain}/{package}/{index.stem}/{first}#{row}"
                    doc = decode_document(b"\n\n".join(group), doc_id, str(dz), row, self.context.max_doc_bytes)
                    yield [doc]
                    group, size, first, row = [], 0, "", row + 1
