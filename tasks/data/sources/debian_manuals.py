"""Technical manuals from Debian documentation packages (HTML, man pages, Texinfo/info, POD, plain text), read as
prose for the public technical mix and, with the Rust books, for the educational domain.

Why: Debian main ships the manuals of the JDK, the Linux kernel, PostgreSQL, Perl, Git, Vim, Racket, Django, GIMP
and more, each package with its copyright file; together they give > 100 MB of human-written technical English.
HTML is read with the stdlib `html.parser` (the venv has no lxml / bs4 / html2text and nothing fetched may add
them); man pages go through groff when it is installed, else a small pure-Python conversion of the man macros.

Each package is one origin ("debian:<pkg>"). `LAYOUTS` says which files of a known package are its manual (one
format per package, so an HTML page and its plain-text source are not both read); a package not listed there is
read with `GENERIC_LAYOUT`. Packages are opened lazily and read round-robin (a seeded order) so a small budget
still gets a mix without downloading every package.
"""

from __future__ import annotations

import gzip
import math
import os
import random
import re
import shutil
import subprocess
import zlib
from collections.abc import Iterator
from fnmatch import fnmatchcase
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from tasks.data.sources import Document, register
from tasks.data.sources.debian_docs import DebianSource
from tasks.data.sources.fetch import cache_root, debian_package
from tasks.data.sources.gensim_corpora import chunk_paragraphs
from tasks.data.sources.textio import budget_reached, decode_document

MAX_FILE_BYTES = 64 * 1024 * 1024  # a single manual file larger than this (uncompressed) is a problem document
PER_PACKAGE_BYTES = 2_000_000  # one more package is opened (read concurrently) per this many bytes of budget
MIN_OPEN_PACKAGES = 2  # even a tiny budget mixes at least this many packages
MAN_LINE_LENGTH = 100  # groff line length (characters) for man pages
GROFF_TIMEOUT_S = 60
MAN_BASE_INDENT = " " * 7  # groff indents a man page's body by this much
HTML_CHARSET_SNIFF_BYTES = 4096  # where an HTML page declares its charset (<meta ... charset=...>)
FREE_FORM_LICENSES = (
    "GNU Free Documentation License",
    "GNU General Public License",
    "GNU Lesser General Public License",
    "Artistic License",
    "public domain",
)

# Files never read: licenses, change logs, indexes, tables of contents, search pages, Sphinx sources (the HTML is read).
BOILERPLATE = (
    "*/copyright",
    "*/COPYING*",
    "*[Ll]icen[cs]e*",
    "*changelog*",
    "*ChangeLog*",
    "*/NEWS*",
    "*/RelNotes/*",
    "*genindex*",
    "*modindex*",
    "*/search.html",
    "*/searchindex*",
    "*/toc.html",
    "*/_sources/*",
    "*/_modules/*",
    "*/index-files/*",
    "*/class-use/*",
    "*-index.html",
    "*-tree.html",
    "*/print.html",
    "*/404.html",
)

