"""MoE inference speed: tokens/s of the assembled FlexOlmo vs the dense M_pub, against the ratio of active FLOPs.

Target (issue 7): MoE time <= 1.2 x (active-FLOP ratio) x dense time, i.e. the MoE's routing and expert dispatch cost
at most 20% over what its extra active FFNs cost anyway. Both models have the profile's sizes and random weights (speed
does not depend on the values); the MoE has n+1 experts (one per domain) with the profile's default top-k.

Usage:  .venv/bin/python benchmarks/moe_inference.py [--profile demo] [--threads 2] [--repeats 5] [--device cpu]
                                                    [--precision fp32|bf16|auto]  (bf16: autocast, as the evaluation)
Prints one JSON object and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    import torch

    from model.config import ModelSizes
    from model.precision import Precision


def active_flops_per_token(sizes: ModelSizes, experts_active: int, num_experts: int, seq_len: int) -> float:
    """Forward FLOPs per token: 2 x active weights + causal attention scores (2 x 2 x T/2 x d per layer on average)."""
    d, inter, layers = sizes.hidden_size, sizes.intermediate_size, sizes.num_layers
    attention = 4 * d * d + 2 * seq_len * d  # q,k,v,o projections + causal QK^T and AV (half the T x T, x2 matmuls)
    ffn = experts_active * 3 * d * inter + (num_experts * d if num_experts > 1 else 0)
    return 2 * (layers * (attention + ffn) + d * sizes.vocab_size)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    return parser.parse_args()


def _median_seconds(
    model: torch.nn.Module, ids: torch.Tensor, precision: Precision, device: str, repeats: int
) -> float:
    """Median wall time of one forward pass over `ids`, after one warm-up pass."""
    import torch

    from model.precision import autocast

    times = []
    with torch.no_grad(), autocast(precision, device):
        model(input_ids=ids, use_cache=False)  # warm-up
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(input_ids=ids, use_cache=False)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _print_table(result: dict[str, Any]) -> None:
    tokens = result["batch"] * result["seq_len"]
    t_dense, t_moe = result["dense_s"], result["moe_s"]
    print(
        f"\n{'model':<8}{'s/batch':>10}{'tokens/s':>12}\n{'dense':<8}{t_dense:>10.3f}{tokens / t_dense:>12.0f}\n"
        f"{'moe':<8}{t_moe:>10.3f}{tokens / t_moe:>12.0f}\n"
        f"time ratio {t_moe / t_dense:.2f} vs active-FLOP ratio {result['active_flop_ratio']:.2f} -> "
        f"{result['overhead_vs_flops']:.2f}x (target <= 1.2): {'PASS' if result['meets_target'] else 'FAIL'}"
    )


def main() -> None:
    args = _parse_args()

    import torch

    import tasks  # noqa: F401  (offline)
    from model.baselines import random_router_rows, upcycle
    from model.config import ModelSizes, TokenizerIds
    from model.precision import resolve_precision
    from model.public import build_public_model
    from tasks.core.build import moe_top_k
    from tasks.core.config import load_profile

    torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision, args.device)
    profile = load_profile(args.profile)
    sizes = ModelSizes.from_mapping(profile.model)
    num_experts = len(profile.domains)
    top_k = moe_top_k(profile, num_experts)
    batch, seq = profile.eval.batch_size, profile.model.max_seq_len
    dense = build_public_model(sizes, TokenizerIds(0, 1), seed=0).to(args.device).eval()
    rows = random_router_rows(num_experts, sizes.hidden_size, sizes.init_std, seed=1)
    moe = upcycle(dense, num_experts, rows, top_k).to(args.device).eval()
    ids = torch.randint(2, sizes.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0)).to(args.device)

    t_dense = _median_seconds(dense, ids, precision, args.device, args.repeats)
    t_moe = _median_seconds(moe, ids, precision, args.device, args.repeats)
    flop_ratio = active_flops_per_token(sizes, top_k, num_experts, seq) / active_flops_per_token(sizes, 1, 1, seq)
    tokens = batch * seq
    result = {
        "profile": args.profile,
        "device": args.device,
        "precision": precision,
        "threads": args.threads,
        "load_average_1m": os.getloadavg()[0],
        "batch": batch,
        "seq_len": seq,
        "experts": num_experts,
        "top_k": top_k,
        "dense_s": t_dense,
        "moe_s": t_moe,
        "dense_tokens_per_s": tokens / t_dense,
        "moe_tokens_per_s": tokens / t_moe,
        "active_flop_ratio": flop_ratio,
        "time_ratio": t_moe / t_dense,
        "overhead_vs_flops": (t_moe / t_dense) / flop_ratio,
        "target": 1.2,
        "meets_target": (t_moe / t_dense) <= 1.2 * flop_ratio,
    }
    print(json.dumps(result))
    _print_table(result)


if __name__ == "__main__":
    main()
