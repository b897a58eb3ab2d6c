"""The public mix: encyclopedia articles (English Wikipedia excerpt from gensim's test data) and dictionary
definitions (GCIDE, Debian `dict-gcide`), interleaved.

Why: the paper's public set is broad web-like text with the closed domains' sources removed; neither of these sources
is used by a closed domain. The public mix trains the tokenizer and M_pub, so it is the largest domain.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import islice

from tasks.data.sources import Document, Source, register
from tasks.data.sources.debian_docs import gcide_entries
from tasks.data.sources.fetch import debian_version
from tasks.data.sources.gensim_corpora import GENSIM, chunk_paragraphs, wikipedia_articles
from tasks.data.sources.textio import budget_reached

DICT_GROUP_CHARS = 1500  # consecutive dictionary entries are grouped into documents of about this size


@register("public_mix")
class PublicMixSource(Source):
    license = "Wikipedia text: CC BY-SA 3.0 / GFDL; GCIDE: GPL-3+ (Debian dict-gcide, see its copyright file)"
    description = "English Wikipedia articles (gensim test-data excerpt) + GCIDE dictionary definitions, interleaved"

    def documents(self) -> Iterator[Document]:
        wiki_every = int(self.options.get("wiki_per_dict", 3))  # wiki documents per dictionary document
        chunk = int(self.options.get("chunk_chars", self.context.chunk_chars))
        wiki, dictionary = self._wiki(chunk), self._dictionary()
        total = count = 0
        while True:
            batch = list(islice(wiki, wiki_every)) + list(islice(dictionary, 1))
            if not batch:
                return
            for doc in batch:
                yield doc
                total += len(doc.text.encode("utf-8"))
                count += 1
                if budget_reached(total, count, self.context.target_bytes, self.context.max_docs):
                    return

    def _wiki(self, chunk: int) -> Iterator[Document]:
        for n, (title, text, path) in enumerate(wikipedia_articles(self.context.cache_dir, GENSIM)):
            for i, piece in enumerate(chunk_paragraphs(text, chunk)):
                body = f"{title}\n\n{piece}" if i == 0 else piece
                yield Document(f"{self.domain}/wiki/{title}#{i}", body, path, n)

    def _dictionary(self) -> Iterator[Document]:
        """Groups of entries drawn across the whole alphabet (a seeded shuffle), not only the letter A."""
        entries = list(gcide_entries(self.context.cache_dir))
        random.Random(self.context.seed).shuffle(entries)
        group: list[str] = []
        first, row = "", 0
        for word, definition, path in entries:
            first = first or word
            group.append(definition)
            if sum(len(g) for g in group) >= DICT_GROUP_CHARS:
                yield Document(f"{self.domain}/gcide/{first}#{row}", "\n\n".join(group), path, row)
                group, first, row = [], "", row + 1

    def origins(self) -> set[str]:
        return {f"pypi:{GENSIM.split('==')[0]}#wikipedia", "debian:dict-gcide"}

    def provenance(self) -> dict:
        return {
            **super().provenance(),
            "package": GENSIM,
            "debian_packages": {"dict-gcide": debian_version(self.context.cache_dir, "dict-gcide")},
        }
