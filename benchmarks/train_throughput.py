"""Training throughput: tokens/s, model-FLOPs utilisation (MFU) and peak memory for public (dense) and expert training.

MFU is judged against this machine's own peak matmul rate, measured in the same process right before the run it judges
(in the precision the run uses: fp32, or bf16 with `--precision bf16` on CUDA or CPU), so a slower or busier machine is
not mistaken for a slower training loop.

Each (size, kind) runs in its own subprocess so that its peak resident memory is its own. Kinds:
  dense        M_pub, all parameters train (public pretraining / dense domain training)
  expert       the coordinated 2-expert model, only FFN_i, r_i, b_i train (the owner's run)
  expert_full  the same 2-expert model with every parameter trainable (what "no freezing" would cost)

Usage:  .venv/bin/python benchmarks/train_throughput.py [--sizes demo small] [--steps 8] [--device cpu] [--threads 2]
                                                       [--precision fp32|bf16] [--compile]
Prints one JSON object per run and a table; --json-out writes them all.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from model.config import ModelSizes
    from model.precision import Precision
    from model.train_spec import TrainSpec
    from tasks.core.config import Profile, TrainExpertConfig, TrainPublicConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_matmul_flops(device: str, dtype_name: str, seconds: float = 1.5) -> dict[str, float]:
    """Best sustained matmul rate over square and FFN-shaped products (FLOP/s)."""
    import torch

    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    shapes = [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 256, 1024), (4096, 512, 2048)]
    if device.startswith("cuda"):
        shapes = [(8192, 8192, 8192), (16384, 1024, 4096), (16384, 4096, 1024)]
    best = {}
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / len(shapes):
            a @ b
            reps += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best[f"{m}x{k}x{n}"] = 2 * m * k * n * reps / (time.perf_counter() - start)
    return {"peak_flops": max(best.values()), **{f"matmul_{k}": v for k, v in best.items()}}


def flops_per_token(sizes: ModelSizes, seq_len: int, kind: str) -> float:
    """Matmul FLOPs one training token needs (forward + backward), PaLM-style accounting.

    dense: 6 x (attention + FFN + LM-head weights) + 12 x layers x hidden x seq (attention scores and values).
    expert: forward runs both FFNs; backward needs activation gradients through everything but weight gradients only for
    FFN_i (and the tiny router rows); the attention-score term is the same as dense.
    """
    h, layers, ffn, vocab = sizes.hidden_size, sizes.num_layers, sizes.intermediate_size, sizes.vocab_size
    attn_w, ffn_w, head_w = 4 * h * h * layers, 3 * h * ffn * layers, h * vocab
    scores = 12 * layers * h * seq_len
    if kind == "dense":
        return 6 * (attn_w + ffn_w + head_w) + scores
    forward = 2 * (attn_w + 2 * ffn_w + head_w)
    act_grads = 2 * (attn_w + 2 * ffn_w + head_w)
    weight_grads = 2 * (attn_w + 2 * ffn_w + head_w) if kind == "expert_full" else 2 * ffn_w
    return forward + act_grads + weight_grads + scores


def build_model(profile: Profile, sizes: ModelSizes, kind: str) -> tuple[Any, Any]:
    """The model a `kind` trains and its loss: M_pub (dense), or the coordinated 2-expert model (frozen or not)."""
    import torch

    from model.config import TokenizerIds
    from model.coordinated import CoordinatedExpertModel
    from model.public import build_public_model
    from model.training import coordinated_loss, dense_loss

    section = profile.train_public if kind == "dense" else profile.train_expert
    model = build_public_model(sizes, TokenizerIds(0, 1), seed=0)
    if kind == "dense":
        return model, dense_loss(section.lm_z_loss)
    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(sizes.hidden_size, generator=g) * 0.05 for _ in range(2)]
    coordinated = CoordinatedExpertModel.from_public(
        model, rows[0], rows[1], lm_z_weight=section.lm_z_loss, router_z_weight=profile.train_expert.router_z_loss
    )
    if kind == "expert_full":
        for p in coordinated.parameters():
            p.requires_grad_(True)
    return coordinated, coordinated_loss


def bench_spec(
    section: TrainPublicConfig | TrainExpertConfig,
    total: int,
    batch_size: int,
    device: str,
    precision: str,
    compile_step: bool,
) -> TrainSpec:
    """A TrainSpec that only steps: no evaluation, no checkpoint inside the measured window."""
    from model.training import TrainSpec

    return TrainSpec(
        total_steps=total,
        batch_size=batch_size,
        seq_len=section.seq_len,
        lr=section.optim.lr,
        betas=(section.optim.betas[0], section.optim.betas[1]),
        weight_decay=section.optim.weight_decay,
        warmup_steps=1,
        min_lr_ratio=0.1,
        grad_clip=1.0,
        eval_every=10**9,
        checkpoint_every=10**9,
        eval_batches=1,
        seed=0,
        device=device,
        precision=cast("Precision", precision),
        compile=compile_step,
    )


def time_steps(model: Any, loss: Any, data: Any, spec: TrainSpec, warmup: int) -> tuple[float, float]:
    """(wall, process-CPU) seconds of the steps after `warmup`; CPU time is robust to a shared machine.

    The window opens when the first measured step fetches its batch and closes when the last step is reported. Why not
    between step events: the loop reports a step only after the next one is queued (no host sync in a step), so an
    event does not mark the end of its own step."""
    import itertools
    import tempfile

    import torch

    from model.training import train

    def stamp() -> tuple[float, float]:
        if spec.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter(), time.process_time()

    fetches = itertools.count(1)
    opened: list[tuple[float, float]] = []
    closed: list[tuple[float, float]] = []

    class Stamped(type(data)):
        def rows(self, indices: Any) -> Any:
            if next(fetches) == warmup + 1:
                opened.append(stamp())
            return super().rows(indices)

    def on_step(event: Any) -> None:
        if event.kind == "step" and event.step == spec.total_steps:
            closed.append(stamp())

    with tempfile.TemporaryDirectory() as scratch:
        train(model, loss, Stamped(data.tokens, data.seq_len), None, spec, scratch, resume=False, callback=on_step)
    (wall_start, cpu_start), (wall_end, cpu_end) = opened[0], closed[0]
    return wall_end - wall_start, cpu_end - cpu_start


def run_one(
    size: str,
    kind: str,
    steps: int,
    warmup: int,
    device: str,
    precision: str,
    threads: int,
    batch: int | None,
    compile_step: bool = False,
) -> dict:
    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)

    from model.batching import PackedDataset
    from tasks.core.build import model_sizes
    from tasks.core.config import load_profile

    profile = load_profile(size)
    sizes = model_sizes(profile)
    section = profile.train_public if kind == "dense" else profile.train_expert
    batch_size = batch or section.batch_size
    seq_len = section.seq_len
    peak = peak_matmul_flops(device, "bf16" if precision == "bf16" else "fp32")
    model, loss = build_model(profile, sizes, kind)
    total = warmup + steps
    tokens = np.random.default_rng(0).integers(2, sizes.vocab_size, (total + 1) * batch_size * seq_len)
    spec = bench_spec(section, total, batch_size, device, precision, compile_step)
    measured, cpu_measured = time_steps(model, loss, PackedDataset(tokens, seq_len), spec, warmup)
    tokens_per_s = steps * batch_size * seq_len / measured
    fpt = flops_per_token(sizes, seq_len, kind)
    result = {
        "size": size,
        "kind": kind,
        "device": device,
        "precision": precision,
        "compile": compile_step,
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "seq_len": seq_len,
        "steps_measured": steps,
        "tokens_per_s": tokens_per_s,
        "flops_per_token": fpt,
        "achieved_flops": tokens_per_s * fpt,
        "mfu": tokens_per_s * fpt / peak["peak_flops"],
        "seconds_per_step": measured / steps,
        "cpu_seconds_per_step": cpu_measured / steps,
        "tokens_per_cpu_s": steps * batch_size * seq_len / cpu_measured,
        "load_average_1m": os.getloadavg()[0],
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        **peak,
    }
    if device.startswith("cuda"):
        result["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["demo", "small"])
    parser.add_argument("--kinds", nargs="+", default=["dense", "expert", "expert_full"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None, help="override the profile's batch size (e.g. small on CPU)")
    parser.add_argument("--small-steps", type=int, default=None, help="measured steps at size small (slow on CPU)")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the training step (the warm-up steps compile)"
    )
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "KIND"), help=argparse.SUPPRESS)
    return parser.parse_args()


def child_command(args: argparse.Namespace, size: str, kind: str) -> list[str]:
    """The subprocess that measures one (size, kind), so its peak resident memory is its own."""
    cmd = [sys.executable, __file__, "--one", size, kind, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--device", args.device, "--precision", args.precision, "--threads", str(args.threads)]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    if args.small_steps:
        cmd += ["--small-steps", str(args.small_steps)]
    if args.compile:
        cmd.append("--compile")
    return cmd


def child_env(environ: dict[str, str] | None = None, path: list[str] | None = None) -> dict[str, str]:
    """The parent's environment for a child, with PYTHONPATH = the repository, then the parent's PYTHONPATH, then the
    rest of its sys.path: the child imports exactly what the parent does (a device run puts its wheels in PYTHONPATH
    via `pip install --target`; a child that got only the repository found no transformers there)."""
    environ = dict(os.environ if environ is None else environ)
    entries = [str(ROOT), *environ.get("PYTHONPATH", "").split(os.pathsep), *(sys.path if path is None else path)]
    kept = list(dict.fromkeys(e for e in entries if e))  # in order, once each; "" (the cwd) is the child's own
    return {**environ, "PYTHONPATH": os.pathsep.join(kept)}


def spawn(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run one child (output captured) in the repository root with `child_env`."""
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=child_env())


