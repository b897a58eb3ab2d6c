"""`runtime.precision`: what `auto` resolves to; a merged or loaded MoE really multiplies in bf16 under autocast."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from model.merge import merge_experts
from model.precision import autocast, native_bf16, resolve_precision
from model.public import load_moe
from tests.model.conftest import random_row


class _MatmulDtypes(TorchFunctionMode):
    """Records the output dtype of every matrix product in a forward pass (linear, matmul, bmm, grouped mm)."""

    NAMES = ("linear", "matmul", "mm", "bmm", "_grouped_mm", "grouped_mm")

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: dict[str, set[torch.dtype]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in self.NAMES:
            self.dtypes.setdefault(name, set()).add(out.dtype)
        return out


def _moe(public_model):
    state = {}
    for index, layer in enumerate(public_model.model.layers):
        for key in ("gate_proj", "up_proj", "down_proj"):
            weight = getattr(layer.mlp, key).weight
            state[f"layers.{index}.{key}.weight"] = weight + 0.05 * torch.randn_like(weight)
        state[f"layers.{index}.router"] = random_row(3)
        state[f"layers.{index}.router_public"] = random_row(0)
    return merge_experts(public_model, random_row(0), [state], top_k=2).eval()


def test_explicit_settings_pass_through_and_bad_ones_are_refused() -> None:
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="fp32, bf16 or auto"):
        resolve_precision("fp16", "cpu")  # type: ignore[arg-type]


def test_auto_is_bf16_exactly_where_the_device_multiplies_bf16_natively() -> None:
    assert resolve_precision("auto", "cpu") == ("bf16" if native_bf16("cpu") else "fp32")
    assert native_bf16("cuda") == (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert not native_bf16("meta")


@pytest.mark.parametrize("source", ["merged", "saved and loaded"])
def test_moe_experts_multiply_in_bf16_under_autocast(public_model, batch, tmp_path: Path, source: str) -> None:
    """transformers' default grouped_mm experts ignore autocast (they cast the input up to the fp32 weights); the eager
    experts `model.config` and `load_moe` choose are lowered, and the logits stay close to fp32's."""
    moe = _moe(public_model)
    if source != "merged":
        moe.save_pretrained(tmp_path / "moe", safe_serialization=True)
        moe = load_moe(str(tmp_path / "moe"))
    with torch.no_grad():
        reference = moe(input_ids=batch).logits
        recorder = _MatmulDtypes()
        with autocast("bf16", "cpu"), recorder:
            lowered = moe(input_ids=batch).logits
        with autocast("fp32", "cpu"):
            unchanged = moe(input_ids=batch).logits
    assert recorder.dtypes and all(dtypes == {torch.bfloat16} for dtypes in recorder.dtypes.values()), recorder.dtypes
    assert all(p.dtype == torch.float32 for p in moe.parameters())
    assert not torch.equal(lowered.float(), reference)  # bf16 really ran
    torch.testing.assert_close(lowered.float(), reference, rtol=0.05, atol=0.05)
    assert torch.equal(unchanged, reference)  # fp32 is a no-op context
