"""A restricted reader for R's lazy-load data (`Rdata.rdx` index + `Rdata.rdb` blocks) that returns character vectors.

Why: R packages in Debian ship data sets (e.g. the janeaustenr novels) only as R serializations; R itself is not on
the build machine and nothing fetched may run. R's format (XDR, `serialize()` versions 2 and 3) is read here for the
few types plain data needs: character, integer and logical vectors, generic lists, and the attribute pairlists and
symbols that name them. Everything else (closures, environments, promises, bytecode, ALTREP, external pointers, ...)
is refused with a DataError naming the file, so a crafted file can at most be declined, never run or resolved.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.errors import DataError

MAX_BLOCK_BYTES = 512 * 1024 * 1024  # one decompressed object; a larger claim is refused (decompression bomb)
MAX_DEPTH = 64  # nesting of lists/pairlists; deeper is refused, not recursed into
NA_INTEGER = -(2**31)

# SEXP type codes (R Internals, "Serialization formats")
SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, STRSXP, VECSXP = 1, 2, 9, 10, 13, 16, 19
NILVALUE_SXP, REFSXP = 254, 255
# CHARSXP encoding bits in the flags' `levels`
LATIN1_MASK, UTF8_MASK, BYTES_MASK, ASCII_MASK = 1 << 2, 1 << 3, 1 << 1, 1 << 6
TYPE_NAMES = {
    0: "NULL",
    3: "closure",
    4: "environment",
    5: "promise",
    6: "language object",
    7: "special function",
    8: "builtin function",
    14: "double vector",
    15: "complex vector",
    17: "dot-dot-dot",
    20: "expression vector",
    21: "bytecode",
    22: "external pointer",
    23: "weak reference",
    24: "raw vector",
    25: "S4 object",
    238: "ALTREP object",
    241: "base environment",
    242: "empty environment",
    247: "base namespace",
    253: "global environment",
}


@dataclass
class RVector:
    """An R vector: `kind` ('character', 'integer', 'logical' or 'list'), its values and its attributes by name.
    Character elements are UTF-8 bytes (None for NA): undecodable text stays bytes for the caller to name."""

    kind: str
    values: list
    attributes: dict[str, RVector] = field(default_factory=dict)

    def names(self) -> list[str]:
        names = self.attributes.get("names")
        return [(v or b"").decode("utf-8", "replace") for v in names.values] if names else []


class _Reader:
    """One serialized object (XDR format), read with the types above only."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where
        self.refs: list[str] = []  # symbols seen, for REFSXP back-references
        self.encoding = "latin-1"  # strings of unknown encoding in a version-2 stream

    def fail(self, what: str) -> DataError:
        return DataError(f"{self.where}: {what} (byte {self.pos}); only plain character/integer/logical data is read")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"truncated: {n} bytes wanted")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:  # long vector: two more ints
            upper, lower = struct.unpack(">II", self.take(8))
            n = (upper << 32) + lower
        if n < 0 or n > len(self.data):
            raise self.fail(f"impossible length {n}")
        return n

    def header(self) -> None:
        if self.take(2) != b"X\n":
            raise self.fail("not an R XDR serialization (expected 'X\\n')")
        version = self.int()
        self.take(8)  # writer's R version, minimal reader version
        if version == 3:
            self.encoding = self.take(self.int()).decode("ascii", "replace").lower() or "utf-8"
        elif version != 2:
            raise self.fail(f"serialization version {version} is not 2 or 3")

    def item(self, depth: int = 0) -> RVector | str | list | None:
        if depth > MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH}")
        flags = self.int()
        kind, levels = flags & 0xFF, flags >> 12
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind == NILVALUE_SXP:
            return None
        if kind == REFSXP:
            index = (flags >> 8) or self.int()
            if not 1 <= index <= len(self.refs):
                raise self.fail(f"reference {index} to an object not read")
            return self.refs[index - 1]
        if kind == SYMSXP:
            name = self.item(depth + 1)
            if not isinstance(name, bytes):
                raise self.fail("a symbol without a name")
            self.refs.append(name.decode("utf-8", "replace"))
            return self.refs[-1]
        if kind == LISTSXP:
            return self.pairlist(has_attr, has_tag, depth)
        if kind == CHARSXP:
            return self.chars(levels)
        if kind in (STRSXP, INTSXP, LGLSXP, VECSXP):
            vector = self.vector(kind, depth)
            if has_attr:
                vector.attributes = self.attributes(depth)
            return vector
        raise self.fail(f"refused R object type {kind} ({TYPE_NAMES.get(kind, 'unknown')})")

    def pairlist(self, has_attr: bool, has_tag: bool, depth: int) -> list[tuple[str, object]]:
        """A pairlist (attributes), read as (tag, value) cells; the chain is followed in a loop, not recursion."""
        cells = []
        while True:
            if has_attr:
                self.attributes(depth)
            tag = self.item(depth + 1) if has_tag else ""
            cells.append((tag if isinstance(tag, str) else "", self.item(depth + 1)))
            flags = self.int()
            if flags & 0xFF == NILVALUE_SXP:
                return cells
            if flags & 0xFF != LISTSXP:
                raise self.fail(f"a pairlist continued by type {flags & 0xFF}")
            has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))

    def attributes(self, depth: int) -> dict[str, RVector]:
        cells = self.item(depth + 1)
        if not isinstance(cells, list):
            raise self.fail("attributes that are not a pairlist")
        return {tag: value for tag, value in cells if isinstance(value, RVector)}

    def chars(self, levels: int) -> bytes | None:
        n = self.int()
        if n == -1:
            return None  # NA_character_
        raw = self.take(n)
        if levels & (UTF8_MASK | ASCII_MASK | BYTES_MASK):
            return raw
        if levels & LATIN1_MASK:
            return raw.decode("latin-1").encode("utf-8")
        try:  # native encoding of the writer
            return raw.decode(self.encoding).encode("utf-8")
        except (LookupError, UnicodeDecodeError):
            return raw

    def vector(self, kind: int, depth: int) -> RVector:
        n = self.length()
        if kind in (INTSXP, LGLSXP):
            values = [None if v == NA_INTEGER else v for v in struct.unpack(f">{n}i", self.take(4 * n))]
            return RVector("integer" if kind == INTSXP else "logical", values)
        values = []
        for _ in range(n):
            value = self.item(depth + 1)
            if kind == STRSXP and not (value is None or isinstance(value, bytes)):
                raise self.fail("a character vector holding a non-string")
            values.append(value)
        return RVector("character" if kind == STRSXP else "list", values)