# Per known package: (include globs, extra exclude globs), relative to the unpacked package root.
LAYOUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "openjdk-17-doc": (
        ("usr/share/doc/openjdk-17-jre-headless/api/*.html", "usr/share/doc/openjdk-17-jre-headless/specs/*.html"),
        ("*/package-use.html", "*/deprecated-list.html", "*/constant-values.html", "*/serialized-form.html"),
    ),
    "linux-doc-6.1": (("usr/share/doc/linux-doc-6.1/html/*.html",), ()),
    "racket-doc": (("usr/share/doc/racket/*.html",), ("*/doc-index.html", "*/search/*")),
    "postgresql-doc-15": (("usr/share/doc/postgresql-doc-15/html/*.html",), ("*/bookindex.html", "*/release-*")),
    "perl-doc": (
        ("usr/share/perl/*/pod/*.pod", "usr/share/man/man3/*"),
        ("*/perl*delta.pod", "*/perlartistic.pod", "*/perlgpl.pod", "*/perltoc.pod", "*/perlhist.pod"),
    ),
    "vim-runtime": (("usr/share/vim/vim*/doc/*.txt",), ("*/version[4-9].txt", "*/uganda.txt", "*/tags")),
    "git-doc": (("usr/share/doc/git-doc/*.html",), ()),
    "python-django-doc": (("usr/share/doc/python-django-doc/html/*.html",), ("*/releases/*",)),
    "manpages": (("usr/share/man/man*/*",), ()),
    "manpages-dev": (("usr/share/man/man*/*",), ()),
    "emacs-common": (
        (
            "usr/share/emacs/*/etc/PROBLEMS",
            "usr/share/emacs/*/etc/DEBUG",
            "usr/share/emacs/*/etc/TODO",
            "usr/share/emacs/*/etc/MACHINES",
            "usr/share/emacs/*/etc/HISTORY",
            "usr/share/emacs/*/etc/ETAGS.README",
            "usr/share/emacs/*/etc/tutorials/TUTORIAL",
            "usr/share/emacs/*/etc/gnus-tut.txt",
            "usr/share/emacs/*/etc/enriched.txt",
        ),
        (),
    ),
    "debian-handbook": (("usr/share/doc/debian-handbook/html/en-US/*.html",), ("*/index.html",)),
    "lilypond-doc": (("usr/share/info/*.info*",), ("*/lilypond-changes.info*",)),
    "bash-doc": (("usr/share/info/bash.info*", "usr/share/doc/bash/bash.html"), ()),
    "gimp-help-en": (("usr/share/gimp/2.0/help/en/*.html",), ("*/index.html",)),
    "debian-reference-en": (("usr/share/debian-reference/*.en.html",), ("*/index.en.html",)),
    "abs-guide": (("usr/share/doc/abs-guide/html/*.html",), ("*/index.html",)),
    "gnu-standards": (("usr/share/info/*.info*",), ()),
    # 137 of its 209 MB are PDF; the text part is the LaTeX2e reference (info) and a few HTML guides.
    "texlive-lang-english": (
        (
            "usr/share/info/latex2e.info*",
            "usr/share/doc/texlive-doc/generic/tex-refs/tex-refs.html",
            "usr/share/doc/texlive-doc/generic/tds/tds.html",
            "usr/share/doc/texlive-doc/latex/webguide/webguide.html",
            "usr/share/doc/texlive-doc/latex/latex-doc-ptr/latex-doc-ptr.html",
        ),
        (),
    ),
    "rust-web-doc": (
        tuple(
            f"usr/share/doc/rust-web-doc/html/{book}/*.html"
            for book in (
                "book",
                "reference",
                "rust-by-example",
                "nomicon",
                "edition-guide",
                "embedded-book",
                "error_codes",
                "rustc",
                "rustdoc",
                "style-guide",
                "std",  # the standard library reference (core/alloc pages repeat it: std re-exports them)
            )
        ),
        ("*/std/simd/*", "*/std/intrinsics/*", "*/std/arch/*", "*/all.html"),
    ),
}
GENERIC_LAYOUT: tuple[tuple[str, ...], tuple[str, ...]] = (
    (
        "usr/share/doc/*.html",
        "usr/share/doc/*.htm",
        "usr/share/doc/*.txt",
        "usr/share/doc/*.txt.gz",
        "usr/share/info/*.info*",
        "usr/share/man/man*/*",
    ),
    ("usr/share/man/??/*", "usr/share/man/??_??/*"),  # translated man pages
)

# The public technical mix, with the clean MB each gave in a full read (seed 0, chunk_chars 4000, groff 1.22.4).
# The educational Rust books (rust-web-doc, 10.7 MB) and texlive-lang-english (0.95 MB) are configured separately.
DEFAULT_PACKAGES = (
    "openjdk-17-doc",  # 40.3 MB: the Java SE 17 API reference (javadoc)
    "linux-doc-6.1",  # 33.2
    "racket-doc",  # 12.4
    "perl-doc",  # 10.0: POD manuals + core module man pages
    "postgresql-doc-15",  # 6.4
    "lilypond-doc",  # 5.7: info manuals
    "vim-runtime",  # 5.1: help files
    "manpages-dev",  # 4.5: sections 2 and 3
    "python-django-doc",  # 3.6
    "git-doc",  # 3.1
    "manpages",  # 2.2
    "gimp-help-en",  # 1.7
    "abs-guide",  # 1.6
    "debian-handbook",  # 1.2: en-US only
    "bash-doc",  # 0.8
    "debian-reference-en",  # 0.5
    "emacs-common",  # 0.4: PROBLEMS, TODO, TUTORIAL...; the NEWS files are change logs, not read
    "gnu-standards",  # 0.3
)


