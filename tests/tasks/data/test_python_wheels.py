"""python_wheels on a tiny fake pure-Python wheel placed in the source cache (no network): definitions split like
stdlib_code, tests/vendored/generated files left out, platform wheels refused, provenance names the license file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.errors import DataError
from tasks.data.sources import _REGISTRY, Source, SourceContext, _load_builtin
from tasks.data.sources.code import definitions
from tests.tasks.data.fake_packages import fake_wheel

LIB = b'''"""A module."""
import os

X = 1


@decorator
def first(a):
    """Doc."""
    return a


class Second:
    def method(self):
        return os.sep
'''
METADATA = b"Metadata-Version: 2.1\nName: toylib\nVersion: 1.0\nLicense: MIT License\n"


def source(cache: Path, target_bytes: int = 10**12, **options) -> Source:
    _load_builtin()
    context = SourceContext(str(cache), target_bytes, 10**6, 10**6, seed=0, chunk_chars=300)
    return _REGISTRY["python_wheels"]("code", "owner", options, context)


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    fake_wheel(
        tmp_path,
        "toylib-1.0-py3-none-any.whl",
        {
            "toylib/__init__.py": LIB,
            "toylib/sub/core.py": b"def g():\n    return 2\n",
            "toylib/tests/test_core.py": b"def test_g():\n    assert True\n",
            "toylib/test_other.py": b"def test_h():\n    pass\n",
            "toylib/_vendor/six.py": b"def vendored():\n    pass\n",
            "toylib/_version.py": b"def get_version():\n    return '1.0'\n",
            "toylib/broken.py": b"def broken(:\n",
            "toylib/latin.py": b"def f():\n    return '\xe9'\n",
            "toylib/data.json": b"{}",
            "toylib-1.0.dist-info/METADATA": METADATA,
            "toylib-1.0.dist-info/LICENSE": b"MIT License\n",
        },
    )
    return tmp_path


def test_definitions_of_library_files_only(toy: Path) -> None:
    docs = list(source(toy, packages=["toylib==1.0"]).documents())
    clean = {d.id: d.text for d in docs if d.problem is None}
    assert clean == {
        "code/toylib-1.0/toylib/__init__.py#0": '@decorator\ndef first(a):\n    """Doc."""\n    return a\n',
        "code/toylib-1.0/toylib/__init__.py#1": "class Second:\n    def method(self):\n        return os.sep\n",
        "code/toylib-1.0/toylib/sub/core.py#0": "def g():\n    return 2\n",
    }
    init = "code/toylib-1.0/toylib/__init__.py"
    assert definitions(LIB.decode()) == [clean[f"{init}#0"], clean[f"{init}#1"]]  # the same split as stdlib_code
    problems = [d for d in docs if d.problem]
    assert [d.id for d in problems] == ["code/toylib-1.0/toylib/latin.py"]  # bad bytes are named, not dropped
    assert "not UTF-8" in problems[0].problem and problems[0].source_file.endswith("!toylib/latin.py")
    assert all(d.meta.get("package") == "toylib-1.0" for d in docs if d.problem is None)


def test_exclusions_are_options(toy: Path) -> None:
    docs = source(toy, packages=["toylib==1.0"], exclude_dirs=[], exclude_files=[]).documents()
    ids = {d.id.split("#")[0] for d in docs}
    assert {"code/toylib-1.0/toylib/tests/test_core.py", "code/toylib-1.0/toylib/_vendor/six.py"} <= ids
    assert "code/toylib-1.0/toylib/_version.py" in ids


def test_budget_stops_early(toy: Path) -> None:
    docs = list(source(toy, target_bytes=1, packages=["toylib==1.0"]).documents())
    assert len([d for d in docs if d.problem is None]) == 1


def test_platform_wheel_and_unpinned_refused(tmp_path: Path) -> None:
    fake_wheel(tmp_path, "natlib-2.0-cp311-cp311-manylinux_2_17_x86_64.whl", {"natlib/__init__.py": b"def f(): pass\n"})
    with pytest.raises(DataError, match="not a pure-Python wheel"):
        list(source(tmp_path, packages=["natlib==2.0"]).documents())
    with pytest.raises(DataError, match="pin each one"):
        source(tmp_path, packages=["natlib"]).origins()


def test_origins_and_provenance(toy: Path) -> None:
    src = source(toy, packages=["toylib==1.0", "Other_Lib==3.1"])
    assert src.origins() == {"pypi:toylib", "pypi:other-lib"}
    wheels = src.provenance()["wheels"]
    assert wheels["toylib==1.0"] == {
        "package_file": "toylib-1.0-py3-none-any.whl",
        "license": "MIT License",
        "license_files": ["toylib-1.0.dist-info/LICENSE"],
    }
    assert wheels["Other_Lib==3.1"] == {"package_file": "not downloaded yet"}


def test_default_packages_are_pinned_and_pure_python_names(tmp_path: Path) -> None:
    src = source(tmp_path)
    assert all("==" in p for p in src.packages())
    assert not {"pypi:django", "pypi:sympy"} & src.origins()
