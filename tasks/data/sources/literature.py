"""Creative writing from Debian packages: Jane Austen's six novels (r-cran-janeaustenr) and the monster, item, god
and place lore of Dungeon Crawl Stone Soup (crawl-common).

Why: the creative domain at scale needs more human-written fiction than Shakespeare, Moby-Dick, the Brown fiction
sections and the fortunes hold. janeaustenr ships the novels only as R lazy-load data, read here with the restricted
reader of `rdata` (character vectors only, nothing executed); the Crawl lore is plain text files.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

from tasks.core.errors import DataError
from tasks.data.sources import Document, register
from tasks.data.sources.debian_docs import DebianSource
from tasks.data.sources.fetch import debian_package
from tasks.data.sources.pypi_texts import pieces
from tasks.data.sources.rdata import character_vectors

AUSTEN_INDEX = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdx"
AUSTEN_TITLES = {
    "emma": "Emma",
    "mansfieldpark": "Mansfield Park",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
    "prideprejudice": "Pride and Prejudice",
    "sensesensibility": "Sense and Sensibility",
}
WHOLE_WORK_MAX_BYTES = 16 * 1024 * 1024  # a whole novel is read as one text before it is cut into pieces


class _LiteratureSource(DebianSource):
    """Pieces cut at paragraphs, a paragraph longer than chunk_chars (verse, dialogue runs) between lines."""

    def chunks(self, text: str) -> list[str]:
        return pieces(text, int(self.options.get("chunk_chars", self.context.chunk_chars)))


@register("jane_austen")
class JaneAustenSource(_LiteratureSource):
    license = (
        "public domain novels (Project Gutenberg texts) packaged by janeaustenr, MIT (Julia Silge; Debian package "
        "r-cran-janeaustenr, see its copyright file)"
    )
    description = (
        "Jane Austen's six completed novels (Emma, Mansfield Park, Northanger Abbey, Persuasion, Pride and "
        "Prejudice, Sense and Sensibility), one line per element in R data, cut into pieces of paragraphs"
    )
    packages = ("r-cran-janeaustenr",)

    def novels(self) -> list[str]:
        novels = list(self.options.get("novels", AUSTEN_TITLES))
        unknown = [n for n in novels if n not in AUSTEN_TITLES]
        if unknown or not novels:
            raise DataError(f"jane_austen: options.novels {novels}: choose from {sorted(AUSTEN_TITLES)}")
        return novels

    def provenance(self) -> dict:
        return {**super().provenance(), "files": [AUSTEN_INDEX, AUSTEN_INDEX.replace(".rdx", ".rdb")]}

    def documents(self) -> Iterator[Document]:
        index = debian_package(self.context.cache_dir, self.package_list()[0]) / AUSTEN_INDEX
        vectors = character_vectors(index)
        missing = [n for n in self.novels() if n not in vectors]
        if missing:
            raise DataError(f"{index}: no novel(s) {missing} (holds {sorted(vectors)}); the package data changed")
        novels = self.novels()
        random.Random(self.context.seed).shuffle(novels)
        yield from self.budgeted(self._pieces(novels, vectors, index))

    def _pieces(self, novels: list[str], vectors: dict, index: Path) -> Iterator[tuple[Document, int]]:
        source_file = str(index.with_suffix(".rdb"))
        for row, novel in enumerate(novels):
            raw = b"\n".join(line or b"" for line in vectors[novel])  # NA lines are blank lines
            for doc, size in self.text_pieces(novel, raw, source_file, row, str.strip, WHOLE_WORK_MAX_BYTES):
                doc.meta["title"] = AUSTEN_TITLES[novel]
                yield doc, size


CRAWL_DESCRIPT = "usr/share/crawl/dat/descript"
# the lore: creatures, artefacts, gods, places and peoples; not the game's help, hints, tutorial or status texts, and
# not quotes.txt (quotations from other authors' books, under their own copyrights)
CRAWL_FILES = (
    "monsters",
    "items",
    "unrand",
    "gods",
    "spells",
    "features",
    "branches",
    "species",
    "backgrounds",
    "cards",
    "clouds",
)
CRAWL_RECORD = re.compile(rb"^%%%%[ \t]*$", re.M)
CRAWL_MARKUP = re.compile(r"</?[a-z]+>|\{\{.*?\}\}", re.S)  # colour tags, embedded Lua


@register("crawl_lore")
class CrawlLoreSource(_LiteratureSource):
    license = (
        "GPL-2+ (Dungeon Crawl Stone Soup, Copyright 1997-2016 Linley Henzell, the dev team and the contributors; "
        "Debian package crawl-common, see its copyright file)"
    )
    description = (
        "fantasy lore written for the game Dungeon Crawl Stone Soup: descriptions of monsters, artefacts, gods, "
        "spells and places, one entry (name + text) per document; game fiction standing in for creative writing"
    )
    packages = ("crawl-common",)

    def provenance(self) -> dict:
        files = [f"{CRAWL_DESCRIPT}/{name}.txt" for name in self.options.get("files", CRAWL_FILES)]
        return {**super().provenance(), "files": files}

    def documents(self) -> Iterator[Document]:
        root = debian_package(self.context.cache_dir, self.package_list()[0]) / CRAWL_DESCRIPT
        entries = []
        for name in self.options.get("files", CRAWL_FILES):
            path = root / f"{name}.txt"
            if not path.is_file():
                raise DataError(f"{path}: missing; crawl-common's layout changed, fix options.files")
            entries += [(name, path, row, raw) for row, raw in enumerate(CRAWL_RECORD.split(path.read_bytes()))]
        random.Random(self.context.seed).shuffle(entries)
        yield from self.budgeted(self._pieces(entries))

    def _pieces(self, entries: list[tuple[str, Path, int, bytes]]) -> Iterator[tuple[Document, int]]:
        for name, path, row, raw in entries:
            raw = b"\n".join(line for line in raw.strip().splitlines() if not line.startswith(b"#")).strip()
            key = raw.split(b"\n", 1)[0]
            if b"\n" not in raw or key.startswith(b"_"):  # an empty record, or an engine snippet (key `__...`)
                continue
            yield from self.text_pieces(f"{name}/{row}", raw, str(path), row, crawl_clean)


def crawl_clean(text: str) -> str:
    """The entry's name and prose, with colour tags and embedded Lua removed."""
    return re.sub(r"\n{3,}", "\n\n", CRAWL_MARKUP.sub("", text)).strip()