@register("debian_manuals")
class DebianManualsSource(DebianSource):
    license = (
        "per package (GPL-2, GPL-2 with Classpath exception, PostgreSQL, Artistic/GPL, Vim, BSD-3, GFDL, "
        "MIT/Apache-2.0, ...): see `licenses` and each usr/share/doc/<pkg>/copyright"
    )
    description = "technical manuals from Debian documentation packages (HTML pages, man pages, info nodes, POD)"

    packages = DEFAULT_PACKAGES

    def provenance(self) -> dict[str, Any]:
        packages = self.package_list()
        return {
            **super().provenance(),
            "license_files": {p: license_file(self.context.cache_dir, p) for p in packages},
            "licenses": {p: copyright_licenses(self.context.cache_dir, p) for p in packages},
            "man_renderer": self._man_renderer(),
        }

    def documents(self) -> Iterator[Document]:
        packages = self.package_list()
        random.Random(self.context.seed).shuffle(packages)
        per_package = int(self.options.get("per_package_bytes", PER_PACKAGE_BYTES))
        yield from interleave(
            [self._package_pages(p) for p in packages],
            open_count(self.context.target_bytes, per_package, packages),
            self.context.target_bytes,
            self.context.max_docs,
        )

    def _man_renderer(self) -> str:
        """The pure-Python conversion by default: the same text (and data hash) on every machine, with groff or not;
        `options.man_renderer: groff` (or `auto`: groff where installed) for groff's fuller rendering."""
        wanted = str(self.options.get("man_renderer", "python"))
        if wanted == "auto":
            return "groff" if shutil.which("groff") else "python"
        return wanted

    def _package_pages(self, package: str) -> Iterator[list[Document]]:
        """The documents of one page (HTML file, man page, info node, text file) at a time; downloads on first use."""
        root = debian_package(self.context.cache_dir, package)
        owner = license_package(self.context.cache_dir, package)
        if owner != package:
            debian_package(self.context.cache_dir, owner)  # the package holding the copyright file
        layouts = {**LAYOUTS, **{k: (tuple(v), ()) for k, v in self.options.get("layouts", {}).items()}}
        include, exclude = layouts.get(package, GENERIC_LAYOUT)
        files = manual_files(root, include, exclude)
        random.Random(f"{self.context.seed}:{package}").shuffle(files)
        chunk = int(self.options.get("chunk_chars", self.context.chunk_chars))
        renderer = self._man_renderer()
        for path in files:
            rel = path.relative_to(root).as_posix()
            doc_id = f"{self.domain}/{package}/{rel}"
            raw, problem = read_bytes(path)
            raw = normalise_bytes(rel, raw)
            if problem:
                yield [Document(doc_id, "", str(path), 0, problem=problem)]
                continue
            whole = decode_document(raw, doc_id, str(path), 0, MAX_FILE_BYTES)
            if whole.problem:
                yield [whole]
                continue
            for section, text in page_sections(rel, whole.text, renderer):
                pieces = chunk_paragraphs(text, chunk)
                suffix = f"{section}." if section else ""
                yield [Document(f"{doc_id}#{suffix}{i}", t, str(path), i) for i, t in enumerate(pieces)]


def open_count(target_bytes: int, per_package_bytes: int, packages: list[str]) -> int:
    """How many packages are read concurrently: more budget, more packages in the mix (never fewer than 2)."""
    wanted = math.ceil(target_bytes / max(per_package_bytes, 1))
    return max(1, min(len(packages), max(MIN_OPEN_PACKAGES, wanted)))


def interleave(
    sources: list[Iterator[list[Document]]], width: int, target_bytes: int, max_docs: int
) -> Iterator[Document]:
    """Round-robin over `width` open sources (one page each turn); the next source opens when one runs out. A source
    iterator's body (its download) runs only when it is first advanced, so budgets stop before unneeded downloads."""
    pending = list(reversed(sources))
    active: list[Iterator[list[Document]]] = []
    total = count = 0
    while active or pending:
        while len(active) < width and pending:
            active.append(pending.pop())
        for source in list(active):
            page = next(source, None)
            if page is None:
                active.remove(source)
                continue
            for doc in page:
                yield doc
                total += len(doc.text.encode("utf-8"))
                count += 1
                if budget_reached(total, count, target_bytes, max_docs):
                    return


def manual_files(root: Path, include: tuple[str, ...], exclude: tuple[str, ...]) -> list[Path]:
    """The package's manual files (sorted), without boilerplate and without symlinks (aliases of other pages)."""
    skip = BOILERPLATE + tuple(exclude)
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not path.is_file() or rel == ".unpacked":
            continue
        if any(fnmatchcase(rel, g) for g in include) and not any(fnmatchcase("/" + rel, g) for g in skip):
            found.append(path)
    return sorted(found)


