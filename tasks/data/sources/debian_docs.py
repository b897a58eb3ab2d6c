"""Domains from Debian packages (apt-get download + dpkg -x, no installation): Educational (the Python 3.11
documentation sources), Creative writing (the `fortunes` poems, songs and literary quotes), Academic (R package
vignettes that are journal papers, LaTeX sources) and the dictionary part of the public mix (GCIDE).

Why: Debian's archive is reachable from the build machine and its packages carry human-written text with a clear
license file (`usr/share/doc/<pkg>/copyright`), which the data card records.
"""

from __future__ import annotations

import gzip
import random
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tasks.core.errors import DataError
from tasks.data.sources import Document, Source, register
from tasks.data.sources.fetch import debian_package, debian_version
from tasks.data.sources.gensim_corpora import chunk_paragraphs
from tasks.data.sources.textio import budget_reached, decode_document


class DebianSource(Source):
    """Shared by the Debian adapters: package list, provenance and one budgeted decode -> clean -> chunk stream."""

    packages: tuple[str, ...] = ()

    def package_list(self) -> list[str]:
        return list(self.options.get("packages", self.packages))

    def origins(self) -> set[str]:
        return {f"debian:{p}" for p in self.package_list()}

    def provenance(self) -> dict:
        return {
            **super().provenance(),
            "debian_packages": {p: debian_version(self.context.cache_dir, p) for p in self.package_list()},
            "license_files": [f"usr/share/doc/{p}/copyright" for p in self.package_list()],
        }

    def chunks(self, text: str) -> list[str]:
        return chunk_paragraphs(text, int(self.options.get("chunk_chars", self.context.chunk_chars)))

    def file_documents(self, files: Iterable[tuple[str, Path]], clean: Callable[[str], str]) -> Iterator[Document]:
        """Documents of (key, path) files in order: each decoded (bad bytes -> one problem document), cleaned by
        `clean`, cut into pieces with ids `<domain>/<key>#<i>`; stops at the byte/document budget."""
        return self.budgeted(self._file_pieces(files, clean))

    def _file_pieces(
        self, files: Iterable[tuple[str, Path]], clean: Callable[[str], str]
    ) -> Iterator[tuple[Document, int]]:
        for key, path in files:
            yield from self.text_pieces(key, path.read_bytes(), str(path), 0, clean)

    def text_pieces(
        self,
        key: str,
        raw: bytes,
        source_file: str,
        row: int,
        clean: Callable[[str], str],
        max_bytes: int | None = None,
    ) -> Iterator[tuple[Document, int]]:
        """(document, its budget bytes) for the pieces of one raw text: the problem document alone when the bytes
        are not usable text or exceed `max_bytes` (default: the context's max_doc_bytes)."""
        limit = self.context.max_doc_bytes if max_bytes is None else max_bytes
        whole = decode_document(raw, f"{self.domain}/{key}", source_file, row, limit)
        if whole.problem:
            yield whole, _text_bytes(whole)
            return
        for i, text in enumerate(self.chunks(clean(whole.text))):
            doc = Document(f"{self.domain}/{key}#{i}", text, source_file, i)
            yield doc, _text_bytes(doc)

    def budgeted(self, sized: Iterable[tuple[Document, int]]) -> Iterator[Document]:
        """Yield documents one by one until their counted bytes or number meet the context's budget."""
        total = count = 0
        for doc, size in sized:
            yield doc
            total += size
            count += 1
            if budget_reached(total, count, self.context.target_bytes, self.context.max_docs):
                return


def _text_bytes(doc: Document) -> int:
    return len(doc.text.encode("utf-8"))


