"""News, forum and encyclopedia text shipped as test data inside the `gensim` wheel on PyPI.

Why: these are real, human-written corpora that are reachable offline-from-hubs (PyPI): the Lee corpus of Australian
Broadcasting Corporation news articles, a 20 Newsgroups subset (Usenet discussion, the closest real stand-in for Reddit
that we found offline), and an English Wikipedia dump excerpt (for the public mix).
"""

from __future__ import annotations

import bz2
import io
import pickle
import re
import zlib
from collections.abc import Iterator
from typing import Any

from tasks.core.errors import DataError
from tasks.data.sources import Document, Source, register
from tasks.data.sources.fetch import wheel_member
from tasks.data.sources.textio import budget_reached, decode_document

GENSIM = "gensim==4.4.0"
TEST_DATA = "gensim/test/test_data/"


class _GensimSource(Source):
    members: tuple[str, ...] = ()

    def requirement(self) -> str:
        return str(self.options.get("requirement", GENSIM))

    def provenance(self) -> dict:
        return {**super().provenance(), "package": self.requirement(), "files": [TEST_DATA + m for m in self.members]}

    def origins(self) -> set[str]:
        """gensim's test data holds several corpora; each feeds one domain, so the origin is the package's file."""
        name = self.requirement().split("==")[0]
        return {f"pypi:{name}#{member}" for member in self.members}


@register("lee_news")
class LeeNewsSource(_GensimSource):
    license = (
        "ABC (Australian Broadcasting Corporation) news articles as distributed in gensim's test data "
        "(Lee, Pincombe & Welsh 2005 corpus; gensim is LGPL-2.1); research use"
    )
    description = "the Lee news corpus: Australian broadcast news articles, one per line"
    members = ("lee_background.cor", "lee.cor")

    def documents(self) -> Iterator[Document]:
        total = count = 0
        for member in self.members:
            path = wheel_member(self.context.cache_dir, self.requirement(), TEST_DATA + member)
            for row, line in enumerate(path.read_bytes().splitlines()):
                if not line.strip():
                    continue
                doc = decode_document(
                    line.strip(), f"{self.domain}/{member}#{row}", str(path), row, self.context.max_doc_bytes
                )
                yield doc
                total += len(line)
                count += 1
                if budget_reached(total, count, self.context.target_bytes, self.context.max_docs):
                    return


class _DType:
    """Stand-in for numpy.dtype while unpickling: records the type code and byte order only."""

    def __init__(self, code: str, *_: Any) -> None:
        self.code, self.order = code, "|"

    def __setstate__(self, state: tuple) -> None:
        self.order = state[1] if len(state) > 1 and state[1] in "<>|=" else "|"


class _Array:
    """Stand-in for numpy.ndarray while unpickling: rebuilt with np.frombuffer from its raw bytes (no code runs)."""

    def __init__(self, *_: Any) -> None:
        self.value: Any = None

    def __setstate__(self, state: tuple) -> None:
        import numpy as np

        _, shape, dtype, _, raw = state
        if isinstance(raw, str):
            raw = raw.encode("latin1")
        if not isinstance(raw, (bytes, bytearray)):
            raise DataError("mini_newsgroup: an array holds Python objects; refusing to load it")
        order = dtype.order if dtype.order in "<>" else ""
        self.value = np.frombuffer(raw, dtype=np.dtype(order + dtype.code)).reshape(shape).tolist()


class _BunchUnpickler(pickle.Unpickler):
    """Reads the scikit-learn `Bunch` pickle of gensim's mini_newsgroup as plain dicts, lists and numbers.

    Only the names that file uses are resolved, each to a harmless stand-in; any other global is refused, so the file
    cannot run code. (This is a data file from a wheel; no model artifact is ever unpickled.)
    """

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstructor" and module in ("copy_reg", "copyreg"):
            return lambda cls, base, state: dict(state or {}) if cls is dict else cls()
        if (module, name) in {("sklearn.datasets.base", "Bunch"), ("__builtin__", "dict"), ("builtins", "dict")}:
            return dict
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return lambda cls, shape, dtype: _Array()
        if module == "numpy" and name == "ndarray":
            return _Array
        if module == "numpy" and name == "dtype":
            return _DType
        raise DataError(f"mini_newsgroup: refusing to load global {module}.{name}")


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, _Array) else value