def read_bytes(path: Path) -> tuple[bytes, str | None]:
    """A file's bytes, gunzipped when it ends in .gz; a broken archive or a huge file is a named problem."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        return b"", f"unreadable: {err} ({path} row 0)"
    if len(raw) > MAX_FILE_BYTES:
        return b"", f"too large: {len(raw)} bytes > {MAX_FILE_BYTES} ({path} row 0)"
    return raw, None


def normalise_bytes(rel: str, raw: bytes) -> bytes:
    """Format-level byte fixes before the UTF-8 check: info index/image cookies (NUL-BS-[...NUL-BS-]) are markup,
    and an HTML page that declares another charset is transcoded from it (undeclared bad bytes stay a problem)."""
    kind = page_kind(rel)
    if kind == "info":
        return re.sub(rb"\x00\x08\[[^\x00]*\x00\x08\]", b"", raw)
    if kind == "html":
        declared = re.search(rb"charset=[\"']?([A-Za-z0-9_-]+)", raw[:HTML_CHARSET_SNIFF_BYTES])
        charset = declared.group(1).decode("ascii").lower() if declared else "utf-8"
        if charset.replace("-", "").replace("_", "") not in ("utf8", "usascii", "ascii"):
            try:
                return raw.decode(charset).encode("utf-8")
            except (LookupError, UnicodeDecodeError):
                return raw
    return raw


def page_kind(rel: str) -> str:
    """html, man, info, pod or text, from the file name (a .gz suffix is ignored)."""
    name = rel[:-3] if rel.endswith(".gz") else rel
    if re.search(r"\.x?html?$", name):
        return "html"
    if re.search(r"/man/man\d[^/]*/[^/]+\.\d\w*$", name):
        return "man"
    if re.search(r"\.info(-\d+)?$", name):
        return "info"
    if name.endswith(".pod"):
        return "pod"
    return "text"


def page_sections(rel: str, text: str, man_renderer: str) -> list[tuple[str, str]]:
    """(section name, clean text) per page: one for most files, one per node for info files."""
    kind = page_kind(rel)
    if kind == "html":
        return [("", html_to_text(text))]
    if kind == "man":
        if re.match(r"\.so\s", text.lstrip()) and len(text) < 200:
            return []  # an alias page: `.so other.3` (the target page is read itself)
        return [("", man_to_text(text, man_renderer))]
    if kind == "info":
        return info_nodes(text)
    if kind == "pod":
        return [("", pod_to_text(text))]
    return [("", tidy(text))]


def tidy(text: str) -> str:
    text = re.sub(r"[ \t]+\n", "\n", text.replace("\r\n", "\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# --- HTML -------------------------------------------------------------------------------------------------------------

SKIP_TAGS = {"script", "style", "nav", "header", "footer", "head", "noscript", "svg", "form", "button", "template"}
# class/id/role tokens (whole tokens, not substrings) of navigation blocks in Sphinx, Read the Docs, DocBook, javadoc,
# mdBook, rustdoc and Scribble (Racket) pages.
NAV_TOKEN = re.compile(
    r"sphinxsidebar\w*|related|navbar|navigation|breadcrumbs?|wy-nav-side|wy-breadcrumbs|rst-footer-buttons|footer"
    r"|navheader|navfooter|navset\w*|tocset|menu-bar|headerlink|skip-nav|sub-nav|top-nav|nav-chapters"
    r"|nav-wrapper|nav-wide-wrapper|mobile-nav-chapters"
    # rustdoc: version/source links, "expand" toggles, and the trait/blanket impl lists repeated on every type page
    r"|rightside|since|hideme|src|anchor|(trait|synthetic|blanket)-implementations(-list)?|(synthetic-)?implementors(-list)?"
)
BLOCK_TAGS = {
    "p", "div", "section", "article", "main", "br", "li", "ul", "ol", "dl", "dt", "dd", "tr", "table", "pre",
    "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "figure", "caption",
}  # fmt: skip
VOID_TAGS = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "wbr"}


class _TextExtractor(HTMLParser):
    """Visible text with paragraph breaks at block elements; scripts, styles and navigation blocks are dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_tag: str | None = None
        self.skip_depth = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID_TAGS:
            if tag in ("br", "hr") and self.skip_tag is None:
                self.parts.append("\n")
            return
        if self.skip_tag is not None:
            self.skip_depth += tag == self.skip_tag
            return
        marks = " ".join((v or "") for k, v in attrs if k in ("class", "id", "role")).lower().split()
        if tag in SKIP_TAGS or any(NAV_TOKEN.fullmatch(m) for m in marks):
            self.skip_tag, self.skip_depth = tag, 1
            return
        if tag == "pre":
            self.pre += 1
        if tag in BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip_tag = None
            return
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag in BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self.skip_tag is None:
            self.parts.append(data.replace("\n", "\x00") if self.pre else re.sub(r"\s+", " ", data))


