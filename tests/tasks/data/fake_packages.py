"""Fake fetched packages for adapter tests: the layouts `fetch` leaves in the source cache, written by the test, so an
adapter reads them as if downloaded (no network)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from tasks.data.sources import SourceContext


def source_context(
    cache: Path, target_bytes: int = 10**9, max_docs: int = 10**6, seed: int = 7, chunk_chars: int = 4000
) -> SourceContext:
    return SourceContext(str(cache), target_bytes, max_docs, 1_000_000, seed, chunk_chars)


def fake_debian_package(
    cache: Path, name: str, files: dict[str, bytes | str] | None = None, deb: str | None = None
) -> Path:
    """An unpacked Debian package; the `.unpacked` marker (the .deb's name) means no download happens."""
    root = cache / "debian" / name
    root.mkdir(parents=True, exist_ok=True)
    for rel, body in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body.encode("utf-8") if isinstance(body, str) else body)
    (root / ".unpacked").write_text(deb or f"{name}_1.0-1_all.deb", encoding="utf-8")
    return root


def fake_wheel(cache: Path, filename: str, members: dict[str, bytes]) -> Path:
    """A wheel in the folder `pip_wheel` looks in, so no download happens."""
    path = cache / "pypi" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path
