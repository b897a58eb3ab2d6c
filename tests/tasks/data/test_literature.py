"""The restricted R lazy-load reader on tiny fake .rdx/.rdb files written here in R's XDR format (character vectors
read, anything else refused), and the literature adapters on fake unpacked Debian packages (no network)."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import pytest

from tasks.core.errors import DataError
from tasks.data.sources import SourceContext
from tasks.data.sources.literature import AUSTEN_INDEX, CRAWL_DESCRIPT, CrawlLoreSource, JaneAustenSource
from tasks.data.sources.rdata import character_vectors, lazyload_index, unserialize
from tests.tasks.data.fake_packages import fake_debian_package

# --- a minimal R serializer (XDR, version 3), for fixtures only ---------------------------------------------------

UTF8, ASCII = 1 << 3, 1 << 6


def _int(n: int) -> bytes:
    return struct.pack(">i", n)


def _flags(kind: int, attr: bool = False, tag: bool = False, levels: int = 0) -> bytes:
    return _int(kind | (attr << 9) | (tag << 10) | (levels << 12))


def chars(s: bytes | None, levels: int = UTF8) -> bytes:
    return _flags(9) + _int(-1) if s is None else _flags(9, levels=levels) + _int(len(s)) + s


class Writer:
    """Symbols are written once and referred back to (REFSXP) after, as R does."""

    def __init__(self) -> None:
        self.symbols: list[bytes] = []

    def symbol(self, name: bytes) -> bytes:
        if name in self.symbols:
            return _int(255 | ((self.symbols.index(name) + 1) << 8))
        self.symbols.append(name)
        return _flags(1) + chars(name, ASCII)

    def attributes(self, attrs: dict[bytes, bytes]) -> bytes:
        cells = b"".join(_flags(2, tag=True) + self.symbol(tag) + value for tag, value in attrs.items())
        return cells + _flags(254)

    def vector(self, kind: int, items: list[bytes], names: list[bytes] | None = None) -> bytes:
        out = _flags(kind, attr=names is not None) + _int(len(items)) + b"".join(items)
        if names is not None:
            out += self.attributes({b"names": self.strings(names)})
        return out

    def strings(self, values: list[bytes | None]) -> bytes:
        return self.vector(16, [chars(v) for v in values])

    def ints(self, values: list[int], kind: int = 13) -> bytes:
        return _flags(kind) + _int(len(values)) + b"".join(_int(v) for v in values)


def serialization(body: bytes) -> bytes:
    return b"X\n" + _int(3) + _int(0x040201) + _int(0x030500) + _int(5) + b"UTF-8" + body


def write_lazyload(rdx: Path, objects: dict[str, bytes]) -> None:
    """An R lazy-load database: `objects` (serialized bodies) as zlib blocks in the .rdb, indexed by the .rdx."""
    blocks, entries, offset = b"", [], 0
    for body in objects.values():
        data = serialization(body)
        block = struct.pack(">I", len(data)) + zlib.compress(data)
        entries.append((offset, len(block)))
        blocks += block
        offset += len(block)
    w = Writer()
    variables = w.vector(19, [w.ints(list(e)) for e in entries], [n.encode() for n in objects])
    index = w.vector(
        19,
        [variables, w.vector(19, []), w.ints([1], kind=10)],
        [b"variables", b"references", b"compressed"],
    )
    rdx.parent.mkdir(parents=True, exist_ok=True)
    rdx.write_bytes(gzip.compress(serialization(index)))
    rdx.with_suffix(".rdb").write_bytes(blocks)


EMMA = [
    b"EMMA",
    b"",
    b"CHAPTER I",
    b"",
    b"Emma Woodhouse, handsome, clever, and rich,",
    b"seemed to unite.",
    None,
    b"End.",
]
PERSUASION = [b"Persuasion", b"", "Sir Walter Elliot, of Kellynch Hall, caf\u00e9.".encode()]


def test_reads_character_vectors_with_index(tmp_path: Path) -> None:
    rdx = tmp_path / "Rdata.rdx"
    w = Writer()
    write_lazyload(rdx, {"emma": w.strings(EMMA), "persuasion": Writer().strings(PERSUASION)})
    entries, compression = lazyload_index(rdx)
    assert list(entries) == ["emma", "persuasion"] and compression == 1
    assert character_vectors(rdx) == {"emma": EMMA, "persuasion": PERSUASION}


def test_refuses_other_object_types(tmp_path: Path) -> None:
    w = Writer()
    closure = _flags(3) + _flags(254)  # a function: never read
    write_lazyload(tmp_path / "a.rdx", {"ok": w.strings([b"x"]), "f": closure})
    with pytest.raises(DataError, match=r"refused R object type 3 \(closure\)"):
        character_vectors(tmp_path / "a.rdx")
    doubles = _flags(14) + _int(1) + struct.pack(">d", 1.5)
    write_lazyload(tmp_path / "b.rdx", {"d": doubles})
    with pytest.raises(DataError, match="double vector"):
        character_vectors(tmp_path / "b.rdx")
    write_lazyload(tmp_path / "c.rdx", {"l": Writer().vector(19, [Writer().strings([b"x"])])})
    with pytest.raises(DataError, match="'l' is a list vector, not a character vector"):
        character_vectors(tmp_path / "c.rdx")
    environment = _flags(4)
    with pytest.raises(DataError, match="environment"):
        unserialize(serialization(Writer().vector(19, [environment])), "env")


def test_refuses_bad_streams(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not an R XDR serialization"):
        unserialize(b"A\n1\n", "ascii")
    with pytest.raises(DataError, match="truncated"):
        unserialize(serialization(_flags(16) + _int(3) + chars(b"a")), "short")
    nested = serialization(b"".join(_flags(19) + _int(1) for _ in range(100)) + _flags(254))
    with pytest.raises(DataError, match="nesting deeper"):
        unserialize(nested, "deep")
    rdx = tmp_path / "x.rdx"
    write_lazyload(rdx, {"emma": Writer().strings(EMMA)})
    rdx.with_suffix(".rdb").write_bytes(rdx.with_suffix(".rdb").read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        character_vectors(rdx)


# --- adapters --------------------------------------------------------------------------------------------------------


def context(cache: Path, target_bytes: int = 10**12) -> SourceContext:
    return SourceContext(str(cache), target_bytes, 10**6, 10**6, seed=0, chunk_chars=60)


@pytest.fixture
def austen(tmp_path: Path) -> Path:
    root = fake_debian_package(tmp_path, "r-cran-janeaustenr")
    write_lazyload(root / AUSTEN_INDEX, {"emma": Writer().strings(EMMA), "persuasion": Writer().strings(PERSUASION)})
    return tmp_path


def test_jane_austen_pieces(austen: Path) -> None:
    src = JaneAustenSource("creative", "owner", {"novels": ["emma", "persuasion"]}, context(austen))
    docs = list(src.documents())
    assert all(d.problem is None and d.id.startswith("creative/") for d in docs)
    assert len({d.id for d in docs}) == len(docs)
    emma = "\n\n".join(d.text for d in docs if d.meta["title"] == "Emma")
    assert emma == "EMMA\n\nCHAPTER I\n\nEmma Woodhouse, handsome, clever, and rich,\nseemed to unite.\n\nEnd."
    assert max(len(d.text) for d in docs) <= 60  # a long paragraph is cut between lines
    assert any("café" in d.text for d in docs if d.meta["title"] == "Persuasion")
    assert src.origins() == {"debian:r-cran-janeaustenr"}
    prov = src.provenance()
    assert prov["debian_packages"] == {"r-cran-janeaustenr": "r-cran-janeaustenr_1.0-1_all.deb"}
    assert prov["license_files"] == ["usr/share/doc/r-cran-janeaustenr/copyright"]


def test_jane_austen_missing_novel_and_budget(austen: Path) -> None:
    with pytest.raises(DataError, match="no novel"):
        list(JaneAustenSource("creative", "owner", {}, context(austen)).documents())
    with pytest.raises(DataError, match="choose from"):
        JaneAustenSource("creative", "owner", {"novels": ["ulysses"]}, context(austen)).novels()
    src = JaneAustenSource("creative", "owner", {"novels": ["emma"]}, context(austen, target_bytes=1))
    assert len(list(src.documents())) == 1


def test_jane_austen_bad_bytes_become_a_problem(tmp_path: Path) -> None:
    root = fake_debian_package(tmp_path, "r-cran-janeaustenr")
    bad = Writer().vector(16, [chars(b"caf\xe9 latin-1 marked as UTF-8")])
    write_lazyload(root / AUSTEN_INDEX, {"emma": bad})
    docs = list(JaneAustenSource("creative", "owner", {"novels": ["emma"]}, context(tmp_path)).documents())
    assert len(docs) == 1 and "not UTF-8" in docs[0].problem


CRAWL_MONSTERS = b"""# comment for developers
%%%%
__suffix_examine

