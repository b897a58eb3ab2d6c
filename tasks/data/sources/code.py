"""Code domain: the Python standard library's own source, split into top-level functions and classes.

Why: real code written by people, present on every machine that runs flexo (no download). Documents are whole
definitions (decorators and docstrings included) so validation can check each one parses as Python.
"""

from __future__ import annotations

import ast
import random
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from tasks.data.sources import Document, Source, register
from tasks.data.sources.textio import budget_reached, decode_document

DEFAULT_EXCLUDE = [
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "turtledemo",
    "encodings",
    "pydoc_data",
]  # the last two are generated tables, not code written by people


@register("stdlib_code")
class StdlibCodeSource(Source):
    cache_extraction = False  # local files that can change under the same options: read every time
    license = "PSF-2.0 (Python Software Foundation License)"
    description = "top-level functions and classes of the CPython standard library's .py files"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.root = Path(self.options.get("path") or sysconfig.get_paths()["stdlib"])
        self.exclude = set(self.options.get("exclude_dirs", DEFAULT_EXCLUDE))

    def files(self) -> list[Path]:
        files = [
            p for p in sorted(self.root.rglob("*.py")) if not (set(p.relative_to(self.root).parts[:-1]) & self.exclude)
        ]
        random.Random(self.context.seed).shuffle(files)  # a spread of modules, not the alphabet's first ones
        return files

    def documents(self) -> Iterator[Document]:
        total = count = 0
        for path in self.files():
            rel = path.relative_to(self.root).as_posix()
            whole = decode_document(path.read_bytes(), f"{self.domain}/{rel}", str(path), 0, self.context.max_doc_bytes)
            if whole.problem:
                yield whole
                count += 1
                continue
            for row, segment in enumerate(definitions(whole.text)):
                yield Document(f"{self.domain}/{rel}#{row}", segment, str(path), row)
                total += len(segment.encode("utf-8"))
                count += 1
                if budget_reached(total, count, self.context.target_bytes, self.context.max_docs):
                    return

    def origins(self) -> set[str]:
        return {f"python-stdlib:{self.root}"}

    def provenance(self) -> dict:
        return {**super().provenance(), "root": str(self.root), "python": sys.version.split()[0]}


def definitions(source: str) -> list[str]:
    """Top-level function/class definitions with their decorators (a file that does not parse yields nothing)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines(keepends=True)
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            out.append("".join(lines[start : node.end_lineno]).rstrip() + "\n")
    return out
