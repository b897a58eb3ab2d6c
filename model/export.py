"""Export a model as a directory that plain `transformers` loads offline: safetensors weights, config, tokenizer."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedModel

from model.hashing import sha256_file

WEIGHTS_FILE = "model.safetensors"


def export_pretrained(model: PreTrainedModel, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> str:
    """Save weights (one safetensors file, never pickle) and the tokenizer; return the weights' sha256."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True, max_shard_size="100GB")
    if tokenizer_dir is not None:
        AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True).save_pretrained(out)
    weights = out / WEIGHTS_FILE
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: save_pretrained wrote no single safetensors file")
    return sha256_file(weights)
