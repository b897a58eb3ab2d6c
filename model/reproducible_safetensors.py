"""safetensors files whose bytes depend only on their tensors and metadata.

Why: safetensors writes the `__metadata__` entries in an order that changes from one save to the next (its Rust side
keeps them in a HashMap; safetensors issue #584, open). Saving the same expert twice gave two sha256s, and so did every
cache key and registry record made of a file's sha256 (the router rows', the experts'). `save_file` writes with
safetensors, then rewrites the header with the metadata sorted by key: the same entries reordered, so the header keeps
its length and the tensor data are not touched.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file as _safetensors_save_file

_LENGTH = struct.Struct("<Q")  # the header's byte length, the first 8 bytes of the file


def save_file(tensors: dict[str, torch.Tensor], path: str | os.PathLike[str], metadata: dict[str, str]) -> None:
    """`safetensors.torch.save_file` with the metadata in sorted order (bytes reproducible across saves)."""
    _safetensors_save_file(tensors, str(path), metadata=metadata)
    if len(metadata) > 1:
        sort_metadata(Path(path))


def sort_metadata(path: Path) -> None:
    """Rewrite a safetensors file's header in place with its `__metadata__` sorted by key.

    Python's JSON writes the same entries in as many bytes as safetensors' serde_json (no ASCII escaping, the same
    separators); were a sorted header ever longer, the file is left as safetensors wrote it (valid, only not
    reproducible) rather than moving the tensor data."""
    with path.open("r+b") as handle:
        (length,) = _LENGTH.unpack(handle.read(_LENGTH.size))
        header = json.loads(handle.read(length))
        header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) <= length:
            handle.seek(_LENGTH.size)
            handle.write(text.ljust(length, b" "))  # safetensors pads its header with spaces too