def print_table(results: list[dict], sizes: list[str]) -> None:
    by = {(r["size"], r["kind"]): r for r in results}
    print(f"\n{'size':6} {'kind':12} {'tok/s':>9} {'MFU':>6} {'peak GFLOP/s':>12} {'s/step':>7} {'RSS GiB':>7}")
    for r in results:
        kind = r["kind"] + ("+compile" if r["compile"] else "")
        print(
            f"{r['size']:6} {kind:12} {r['tokens_per_s']:9.0f} {r['mfu']:6.1%} {r['peak_flops'] / 1e9:12.1f} "
            f"{r['seconds_per_step']:7.2f} {r['peak_rss_gib']:7.2f}"
        )
    for size in sizes:
        if (size, "dense") in by and (size, "expert") in by:
            ratio = by[(size, "dense")]["tokens_per_s"] / by[(size, "expert")]["tokens_per_s"]
            line = f"{size}: expert/dense cost per token = {ratio:.2f}"
            if (size, "expert_full") in by:
                full = by[(size, "expert_full")]["tokens_per_s"] / by[(size, "expert")]["tokens_per_s"]
                line += f"; expert/expert_full = {full:.2f}"
            print(line)


def main() -> None:
    args = parse_args()
    if args.one:
        size, kind = args.one
        steps = args.small_steps if (size == "small" and args.small_steps) else args.steps
        run = run_one(
            size, kind, steps, args.warmup, args.device, args.precision, args.threads, args.batch, args.compile
        )
        print(json.dumps(run))
        return
    results = []
    for size in args.sizes:
        for kind in args.kinds:
            done = spawn(child_command(args, size, kind))
            if done.returncode:
                print(done.stderr, file=sys.stderr)
                raise SystemExit(f"{size}/{kind} failed")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(result)
            print(json.dumps(result), flush=True)
    print_table(results, args.sizes)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