@register("python_docs")
class PythonDocsSource(DebianSource):
    license = "PSF-2.0 (Python documentation; Debian package python3.11-doc, see its copyright file)"
    description = "reStructuredText sources of the Python 3.11 tutorial, HOWTOs, FAQ and library reference, by section"
    packages = ("python3.11-doc",)

    def documents(self) -> Iterator[Document]:
        root = debian_package(self.context.cache_dir, self.package_list()[0])
        sources = root / "usr/share/doc/python3.11/html/_sources"
        if not sources.is_dir():
            raise DataError(f"{sources}: the python3.11-doc package has no reST sources here; package layout changed")
        skip = tuple(self.options.get("exclude", ["whatsnew/changelog", "license", "copyright"]))
        files = [
            p for p in sorted(sources.rglob("*.rst.txt")) if not p.relative_to(sources).as_posix().startswith(skip)
        ]
        random.Random(self.context.seed).shuffle(files)
        yield from self.file_documents(((p.relative_to(sources).as_posix(), p) for p in files), _rst_clean)


def _rst_clean(text: str) -> str:
    """Drop reST index/label/comment directives (markup noise); prose, code examples and headings stay."""
    text = re.sub(
        r"^\.\. (index|_[^:]+|highlight|sectionauthor|moduleauthor|module|currentmodule)::?.*$(\n   .*$)*",
        "",
        text,
        flags=re.M,
    )
    return re.sub(r"\n{3,}", "\n\n", text)


@register("fortunes")
class FortunesSource(DebianSource):
    license = "BSD-style / public domain collection (Debian package fortunes, see its copyright file)"
    description = "poems, song lyrics, literary and humorous quotations from the BSD fortune collection"
    packages = ("fortunes", "fortunes-min")
    FILES = (
        "songs-poems",
        "people",
        "art",
        "wisdom",
        "literature",
        "humorists",
        "tao",
        "kids",
        "love",
        "riddles",
        "paradoxum",
    )

    def documents(self) -> Iterator[Document]:
        roots = [debian_package(self.context.cache_dir, p) / "usr/share/games/fortunes" for p in self.package_list()]
        yield from self.budgeted(self._records(roots))

    def _records(self, roots: list[Path]) -> Iterator[tuple[Document, int]]:
        """(fortune, its stripped byte length) for each `%`-separated record of the configured files, in order."""
        for name in self.options.get("files", self.FILES):
            path = next((r / name for r in roots if (r / name).is_file()), None)
            if path is None:
                raise DataError(
                    f"fortune file '{name}' is in none of {self.package_list()} ({roots[0]}); fix options.files"
                )
            for row, raw in enumerate(re.split(rb"^%\n", path.read_bytes(), flags=re.M)):
                raw = re.sub(rb".\x08", b"", raw).strip()  # overstrike (char + backspace) underlining
                if raw:
                    doc = decode_document(
                        raw + b"\n", f"{self.domain}/{name}#{row}", str(path), row, self.context.max_doc_bytes
                    )
                    yield doc, len(raw)


@register("r_vignettes")
class RVignettesSource(DebianSource):
    license = "GPL-2 / GPL-3 (each R package's vignette, Debian r-cran-* packages; see each copyright file)"
    description = (
        "research papers (mostly Journal of Statistical Software / R News articles) shipped as R package "
        "vignettes, LaTeX sources with R code chunks and markup removed"
    )
    packages = (
        "r-cran-sandwich",
        "r-cran-zoo",
        "r-cran-strucchange",
        "r-cran-lme4",
        "r-cran-vcd",
        "r-cran-aer",
        "r-cran-pscl",
        "r-cran-partykit",
        "r-cran-coin",
        "r-cran-mvtnorm",
        "r-cran-lmtest",
        "r-cran-car",
        "r-cran-plm",
        "r-cran-quantreg",
        "r-cran-survival",
        "r-cran-flexmix",
        "r-cran-multcomp",
        "r-cran-robustbase",
        "r-cran-vegan",
        "r-cran-ape",
    )

    def documents(self) -> Iterator[Document]:
        yield from self.file_documents(self._vignettes(), latex_to_text)

    def _vignettes(self) -> Iterator[tuple[str, Path]]:
        """(package/file, path) of each installed .Rnw/.Rmd vignette, package by package (downloads lazily)."""
        for package in self.package_list():
            root = debian_package(self.context.cache_dir, package)
            for path in sorted(root.rglob("*.Rnw")) + sorted(root.rglob("*.Rmd")):
                if path.parent.name != "doc" or "/lib/R/" not in path.as_posix():
                    continue  # the installed vignettes only: not slides, course material or example copies
                yield f"{package}/{path.name}", path


