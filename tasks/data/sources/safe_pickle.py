"""A restricted unpickler for data files shipped inside packages, and a pandas DataFrame reader built on it.

Why: some packages ship their text only as a pickle, and a plain `pickle.load` runs whatever the file names. Here
every global the file refers to is looked up in an explicit allow-list and resolved to a stand-in that only records
its arguments and state (no pandas or numpy object is constructed, no package code runs); any other global, and any
persistent id, is refused with a DataError naming the file and the global before anything is called.
"""

from __future__ import annotations

import array
import io
import pickle
import sys
from collections.abc import Mapping
from typing import Any

from tasks.core.errors import DataError


class Captured:
    """Stand-in for an allowed class or reconstructor: keeps the call arguments and the pickled state, nothing else."""

    global_name = ""
    args: tuple = ()
    state: Any = None

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _stand_in(global_name: str) -> type[Captured]:
    return type(f"Captured[{global_name}]", (Captured,), {"global_name": global_name})


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose `find_class` resolves only the globals in `allowed` (dotted "module.name").

    A value of None in `allowed` means "a Captured stand-in"; otherwise the given object is used (only for harmless
    builtins such as `slice`)."""

    def __init__(self, file: io.BufferedIOBase, allowed: Mapping[str, Any], source: str) -> None:
        super().__init__(file, encoding="latin1")
        self.allowed = dict(allowed)
        self.source = source
        self._stand_ins: dict[str, type[Captured]] = {}

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full not in self.allowed:
            raise DataError(f"{self.source}: refusing to unpickle global '{full}' (not in the allow-list)")
        if self.allowed[full] is not None:
            return self.allowed[full]
        return self._stand_ins.setdefault(full, _stand_in(full))

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.source}: refusing to unpickle persistent id {pid!r}")


def restricted_load(data: bytes, allowed: Mapping[str, Any], source: str) -> Any:
    """Unpickle `data` with only `allowed` globals; a malformed file is a DataError naming `source`."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), allowed, source).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        what = f"{type(err).__name__}: {err}"
        raise DataError(f"{source}: not a readable pickle of the expected layout ({what})") from err


# --- pandas DataFrame (BlockManager pickle format, pandas 0.x-1.x) ------------------------------------------------

PANDAS_FRAME_GLOBALS: dict[str, Any] = {
    "pandas.core.frame.DataFrame": None,
    "pandas.core.internals.managers.BlockManager": None,
    "pandas.core.indexes.base._new_Index": None,
    "pandas.core.indexes.base.Index": None,
    "pandas.core.indexes.range.RangeIndex": None,
    "numpy.core.multiarray._reconstruct": None,
    "numpy._core.multiarray._reconstruct": None,
    "numpy.ndarray": None,
    "numpy.dtype": None,
    "builtins.slice": slice,
}
BLOCK_STATE_KEY = "0.14.1"  # pandas' BlockManager pickle-format tag
_ARRAY_CODES = {"i8": "q", "i4": "i", "i2": "h", "i1": "b", "u8": "Q", "u4": "I", "u2": "H", "u1": "B", "f8": "d"}
_ARRAY_CODES |= {"f4": "f", "b1": "B"}


def pandas_frame_columns(data: bytes, source: str) -> dict[str, list]:
    """The columns of a pickled pandas DataFrame as plain lists, decoded from stand-ins (pandas is never imported)."""
    frame = restricted_load(data, PANDAS_FRAME_GLOBALS, source)
    try:
        manager = frame.state.get("_data") or frame.state.get("_mgr")
        layout = manager.state[3][BLOCK_STATE_KEY]
        columns = [str(c) for c in _index_values(layout["axes"][0], source)]
        out: dict[str, list] = {}
        for block in layout["blocks"]:
            values, shape = _array_values(block["values"], source)
            locs = _locations(block["mgr_locs"], source)
            width = shape[1] if len(shape) == 2 else len(values)
            for i, loc in enumerate(locs):
                out[columns[loc]] = values[i * width : (i + 1) * width]
    except (AttributeError, KeyError, IndexError, TypeError) as err:
        what = f"{type(err).__name__}: {err}"
        raise DataError(f"{source}: not the expected pandas DataFrame pickle layout ({what})") from err
    return out


def _index_values(index: Any, source: str) -> list:
    if not isinstance(index, Captured) or not index.global_name.endswith("_new_Index"):
        raise DataError(f"{source}: column index is not a pandas Index")
    cls, attrs = index.args
    if cls.global_name.endswith("RangeIndex"):
        return list(range(attrs["start"], attrs["stop"], attrs.get("step", 1)))
    return _array_values(attrs["data"], source)[0]


def _locations(locs: Any, source: str) -> list[int]:
    if isinstance(locs, slice):
        return list(range(locs.start or 0, locs.stop, locs.step or 1))
    return [int(v) for v in _array_values(locs, source)[0]]


def _array_values(arr: Any, source: str) -> tuple[list, tuple]:
    """(flat values in C order, shape) of a captured numpy array: objects as pickled, numbers via `array`."""
    if not isinstance(arr, Captured) or not arr.global_name.endswith("_reconstruct") or arr.state is None:
        raise DataError(f"{source}: expected a numpy array, found {type(arr).__name__}")
    _, shape, dtype, fortran, raw = arr.state
    if fortran and len(shape) > 1:
        raise DataError(f"{source}: Fortran-ordered arrays are not supported")
    if isinstance(raw, list):
        return raw, tuple(shape)
    code = str(dtype.args[0])
    order = dtype.state[1] if isinstance(dtype.state, tuple) and len(dtype.state) > 1 else "|"
    if code not in _ARRAY_CODES:
        raise DataError(f"{source}: numeric dtype '{code}' is not supported")
    values = array.array(_ARRAY_CODES[code])
    values.frombytes(raw.encode("latin1") if isinstance(raw, str) else raw)
    if (order == "<" and sys.byteorder == "big") or (order == ">" and sys.byteorder == "little"):
        values.byteswap()
    return values.tolist(), tuple(shape)