engine snippet
%%%%
Agnes

This spriggan is aged and <lightred>weathered</lightred> from years of travel.
%%%%
"""


def test_crawl_lore(tmp_path: Path) -> None:
    descript = fake_debian_package(tmp_path, "crawl-common") / CRAWL_DESCRIPT
    descript.mkdir(parents=True)
    (descript / "monsters.txt").write_bytes(CRAWL_MONSTERS)
    (descript / "gods.txt").write_bytes(b"%%%%\nAshenzari\n\nThe shackled god.\n%%%%\nbroken\n\n\xff\n%%%%\n")
    ctx = SourceContext(str(tmp_path), 10**12, 10**6, 10**6, seed=0, chunk_chars=4000)
    src = CrawlLoreSource("creative", "owner", {"files": ["monsters", "gods"]}, ctx)
    docs = {d.id: d for d in src.documents()}
    clean = {k: d.text for k, d in docs.items() if d.problem is None}
    assert clean == {
        "creative/monsters/2#0": "Agnes\n\nThis spriggan is aged and weathered from years of travel.",
        "creative/gods/1#0": "Ashenzari\n\nThe shackled god.",
    }
    assert [d.id for d in docs.values() if d.problem] == ["creative/gods/2"]
    with pytest.raises(DataError, match="missing"):
        list(CrawlLoreSource("creative", "owner", {"files": ["quotes"]}, ctx).documents())
