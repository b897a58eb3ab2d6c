"""Math domain text from Debian packages: the English comments of the Metamath set.mm database (`metamath`) and the
prose of computer-algebra manuals (`math_manuals`: GAP, PARI/GP, Maxima, SymPy).

Why: prose *about* mathematics (definitions, theorems explained in words, with readable notation) at the 10 MB scale,
from packages with a license file. Formal statements, proofs, code examples and tables are dropped: they are not prose.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from functools import partial
from html.parser import HTMLParser
from pathlib import Path

from tasks.core.errors import DataError
from tasks.data.sources import Document, register
from tasks.data.sources.debian_docs import DebianSource
from tasks.data.sources.fetch import debian_package

METAMATH_DIR = "usr/share/metamath/databases"
METAMATH_FILES = ("set.mm",)
# A comment holding a line of one of these repeated patterns is a section header (part, chapter, section, subsection).
_MM_DECORATIONS = (b"####", b"#*#*", b"=-=-", b"-.-.")
# Bookkeeping parentheticals of set.mm comments (who contributed or shortened what): not mathematics.
_MM_BOOKKEEPING = re.compile(
    r"\((?:Contributed|Revised|Proof shortened|Proof modification|New usage|Modified|Shortened|Proof rewritten|"
    r"Revision|Moved|Adapted|Put in closed form|Removed dependency|Avoid|Changed|Recovered|Generalized)[^()]*\)",
)


@register("metamath")
class MetamathSource(DebianSource):
    license = "CC0-1.0 (set.mm of Debian package metamath-databases, see its copyright file)"
    description = (
        "English comments of the Metamath set.mm formal-mathematics database (ZFC set theory built from logic up), "
        "grouped by section, with in-comment formulas rendered in Unicode; formal statements and proofs dropped"
    )
    packages = ("metamath-databases",)

    def documents(self) -> Iterator[Document]:
        folder = debian_package(self.context.cache_dir, self.package_list()[0]) / METAMATH_DIR
        yield from self.budgeted(self._sections(folder))

    def _sections(self, folder: Path) -> Iterator[tuple[Document, int]]:
        for name in self.options.get("files", METAMATH_FILES):
            path = folder / name
            if not path.is_file():
                raise DataError(f"{path}: not in metamath-databases; package layout changed or fix options.files")
            raw = path.read_bytes()
            symbols = metamath_symbols(raw.decode("utf-8", errors="replace"))
            for row, (title, body) in enumerate(metamath_sections(raw)):
                key = f"{name}/{row:05d}"
                yield from self.text_pieces(key, body, str(path), row, partial(_mm_clean, title=title, symbols=symbols))


def metamath_sections(raw: bytes) -> Iterator[tuple[str, bytes]]:
    """(section title, its comments' raw bytes joined by blank lines) for each section of a .mm file, in order.
    A header comment (title between decoration lines) starts a section; what follows its last decoration line is
    the section's introduction. Parser directives (`$j`) and the typesetting table (`$t`) are not prose."""
    title, parts = "", []
    for match in re.finditer(rb"\$\((.*?)\$\)", raw, flags=re.S):
        body = match.group(1)
        if body.lstrip()[:2] in (b"$j", b"$t"):
            continue
        lines = body.split(b"\n")
        marks = [i for i, line in enumerate(lines) if line.strip().startswith(_MM_DECORATIONS)]
        if not marks:
            parts.append(body.strip())
            continue
        if parts:
            yield title, b"\n\n".join(parts)
        heading = [ln.strip() for ln in lines[marks[0] + 1 : marks[-1]] if ln.strip() and marks[0] != marks[-1]]
        title = heading[0].decode("utf-8", errors="replace") if heading else ""
        intro = b"\n".join(lines[marks[-1] + 1 :]).strip()
        parts = [intro] if intro else []
    if parts:
        yield title, b"\n\n".join(parts)


def metamath_symbols(source: str) -> dict[str, str]:
    """Metamath token -> Unicode, from the `althtmldef` lines of the database's own `$t` typesetting table."""
    table = re.search(r"\$\(\s*\$t(.*?)\$\)", source, flags=re.S)
    if not table:
        return {}
    text = re.sub(r"/\*.*?\*/", "", table.group(1), flags=re.S)
    quoted = r"(?:\"(?:[^\"]|\"\")*\"|'(?:[^']|'')*')"
    symbols = {}
    for m in re.finditer(rf"althtmldef\s+({quoted})\s+as\s+((?:{quoted}\s*\+?\s*)+);", text):
        token = _mm_unquote(m.group(1))
        value = "".join(_mm_unquote(q) for q in re.findall(quoted, m.group(2)))
        symbols[token] = html.unescape(re.sub(r"<[^>]*>", "", value)).strip()
    return symbols


def _mm_unquote(quoted: str) -> str:
    q = quoted[0]
    return quoted[1:-1].replace(q + q, q)


def _mm_clean(text: str, title: str, symbols: dict[str, str]) -> str:
    """Readable prose from set.mm comments: formulas `` ` ph -> ps ` `` in Unicode, `~ label` references as the
    label, bookkeeping parentheticals and HTML markup dropped, each comment one paragraph."""
    text = text.replace("``", "\x00")  # a doubled backquote is a literal one
    pieces = text.split("`")
    for i in range(1, len(pieces), 2):  # odd pieces are math strings
        pieces[i] = " ".join(symbols.get(tok, tok) for tok in pieces[i].split())
    text = "".join(pieces).replace("\x00", "`")
    text = re.sub(r"~\s+(\S+)", r"\1", text)
    text = re.sub(r"</?[A-Za-z][^>]*>", "", text)
    paragraphs = [
        re.sub(r" {2,}", " ", _MM_BOOKKEEPING.sub("", re.sub(r"\s+", " ", p))).strip()
        for p in re.split(r"\n\s*\n", text)
    ]
    body = "\n\n".join(p for p in paragraphs if p)
    return f"{title}\n\n{body}" if title and body else body


# ----------------------------------------------------------------------------------------------------------------
# Manuals of computer-algebra systems

# (package, folder inside it, file glob, format); the formats are cleaned by _CLEANERS below.
MANUALS = (
    ("gap-doc", "usr/share/gap/doc", "*/chap[0-9]*.html", "html"),
    ("pari-doc", "usr/share/pari/doc", "*.tex", "pari-tex"),
    ("maxima-doc", "usr/share/doc/maxima-doc/html", "maxima_*.html", "html"),
    ("python-sympy-doc", "usr/share/doc/python-sympy-doc/html", "**/*.html", "html"),
)
# Files that are navigation, indexes, macros or quick-reference tables rather than prose.
MANUAL_SKIP = re.compile(
    r"(_mj\.html|chap0\.html|_singlepage|genindex|py-modindex|search\.html|_modules/|_sources/|maxima_toc|maxima_abt|"
    r"macro\.tex|macs\.tex|paricfg|refcard|users\.tex|appb\.tex|translations)"
)
# HTML elements whose content is not prose: code, navigation, tables, scripts.
HTML_SKIP_TAGS = frozenset({"head", "script", "style", "pre", "table", "nav", "form", "button", "svg"})
HTML_SKIP_CLASSES = frozenset(
    {
        "chlinktop",
        "chlinkprevnexttop",
        "chlinkbot",
        "chlinkprevnextbot",
        "ChapSects",
        "example",
        "header",
        "menu",
        "contents",
        "shortcontents",
        "sphinxsidebar",
        "related",
        "footer",
        "headerlink",
        "highlight",
        "doctest",
        "viewcode-link",
        "toctree-wrapper",
        "copybutton",
        "categorybox",
        "copiable-anchor",
    }
)
_HTML_BLOCKS = frozenset(
    {"p", "div", "br", "li", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "section", "dl", "ul"}
)
_HTML_VOID = frozenset({"br", "img", "hr", "meta", "link", "input", "area", "base", "col", "wbr", "source"})


class _ProseParser(HTMLParser):
    """Text of an HTML page without the elements in HTML_SKIP_TAGS / HTML_SKIP_CLASSES; a math image (Sphinx
    `img.math`) becomes its alt text, the LaTeX of the formula."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip: list[str] = []  # the tag that opened each skipped region, with its same-name nesting below
        self.depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip:
            if tag == self.skip[-1] and tag not in _HTML_VOID:
                self.depth += 1
            return
        classes = set((dict(attrs).get("class") or "").split())
        if tag in HTML_SKIP_TAGS or classes & HTML_SKIP_CLASSES or dict(attrs).get("id") == "mathjaxlink":
            if tag not in _HTML_VOID:
                self.skip, self.depth = [tag], 0
            return
        if tag == "img" and "math" in classes:
            self.out.append(f" {dict(attrs).get('alt') or ''} ")
        elif tag in _HTML_BLOCKS:
            self.out.append("\n\n" if tag in ("p", "div", "dd", "dt", "li") or tag.startswith("h") else "\n")

    def handle_endtag(self, tag: str) -> None:
        if self.skip:
            if tag == self.skip[-1]:
                if self.depth == 0:
                    self.skip = []
                else:
                    self.depth -= 1
            return
        if tag in _HTML_BLOCKS:
            self.out.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)


def html_to_text(source: str) -> str:
    """Prose of a manual page: code, navigation and tables removed, whitespace collapsed, paragraphs kept. Where the
    page marks its main region (`role="main"`, Sphinx themes), only that region is read: the rest is navigation."""
    main = re.search(r"<(\w+)[^>]*\brole=\"main\"", source)
    if main:
        end = source.rfind(f"</{main.group(1)}>")
        source = source[main.start() : end if end > main.start() else len(source)]
    parser = _ProseParser()
    parser.feed(source)
    parser.close()
    text = "".join(parser.out).replace("\xa0", " ")
    paragraphs = [re.sub(r"[ \t\r\n]+", " ", p).strip() for p in re.split(r"\n[ \t]*\n", text)]
    return "\n\n".join(p for p in paragraphs if p)


# TeX control words -> Unicode, so formulas stay readable once the markup is gone.
TEX_SYMBOLS = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε", "zeta": "ζ",
    "eta": "η", "theta": "θ", "iota": "ι", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ", "pi": "π",
    "rho": "ρ", "sigma": "σ", "tau": "τ", "phi": "φ", "varphi": "φ", "chi": "χ", "psi": "ψ", "omega": "ω",
    "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ", "Lambda": "Λ", "Xi": "Ξ", "Pi": "Π", "Sigma": "Σ", "Phi": "Φ",
    "Psi": "Ψ", "Omega": "Ω", "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥", "ne": "≠", "neq": "≠", "in": "∈",
    "notin": "∉", "subset": "⊂", "subseteq": "⊆", "cup": "∪", "cap": "∩", "times": "×", "cdot": "·", "cdots": "⋯",
    "ldots": "…", "dots": "…", "infty": "∞", "to": "→", "rightarrow": "→", "mapsto": "↦", "Rightarrow": "⇒",
    "sum": "∑", "prod": "∏", "int": "∫", "sqrt": "√", "pm": "±", "equiv": "≡", "approx": "≈", "sim": "∼",
    "mid": "|", "nmid": "∤", "otimes": "⊗", "oplus": "⊕", "partial": "∂", "forall": "∀", "exists": "∃",
    "Z": "ℤ", "Q": "ℚ", "R": "ℝ", "C": "ℂ", "N": "ℕ", "F": "𝔽", "emptyset": "∅", "circ": "∘", "wedge": "∧",
    "vee": "∨", "neg": "¬", "langle": "⟨", "rangle": "⟩", "lfloor": "⌊", "rfloor": "⌋", "lceil": "⌈", "rceil": "⌉",
    "log": "log", "exp": "exp", "sin": "sin", "cos": "cos", "tan": "tan", "det": "det", "deg": "deg",
    "gcd": "gcd", "max": "max", "min": "min", "lim": "lim", "mod": "mod", "bmod": "mod", "pmod": "mod",
    "quad": " ", "qquad": " ", "colon": ":", "backslash": "\\",
}  # fmt: skip
# PARI manual macros whose argument is text (kept) or an index/cross-reference entry (dropped).
_PARI_KEEP = ("kbd", "var", "emph", "idx", "tet", "misctitle", "subsec", "section", "subsubsec", "chapter", "text",
              "typ", "b", "it", "bf", "tt", "sl", "goth", "teb", "tev", "key", "url", "fl")  # fmt: skip
_PARI_DROP = ("kbdsidx", "sidx", "label", "secref", "ref", "footnote", "input")


def pari_tex_to_text(source: str) -> str:
    """Prose of the PARI/GP manual (plain TeX with PARI macros): \\bprog..\\eprog examples, C prototypes and
    index entries dropped, formulas kept with their symbols in Unicode."""
    text = re.sub(r"\\bprog.*?[@\\]eprog", "", source, flags=re.S)
    text = re.sub(r"\\begin\{verbatim\}.*?\\end\{verbatim\}", "", text, flags=re.S)
    text = re.sub(r"\\(begin|end)\{[^{}]*\}", "", text)
    text = re.sub(r"(?<!\\)%.*$", "", text, flags=re.M)
    text = re.sub(r"^The library syntax is.*?(?:\n\n|\Z)", "", text, flags=re.M | re.S)
    text = re.sub(r"\\fun\{[^{}]*\}\{([^{}]*)\}\{([^{}]*)\}", r"\1(\2)", text)
    return tex_to_text(text, keep=_PARI_KEEP, drop=_PARI_DROP)


def tex_to_text(text: str, keep: tuple[str, ...], drop: tuple[str, ...]) -> str:
    """Plain text from TeX: `keep` commands give their argument, `drop` commands vanish with theirs, known symbols
    become Unicode, other control words are removed (their arguments stay)."""
    for _ in range(3):  # nested commands
        text = re.sub(r"\\(" + "|".join(k for k in drop) + r")\*?(\[[^\]]*\])?\{[^{}]*\}", "", text)
        text = re.sub(r"\\(" + "|".join(k for k in keep) + r")\*?(\[[^\]]*\])?\{([^{}]*)\}", r"\3", text)
    text = re.sub(r"\\([a-zA-Z]+)", lambda m: TEX_SYMBOLS.get(m.group(1), " " if len(m.group(1)) > 1 else ""), text)
    text = re.sub(r"\\([#$%&_{}^~,;!])", r"\1", text)
    text = text.replace("\\\\", " ").replace("~", " ").replace("``", '"').replace("''", '"').replace("$", "")
    text = re.sub(r"[{}]", "", text)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n[ \t]+", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# A manual file is read whole and cut into pieces (the pieces are the documents), so a chapter file may exceed
# data.max_doc_bytes; larger files than this are still quarantined unread.
MANUAL_MAX_FILE_BYTES = 4_000_000

_CLEANERS: dict[str, Callable[[str], str]] = {"html": html_to_text, "pari-tex": pari_tex_to_text}


@register("math_manuals")
class MathManualsSource(DebianSource):
    license = "GPL-2+ (gap-doc, pari-doc), GPL (maxima-doc), BSD-3-clause (python-sympy-doc); see each copyright file"
    description = (
        "reference manuals and tutorials of the GAP, PARI/GP, Maxima and SymPy computer-algebra systems: prose "
        "about groups, number theory, calculus and algebra, with code examples, tables and navigation removed "
        "(software manuals, not textbooks)"
    )
    packages = tuple(m[0] for m in MANUALS)

    def documents(self) -> Iterator[Document]:
        yield from self.budgeted(self._pieces())

    def _pieces(self) -> Iterator[tuple[Document, int]]:
        wanted = set(self.package_list())
        limit = int(self.options.get("max_file_bytes", MANUAL_MAX_FILE_BYTES))
        for package, folder, pattern, fmt in MANUALS:
            if package not in wanted:
                continue
            root = debian_package(self.context.cache_dir, package) / folder
            files = [p for p in sorted(root.glob(pattern)) if not MANUAL_SKIP.search(p.as_posix())]
            if not files:
                raise DataError(f"{root}: no {pattern} files in {package}; package layout changed")
            for path in files:
                key = f"{package}/{path.relative_to(root).as_posix()}"
                yield from self.text_pieces(key, path.read_bytes(), str(path), 0, _CLEANERS[fmt], limit)