@register("newsgroups")
class NewsgroupsSource(_GensimSource):
    license = (
        "20 Newsgroups (public Usenet posts, collected by Ken Lang; research use) as distributed in gensim's test data"
    )
    description = (
        "Usenet discussion posts (20 Newsgroups subset): real forum discussion standing in for Reddit; "
        "headers other than Subject removed"
    )
    members = ("mini_newsgroup",)

    def documents(self) -> Iterator[Document]:
        path = wheel_member(self.context.cache_dir, self.requirement(), TEST_DATA + self.members[0])
        try:
            bunch = _BunchUnpickler(io.BytesIO(zlib.decompress(path.read_bytes())), encoding="latin1").load()
        except (zlib.error, pickle.UnpicklingError, EOFError) as err:
            raise DataError(f"{path}: not the expected zlib-compressed newsgroups file ({err})") from err
        posts, names = _plain(bunch.get("data", [])), _plain(bunch.get("target_names", []))
        targets = _plain(bunch.get("target", []))
        total = count = 0
        for row, post in enumerate(posts):
            group = names[targets[row]] if len(targets) > row and len(names) > int(targets[row]) else ""
            text = _strip_headers(str(post))
            yield Document(f"{self.domain}/mini_newsgroup#{row}", text, str(path), row, meta={"group": str(group)})
            total += len(text.encode("utf-8"))
            count += 1
            if budget_reached(total, count, self.context.target_bytes, self.context.max_docs):
                return


def _strip_headers(post: str) -> str:
    head, _, body = post.partition("\n\n")
    subject = next((line[len("Subject:") :].strip() for line in head.splitlines() if line.startswith("Subject:")), "")
    return (f"{subject}\n\n{body.strip()}" if subject else body.strip()) + "\n"


# --- Wikipedia (public mix) ---------------------------------------------------------------------------------------

_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S | re.I)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_TABLE = re.compile(r"\{\|.*?\|\}", re.S)
_FILE = re.compile(r"\[\[(?:File|Image|Category|[a-z\-]{2,12}):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", re.I)
_LINK = re.compile(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]")
_EXT = re.compile(r"\[https?://[^\s\]]+\s?([^\]]*)\]")
_HEADING = re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M)
_QUOTES = re.compile(r"'{2,}")
_LIST = re.compile(r"^[*#:;]+\s*", re.M)


def _drop_templates(text: str) -> str:
    """Remove {{...}} templates, nested ones included (a regex cannot count braces)."""
    out, depth, i = [], 0, 0
    while i < len(text):
        pair = text[i : i + 2]
        if pair == "{{":
            depth, i = depth + 1, i + 2
        elif pair == "}}" and depth:
            depth, i = depth - 1, i + 2
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


def wikitext_to_text(markup: str) -> str:
    """Plain prose from MediaWiki markup: templates, tables, refs, files and formatting removed; links keep their
    label."""
    text = _COMMENT.sub("", markup)
    text = _REF.sub("", text)
    text = _drop_templates(text)
    text = _TABLE.sub("", text)
    text = _FILE.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _EXT.sub(r"\1", text)
    text = _TAG.sub("", text)
    text = _HEADING.sub(r"\1", text)
    text = _QUOTES.sub("", text)
    text = _LIST.sub("", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def chunk_paragraphs(text: str, max_chars: int) -> list[str]:
    """Split long text at paragraph boundaries into pieces of at most ~max_chars (a paragraph is never cut)."""
    pieces, current = [], ""
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        if current and len(current) + len(para) + 2 > max_chars:
            pieces.append(current)
            current = para
        else:
            current = f"{current}\n\n{para}" if current else para
    if current:
        pieces.append(current)
    return pieces


def wikipedia_articles(cache_dir: str, requirement: str = GENSIM) -> Iterator[tuple[str, str, str]]:
    """(title, plain text, file) per main-namespace article of gensim's English Wikipedia excerpt (redirects
    skipped)."""
    import xml.etree.ElementTree as ET

    path = wheel_member(
        cache_dir, requirement, TEST_DATA + "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    )
    with bz2.open(path, "rb") as fh:
        title, ns, text = "", "", ""
        for _, elem in ET.iterparse(fh, events=("end",)):
            tag = elem.tag.rsplit("}", 1)[-1]
            if tag == "title":
                title = elem.text or ""
            elif tag == "ns":
                ns = elem.text or ""
            elif tag == "text":
                text = elem.text or ""
            elif tag == "page":
                if ns == "0" and not text.lstrip().upper().startswith("#REDIRECT"):
                    yield title, wikitext_to_text(text), str(path)
                elem.clear()