_KEEP_ARG = (
    "emph",
    "textbf",
    "textit",
    "texttt",
    "code",
    "pkg",
    "proglang",
    "fct",
    "section",
    "subsection",
    "subsubsection",
    "paragraph",
    "title",
    "dfn",
    "samp",
    "file",
    "url",
    "email",
    "mbox",
    "text",
    "textsf",
    "textrm",
    "underline",
    "abstract",
    "class",
    "fct",
    "strong",
    "verb",
)
_DROP_ARG = (
    "cite",
    "citep",
    "citet",
    "citealp",
    "citeauthor",
    "citeyear",
    "ref",
    "eqref",
    "label",
    "includegraphics",
    "bibliography",
    "bibliographystyle",
    "usepackage",
    "documentclass",
    "VignetteIndexEntry",
    "VignetteDepends",
    "VignetteKeyword",
    "VignetteEngine",
    "VignetteEncoding",
    "SweaveOpts",
    "Plainauthor",
    "Plaintitle",
    "Shorttitle",
    "Keywords",
    "Plainkeywords",
    "Address",
    "newcommand",
    "renewcommand",
    "setkeys",
    "footnote",
    "vspace",
    "hspace",
    "input",
    "SweaveInput",
    "setlength",
    "hyphenation",
)


def latex_to_text(source: str) -> str:
    """Prose from a Sweave/LaTeX vignette: R chunks, comments, preamble, figures, citations and markup removed."""
    text = re.sub(r"^<<.*?>>=.*?^@", "", source, flags=re.S | re.M)  # R code chunks
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # Rmd chunks
    text = re.sub(r"(?<!\\)%.*$", "", text, flags=re.M)  # comments
    if "\\begin{document}" in text:
        text = text.split("\\begin{document}", 1)[1]
    text = text.split("\\end{document}", 1)[0]
    text = re.sub(
        r"\\begin\{(figure|table|Schunk|Sinput|Soutput|verbatim|CodeChunk|CodeInput|CodeOutput)\*?\}.*?"
        r"\\end\{\1\*?\}",
        "",
        text,
        flags=re.S,
    )
    text = re.sub(r"\\Sexpr\{[^{}]*\}", "", text)
    for _ in range(3):  # nested commands
        text = re.sub(r"\\(" + "|".join(_KEEP_ARG) + r")\*?(\[[^\]]*\])?\{([^{}]*)\}", r"\3", text)
        text = re.sub(r"\\(" + "|".join(_DROP_ARG) + r")\*?(\[[^\]]*\])?\{[^{}]*\}", "", text)
    text = re.sub(r"\\(begin|end)\{[^{}]*\}", "", text)
    text = re.sub(r"\\[a-zA-Z]+\*?(\[[^\]]*\])?", "", text)
    text = re.sub(r"[{}]", "", text)
    text = text.replace("~", " ").replace("``", '"').replace("''", '"')
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n[ \t]+", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _dictd_number(code: str) -> int:
    value = 0
    for ch in code:
        value = value * 64 + _B64.index(ch)
    return value


def gcide_entries(cache_dir: str) -> Iterator[tuple[str, str, str]]:
    """(headword, definition text, file) for the GCIDE dictionary (Webster's 1913 based), in index order."""
    root = debian_package(cache_dir, "dict-gcide") / "usr/share/dictd"
    index, dz = root / "gcide.index", root / "gcide.dict.dz"
    if not (index.is_file() and dz.is_file()):
        raise DataError(f"{root}: gcide.index / gcide.dict.dz missing from dict-gcide; package layout changed")
    with gzip.open(dz, "rb") as fh:  # dictzip is gzip-compatible
        body = fh.read()
    seen: set[int] = set()
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[0].startswith("00-database"):
            continue
        offset, length = _dictd_number(parts[1]), _dictd_number(parts[2])
        if offset in seen:
            continue
        seen.add(offset)
        yield parts[0], body[offset : offset + length].decode("utf-8", errors="replace").strip(), str(dz)