def unserialize(data: bytes, where: str) -> RVector:
    """The object in one R serialization (after decompression); a refused type or bad layout is a DataError."""
    reader = _Reader(data, where)
    reader.header()
    value = reader.item()
    if not isinstance(value, RVector):
        raise reader.fail("top-level object is not a vector")
    return value


def read_rds(path: Path) -> RVector:
    """An .rds/.rdx file: gzip, bzip2 or xz compressed (or plain) serialization."""
    raw = path.read_bytes()
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        elif raw[:3] == b"BZh":
            raw = bz2.decompress(raw)
        elif raw[:6] == b"\xfd7zXZ\x00":
            raw = lzma.decompress(raw)
    except (OSError, EOFError, ValueError, lzma.LZMAError) as err:
        raise DataError(f"{path}: not a readable compressed R file ({err})") from err
    return unserialize(raw, str(path))


def lazyload_index(rdx: Path) -> tuple[dict[str, tuple[int, int]], int]:
    """{variable: (offset, length)} in the .rdb, and the compression code (1 zlib, 2 bzip2, 3 xz, 0 none)."""
    index = read_rds(rdx)
    parts = dict(zip(index.names(), index.values, strict=False))
    variables, compressed = parts.get("variables"), parts.get("compressed")
    if not isinstance(variables, RVector) or variables.kind != "list":
        raise DataError(f"{rdx}: no 'variables' list; not an R lazy-load index")
    entries = {}
    for name, where in zip(variables.names(), variables.values, strict=True):
        if not (isinstance(where, RVector) and where.kind == "integer" and len(where.values) == 2):
            raise DataError(f"{rdx}: variable '{name}' has no (offset, length) pair")
        entries[name] = (int(where.values[0]), int(where.values[1]))
    code = compressed.values[0] if isinstance(compressed, RVector) and compressed.values else 1
    return entries, int(code or 0)


def lazyload_block(rdb: Path, offset: int, length: int, compression: int) -> bytes:
    """One object's serialization from the .rdb: 4-byte big-endian size, then (for codes 2/3) a type byte, then data."""
    with open(rdb, "rb") as fh:
        fh.seek(offset)
        block = fh.read(length)
    if len(block) != length or length < 4:
        raise DataError(f"{rdb}: block at {offset} (+{length}) is truncated")
    size = struct.unpack(">I", block[:4])[0]
    if size > MAX_BLOCK_BYTES:
        raise DataError(f"{rdb}: block at {offset} claims {size} bytes > {MAX_BLOCK_BYTES}; refused")
    body, method = block[4:], {0: "0", 1: "Z"}.get(compression)
    if compression in (2, 3):
        method, body = chr(block[4]), block[5:]
    try:
        if method == "Z":
            inflater = zlib.decompressobj()
            out = inflater.decompress(body, size + 1)
        elif method == "2":
            out = bz2.BZ2Decompressor().decompress(body, size + 1)
        elif method == "X":
            out = lzma.LZMADecompressor().decompress(body, size + 1)
        elif method == "0":
            out = body
        else:
            raise DataError(f"{rdb}: unknown compression {compression!r}/{method!r} at {offset}")
    except (zlib.error, OSError, EOFError, lzma.LZMAError) as err:
        raise DataError(f"{rdb}: block at {offset} does not decompress ({err})") from err
    if len(out) != size:
        raise DataError(f"{rdb}: block at {offset} holds {len(out)} bytes, its header says {size}")
    return out


def character_vectors(rdx: Path) -> dict[str, list[bytes | None]]:
    """Every variable of a lazy-load database (`X.rdx` beside `X.rdb`) that is a character vector; any other object
    is refused (DataError naming it), so a package whose data changed shape is noticed, not half-read."""
    rdb = rdx.with_suffix(".rdb")
    if not rdx.is_file() or not rdb.is_file():
        raise DataError(f"{rdx}: the lazy-load index or its .rdb is missing; the package layout changed")
    entries, compression = lazyload_index(rdx)
    out = {}
    for name, (offset, length) in entries.items():
        value = unserialize(lazyload_block(rdb, offset, length, compression), f"{rdb}[{name}]")
        if value.kind != "character":
            raise DataError(f"{rdb}: variable '{name}' is a {value.kind} vector, not a character vector; refused")
        out[name] = value.values
    return out
