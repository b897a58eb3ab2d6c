"""The bucketed experts compute what transformers' eager loop computes: bit for bit in fp32 (where nothing is padded),
closely under bf16 autocast (where every expert matmul sees a multiple of `BUCKET_ROWS` rows), gradients included; and a
saved MoE does not record the implementation, so plain transformers loads it."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoModelForCausalLM, FlexOlmoForCausalLM

from model.config import EXPERTS_IMPLEMENTATION, flexolmo_config
from model.experts import BUCKET_ROWS, BUCKETED, padded_rows, pads_rows
from tests.model.conftest import IDS, SIZES

NUM_EXPERTS = 4


def _moe(implementation: str) -> FlexOlmoForCausalLM:
    """The same random 4-expert top-2 MoE, built with the given experts implementation."""
    torch.manual_seed(0)
    config = flexolmo_config(SIZES, IDS, NUM_EXPERTS, top_k=2)
    config._experts_implementation = implementation
    return FlexOlmoForCausalLM(config).float().eval()


class _MatmulRows(TorchDispatchMode):
    """Records the row count of every 2-D matmul's left operand that torch dispatches."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm):
            left = args[1] if func.overloadpacket is torch.ops.aten.addmm else args[0]
            self.rows.append(left.shape[0])
        return func(*args, **(kwargs or {}))


def test_padded_rows_rounds_up_to_the_bucket() -> None:
    assert [padded_rows(n) for n in (0, 1, BUCKET_ROWS, BUCKET_ROWS + 1)] == [
        0,
        BUCKET_ROWS,
        BUCKET_ROWS,
        2 * BUCKET_ROWS,
    ]


def test_rows_are_padded_only_where_cpu_kernels_are_compiled_per_shape() -> None:
    fp32 = torch.zeros(3, 8)
    assert not pads_rows(fp32)
    assert pads_rows(fp32.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert pads_rows(fp32)


def test_flexo_moes_are_built_with_the_bucketed_experts() -> None:
    assert EXPERTS_IMPLEMENTATION == BUCKETED
    assert flexolmo_config(SIZES, IDS, NUM_EXPERTS)._experts_implementation == BUCKETED


def test_fp32_equals_the_eager_loop_bit_for_bit(batch: torch.Tensor) -> None:
    with torch.no_grad():
        assert torch.equal(_moe(BUCKETED)(batch).logits, _moe("eager")(batch).logits)


def test_bf16_pads_every_expert_matmul_and_matches_the_eager_loop(batch: torch.Tensor) -> None:
    bucketed, eager = _moe(BUCKETED), _moe("eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with _MatmulRows() as recorded:
            bucketed_logits = bucketed(batch).logits.float()
        eager_logits = eager(batch).logits.float()
    tokens = batch.numel()
    expert_rows = [rows for rows in recorded.rows if rows != tokens]  # attention, router and head see every token
    assert expert_rows and all(rows % BUCKET_ROWS == 0 for rows in expert_rows)
    assert torch.allclose(bucketed_logits, eager_logits, atol=0.05, rtol=0.05)
    assert torch.equal(bucketed_logits.argmax(-1), eager_logits.argmax(-1))


def test_bf16_gradients_match_the_eager_loop(batch: torch.Tensor) -> None:
    grads = {}
    for implementation in (BUCKETED, "eager"):
        model = _moe(implementation).train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(batch, labels=batch).loss
        loss.backward()
        grads[implementation] = torch.cat(
            [layer.mlp.experts.gate_up_proj.grad.flatten() for layer in model.model.layers]
        )
    assert grads[BUCKETED].abs().sum() > 0
    assert torch.allclose(grads[BUCKETED], grads["eager"], atol=1e-3, rtol=0.05)


def test_a_saved_moe_does_not_record_the_implementation(tmp_path, batch: torch.Tensor) -> None:
    model = _moe(BUCKETED)
    model.save_pretrained(tmp_path)
    assert BUCKETED not in json.dumps(json.loads((tmp_path / "config.json").read_text()))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path, experts_implementation="eager").float().eval()
    with torch.no_grad():
        assert torch.equal(plain(batch).logits, model(batch).logits)


@pytest.mark.parametrize("rows", [1, BUCKET_ROWS - 1, BUCKET_ROWS + 3])
def test_padding_never_reaches_the_output(rows: int) -> None:
    """One expert chosen for every token: the padded rows (zeros through the FFN) must not be added anywhere."""
    experts = _moe(BUCKETED).model.layers[0].mlp.experts
    hidden = torch.randn(rows, SIZES.hidden_size).bfloat16()
    index = torch.zeros(rows, 1, dtype=torch.long)
    weights = torch.ones(rows, 1, dtype=torch.bfloat16)
    experts.bfloat16()
    out = experts(hidden, index, weights)
    gate, up = torch.nn.functional.linear(hidden, experts.gate_up_proj[0]).chunk(2, dim=-1)
    expected = torch.nn.functional.linear(experts.act_fn(gate) * up, experts.down_proj[0])
    assert out.shape == hidden.shape
    assert torch.allclose(out.float(), expected.float(), atol=1e-2, rtol=1e-2)
