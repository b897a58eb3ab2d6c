"""The merge takes its inputs from anywhere: experts in another precision or on another device than M_pub and r_pub
(the evaluation's no-coordination ablation merges CPU expert rows with M_pub and r_pub on the GPU) all pass through
`model.merge.on_public_device` before any check or copy."""

from __future__ import annotations

import pytest
import torch

from model.coordinated import CoordinatedExpertModel
from model.merge import MERGE_DTYPE, MergeError, merge_experts, on_public_device
from tests.model.conftest import random_row

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids.to(next(model.parameters()).device)).logits.cpu()


def _expert(public_model, r_pub, seed: int = 1) -> dict[str, torch.Tensor]:
    """A coordinated expert whose FFN differs from M_pub's (so a merge that dropped it would show)."""
    coordinated = CoordinatedExpertModel.from_public(public_model, r_pub, random_row(seed), bias_init=None)
    state = coordinated.expert_state()
    generator = torch.Generator().manual_seed(seed)
    return {
        name: t + 0.05 * torch.randn(t.shape, generator=generator) if name.endswith("proj.weight") else t
        for name, t in state.items()
    }


def _in(expert: dict[str, torch.Tensor], **to) -> dict[str, torch.Tensor]:
    return {name: t.to(**to) for name, t in expert.items()}


def test_inputs_are_placed_on_the_public_models_device_in_the_merge_dtype(public_model) -> None:
    r_pub = random_row(0)
    expert = _in(_expert(public_model, r_pub), dtype=torch.float64)
    placed_row, (placed,) = on_public_device(public_model, r_pub.to(torch.bfloat16), [expert])
    device = next(public_model.parameters()).device
    assert placed_row.device == device and placed_row.dtype == MERGE_DTYPE
    assert {t.device for t in placed.values()} == {device} and {t.dtype for t in placed.values()} == {MERGE_DTYPE}
    assert set(placed) == set(expert)
    assert torch.equal(placed["layers.0.router"], expert["layers.0.router"].float())


def test_an_expert_saved_in_another_precision_merges_to_the_same_model(public_model, batch) -> None:
    """float64 holds every fp32 value exactly: the merge of the float64 copy is the merge of the fp32 original."""
    r_pub = random_row(0)
    expert = _expert(public_model, r_pub)
    reference = merge_experts(public_model, r_pub, [expert], top_k=2)
    widened = merge_experts(public_model, r_pub.double(), [_in(expert, dtype=torch.float64)], top_k=2)
    assert all(p.dtype == MERGE_DTYPE for p in widened.parameters())
    assert torch.equal(_logits(widened, batch), _logits(reference, batch))


def test_a_bf16_expert_is_compared_and_copied_in_fp32(public_model, batch) -> None:
    """A bf16 file whose rows are bf16 values: the saved r_pub equals this r_pub once both are fp32, so it merges, and
    the MoE holds the bf16 weights exactly."""
    r_pub = random_row(0).to(torch.bfloat16).float()
    expert = _in(_expert(public_model, r_pub), dtype=torch.bfloat16)
    moe = merge_experts(public_model, r_pub, [expert], top_k=2)
    gate_up = moe.model.layers[0].mlp.experts.gate_up_proj[1]
    intermediate = expert["layers.0.gate_proj.weight"].shape[0]
    assert torch.equal(gate_up[:intermediate], expert["layers.0.gate_proj.weight"].float())
    assert torch.equal(moe.model.layers[1].mlp.gate.weight[0], r_pub)


def test_a_different_public_row_is_still_refused_after_placing(public_model) -> None:
    expert = _in(_expert(public_model, random_row(0)), dtype=torch.float64)
    with pytest.raises(MergeError, match="public router row"):
        merge_experts(public_model, random_row(5), [expert])


@CUDA
def test_cuda_public_model_with_cpu_experts(public_model, batch) -> None:
    """The evaluation's no-coordination ablation: M_pub and r_pub on the GPU, the experts' rows on the CPU."""
    r_pub = random_row(0)
    expert = _expert(public_model, r_pub)
    reference = merge_experts(public_model, r_pub, [expert], top_k=2)
    on_gpu = public_model.to("cuda")
    moe = merge_experts(on_gpu, r_pub.to("cuda"), [expert], top_k=2)
    assert next(moe.parameters()).device.type == "cuda"
    assert torch.allclose(_logits(moe, batch), _logits(reference, batch), atol=1e-4, rtol=0)


@CUDA
def test_cpu_public_model_with_cuda_experts(public_model) -> None:
    r_pub = random_row(0)
    expert = _in(_expert(public_model, r_pub), device="cuda")
    moe = merge_experts(public_model, r_pub.to("cuda"), [expert], top_k=2)
    assert next(moe.parameters()).device.type == "cpu"