def html_to_text(source: str) -> str:
    """Prose of an HTML page (code blocks keep their lines)."""
    parser = _TextExtractor()
    parser.feed(source)
    parser.close()
    text = "".join(parser.parts).replace("\xa0", " ")
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).replace("\x00", "\n")
    return tidy(text)


# --- man pages --------------------------------------------------------------------------------------------------------


def man_to_text(source: str, renderer: str = "groff") -> str:
    """A rendered man page: groff (tables via tbl, no bold/underline escapes), or the pure-Python fallback."""
    if renderer == "groff":
        cmd = ["groff", "-t", "-man", "-Tutf8", "-Kutf8", "-P", "-cbou", "-rcR=1", "-rHY=0", f"-rLL={MAN_LINE_LENGTH}n"]
        proc = subprocess.run(
            cmd, input=source.encode("utf-8"), capture_output=True, check=False, timeout=GROFF_TIMEOUT_S
        )
        if proc.returncode == 0 and proc.stdout.strip():
            lines = proc.stdout.decode("utf-8", errors="replace").strip().splitlines()
            body = lines[1:-1] if len(lines) > 2 else lines  # the page header and footer lines
            return tidy("\n".join(unjustify(line) for line in body))
    return man_macros_to_text(source)


def unjustify(line: str) -> str:
    """A groff output line without the page's base indent and without the extra spaces of full justification."""
    if line.startswith(MAN_BASE_INDENT):
        line = line[len(MAN_BASE_INDENT) :]
    indent = len(line) - len(line.lstrip(" "))
    return line[:indent] + re.sub(r"(?<=\S) {2,}(?=\S)", " ", line[indent:])


