"""Next-token cross-entropy and LM z-loss for packed training rows, from one logsumexp, with a hand-written backward.

Why not autograd over `logsumexp` and `gather`: for the small models trained here the output layer dominates, and
autograd's backward of the shift, the fp32 cast, `logsumexp` and `gather` makes a full-size temporary of the (tokens x
vocab) logits at every turn: exp(x - lse) (three), a zero-filled one for gather's backward, their sum, a zero-filled one
for the slice, and the cast back to the logits' dtype. The gradient of `ce + w * z` is known in closed form, softmax(x)
* (g_ce + 2 g_z lse) / n - onehot(target) * g_ce / n, so the backward writes it in one pass per row block while the
block is in cache, and the forward never materialises a full fp32 copy of the logits either (only block-sized ones).
Profiled at `demo` size in bf16 on the 2-core EPYC, the autograd version spent about 15% of a dense step in
LogsumexpBackward alone (benchmarks/RESULTS.md). Blocks are rows of one sequence, so the shifted logits `logits[:, :-1]`
are never copied into a contiguous 2-D tensor.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.autograd.function import BackwardCFunction, FunctionCtx

CPU_BLOCK_ELEMENTS = 1 << 21
"""fp32 elements per row block on CPU (8 MiB): a block's sub/exp/scale/cast run while it is in cache."""


def _row_blocks(logits: torch.Tensor) -> Iterator[tuple[int, int, int]]:
    """(batch index, first row, last row + 1) over the positions that have a next token."""
    batch, length, vocab = logits.shape
    rows = length - 1
    step = rows if logits.device.type != "cpu" else max(1, CPU_BLOCK_ELEMENTS // vocab)
    for b in range(batch):
        for start in range(0, rows, step):
            yield b, start, min(rows, start + step)


class _PackedLMLosses(torch.autograd.Function):
    """(mean CE, mean lse^2) over every position of `logits` [B, T, V] that has a next token in `input_ids` [B, T]."""

    @staticmethod
    def forward(ctx: FunctionCtx, logits: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets = input_ids[:, 1:]
        lse = torch.empty(targets.shape, dtype=torch.float32, device=logits.device)
        for b, start, end in _row_blocks(logits):
            lse[b, start:end] = torch.logsumexp(logits[b, start:end].float(), dim=-1)
        target_logits = logits[:, :-1].gather(-1, targets.unsqueeze(-1)).squeeze(-1).float()
        ctx.save_for_backward(logits, targets, lse)
        return (lse - target_logits).mean(), lse.pow(2).mean()

    @staticmethod
    def backward(ctx: BackwardCFunction, grad_ce: torch.Tensor, grad_z: torch.Tensor) -> tuple[torch.Tensor, None]:
        saved: tuple[torch.Tensor, ...] = ctx.saved_tensors  # torch's stub declares a 1-tuple
        logits, targets, lse = saved
        count = lse.numel()
        scale = (
            grad_ce.float() + 2.0 * grad_z.float() * lse
        ) / count  # d/dx of ce + z: softmax * scale - onehot * g_ce/n
        target_step = (-grad_ce.float() / count).expand(1, 1)
        grad = torch.empty_like(logits)
        grad[:, -1].zero_()  # the last position predicts nothing
        for b, start, end in _row_blocks(logits):
            block = torch.sub(logits[b, start:end], lse[b, start:end, None]).exp_()  # fp32, a new tensor
            block.mul_(scale[b, start:end, None])
            block.scatter_add_(1, targets[b, start:end, None], target_step.expand(end - start, 1))
            grad[b, start:end] = block
        return grad, None


def packed_lm_losses(logits: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(next-token CE, LM z-loss) for packed rows (every position has a label), from one logsumexp over the vocabulary.

    Equal to `model.coordinated.causal_lm_losses` without ignored labels (tested, values and gradients), in fp32
    whatever the logits' dtype.
    """
    return _PackedLMLosses.apply(logits, input_ids)