MAN_FONT_MACROS = ("B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "SM", "SB")
_MAN_ESCAPES = {
    r"\-": "-",
    r"\(em": "\u2014",
    r"\(en": "\u2013",
    r"\(aq": "'",
    r"\(dq": '"',
    r"\(lq": "\u201c",
    r"\(rq": "\u201d",
    r"\(bu": "\u2022",
    r"\(co": "\u00a9",
    r"\(mu": "\u00d7",
    r"\e": "\\",
    r"\&": "",
    r"\|": "",
    r"\^": "",
    r"\ ": " ",
    r"\~": " ",
    r"\:": "",
    r"\c": "",
}


def man_macros_to_text(source: str) -> str:
    """Man macros to text without groff: headings and paragraphs kept, filled lines joined (no-fill blocks kept as
    lines), font changes, comments and other requests dropped."""
    paragraphs: list[list[str]] = [[]]
    fill = True

    def brk() -> None:
        if paragraphs[-1]:
            paragraphs.append([])

    for line in source.splitlines():
        if re.match(r"^[.'](\\\"|\s*$)", line):
            continue  # comment or empty request
        if not line.startswith((".", "'")):
            paragraphs[-1].append(line if fill else line + "\n")
            continue
        macro, _, rest = line[1:].strip().partition(" ")
        rest = rest.strip()
        if macro in ("nf", "EX"):
            brk()
            fill = False
        elif macro in ("fi", "EE"):
            brk()
            fill = True
        elif macro in ("SH", "SS"):
            brk()
            paragraphs[-1].append(rest.strip('"'))
            brk()
        elif macro in ("PP", "P", "LP", "TP", "sp", "br", "IP"):
            brk()
            if macro == "IP" and rest:
                paragraphs[-1].append(rest.split('"')[1] if rest.startswith('"') else rest.split()[0])
                brk()
        elif macro in MAN_FONT_MACROS and rest:
            words = [q or w for q, w in re.findall(r'"([^"]*)"|(\S+)', rest)]
            paragraphs[-1].append(" ".join(words) if macro in ("B", "I", "SM", "SB") else "".join(words))
    text = "\n\n".join(_join_filled(p) for p in paragraphs if p)
    text = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", text)  # font changes
    text = re.sub(r"\\s[+-]?\d", "", text)  # size changes
    for escape, repl in _MAN_ESCAPES.items():
        text = text.replace(escape, repl)
    text = re.sub(r"\\\((..)", "", text)  # remaining special characters
    text = re.sub(r"\\\*(\(..|\[[^\]]*\]|.)", "", text)  # strings
    return tidy(text)


def _join_filled(lines: list[str]) -> str:
    """Filled text lines joined by spaces; no-fill lines (ending in a newline) kept as they are."""
    return "".join(line if line.endswith("\n") else line + " " for line in lines).strip()


# --- info -------------------------------------------------------------------------------------------------------------

INFO_SKIP_NODES = re.compile(r"(Index|Copying|GNU Free Documentation License|Top)$", re.I)


def info_nodes(source: str) -> list[tuple[str, str]]:
    """(node name, text) per info node; node headers, menus, index and license nodes and the tag table dropped."""
    nodes = []
    for part in source.split("\x1f"):
        part = part.lstrip("\n")
        header, _, body = part.partition("\n")
        match = re.search(r"Node: ([^,\t]+)", header)
        if not match or INFO_SKIP_NODES.search(match.group(1).strip()):
            continue
        body = re.sub(r"^\* Menu:\n(?:\*.*\n|[ \t]+.*\n|\n(?=\*))*", "", body, flags=re.M)
        body = re.sub(r"\*[Nn]ote ([^:]+)::", r"\1", body)
        body = re.sub(r"\*[Nn]ote ([^:]+): [^.,;]+[.,;]", r"\1", body)
        text = tidy(body)
        if text:
            nodes.append((re.sub(r"\s+", "_", match.group(1).strip()), text))
    return nodes


# --- POD --------------------------------------------------------------------------------------------------------------

_POD_ENTITIES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&"}


def pod_to_text(source: str) -> str:
    """Perl POD to text: headings and items kept as lines, other directives dropped, formatting codes unwrapped."""
    lines = []
    for line in source.splitlines():
        if line.startswith("="):
            directive, _, rest = line[1:].partition(" ")
            if directive.startswith(("head", "item")) and rest.strip():
                lines.extend(["", rest.strip(), ""])
            elif directive.startswith(("head", "item", "over", "back", "cut", "pod", "begin", "end", "for")):
                lines.append("")
            continue
        lines.append(line)
    text = "\n".join(lines)
    text = re.sub(r"[A-Z]<<+\s+(.*?)\s+>>+", r"\1", text, flags=re.S)
    for _ in range(4):  # nested codes
        text = re.sub(r"E<(\w+)>", lambda m: _POD_ENTITIES.get(m.group(1), m.group(0)), text)
        text = re.sub(r"L<([^<>|]*)\|[^<>]*>", r"\1", text)
        text = re.sub(r"[BICFSLXZ]<([^<>]*)>", r"\1", text)
    return tidy(text)


# --- licenses ---------------------------------------------------------------------------------------------------------


def license_package(cache_dir: str, package: str) -> str:
    """The package whose copyright file covers `package`: itself, or the target of its usr/share/doc/<pkg> symlink
    (manpages-dev -> manpages, gimp-help-en -> gimp-help-common)."""
    doc = cache_root(cache_dir) / "debian" / package / "usr/share/doc" / package
    if doc.is_symlink():
        target = Path(os.readlink(doc)).name
        if re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", target):
            return target
    return package


def license_file(cache_dir: str, package: str) -> str:
    owner = license_package(cache_dir, package)
    return f"debian:{owner}:usr/share/doc/{owner}/copyright"


def copyright_licenses(cache_dir: str, package: str) -> list[str]:
    """The `License:` names of a downloaded package's DEP-5 copyright file; for a free-form file, the license names
    it mentions; empty when the package is not downloaded."""
    owner = license_package(cache_dir, package)
    root = cache_root(cache_dir) / "debian" / owner / "usr/share/doc"
    files = sorted(p for p in root.glob("*/copyright") if p.is_file()) if root.is_dir() else []
    names: list[str] = []
    for path in files:
        for match in re.finditer(r"^License: *(\S[^\n]*)", path.read_text(encoding="utf-8", errors="replace"), re.M):
            if match.group(1).strip() not in names:
                names.append(match.group(1).strip())
    if files and not names:
        text = " ".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
        names = [f"free-form: {n}" for n in FREE_FORM_LICENSES if n.lower() in " ".join(text.split()).lower()]
    return names
