"""What the mixed-domain documents add to an evaluation: their requests and tokens beside the FLEXMIX tasks', and one
M_pub pass over each set, timed (every family's pass scores both sets, so the ratio is the added share of a pass).

Reads a profile's test splits, tokenizer and M_pub (the data stage and `train-public`, or the anchor, must have run);
`--data-dir`/`--runs-dir` read them from another checkout (read only: nothing is written). The timing is wall time on
this machine, reported with the load average and the CPU share the process got.

Usage:  .venv/bin/python benchmarks/eval_mixed_cost.py [--profile anchor-demo] [--threads 2] [--data-dir D]
        [--runs-dir R] [--count-only]
Prints one JSON object and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _timed(requests: list, model, batch_size: int, pad_id: int) -> dict[str, float]:
    import torch

    from model.scoring import model_scorer, score_requests

    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.no_grad():
        score_requests(requests, model_scorer(model, "m"), batch_size, pad_id)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_share": (time.process_time() - cpu_start) / seconds / torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="anchor-demo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=None, help="read the data from here instead of the profile's paths")
    parser.add_argument("--runs-dir", default=None, help="read M_pub and the anchor tokenizer from here")
    parser.add_argument("--count-only", action="store_true", help="requests and tokens only: no model is loaded")
    args = parser.parse_args()

    import torch

    import tasks  # noqa: F401  (offline)
    from model.public import load_public_model
    from tasks.core.artifacts import RunPaths
    from tasks.core.config import load_profile
    from tasks.core.tokenizer import load_tokenizer
    from tasks.evaluation.inputs import append_mixed, load_test_frames, tokenize_tasks
    from tasks.evaluation.mixed import build_mixed
    from tasks.evaluation.tasks import build_tasks

    torch.set_num_threads(args.threads)
    profile = load_profile(args.profile)
    overrides = {k: v for k, v in (("data_dir", args.data_dir), ("runs_dir", args.runs_dir)) if v}
    profile = profile.model_copy(update={"paths": profile.paths.model_copy(update=overrides)})
    tokenizer = load_tokenizer(profile)
    frames = load_test_frames(profile)
    flexmix = build_tasks(frames, profile.eval, profile.seed)
    requests, layout = tokenize_tasks(flexmix, tokenizer, profile.model.max_seq_len)
    docs = build_mixed(frames, profile.eval, profile.seed)
    _, combined, _ = append_mixed(requests, layout, docs, tokenizer, profile.model.max_seq_len)
    mixed = combined[len(requests) :]

    def tokens(rs: list) -> int:
        return sum(len(r.context) + len(r.target) for r in rs)

    result: dict[str, object] = {
        "profile": args.profile,
        "threads": args.threads,
        "load_average_1m": os.getloadavg()[0],
        "mixed_docs": len(docs),
        "flexmix_requests": len(requests),
        "flexmix_tokens": tokens(requests),
        "mixed_requests": len(mixed),
        "mixed_tokens": tokens(mixed),
        "added_share_of_tokens": tokens(mixed) / tokens(requests),
    }
    line = (
        f"\n{len(requests)} FLEXMIX requests ({tokens(requests)} tokens); {len(docs)} mixed documents, {len(mixed)} "
        f"requests ({tokens(mixed)} tokens): +{100 * tokens(mixed) / tokens(requests):.1f}% of the tokens"
    )
    if not args.count_only:
        public = load_public_model(str(RunPaths(profile).public_model_dir)).eval()
        pad, batch = tokenizer.pad_token_id, profile.eval.batch_size
        flex_time, mixed_time = _timed(requests, public, batch, pad), _timed(mixed, public, batch, pad)
        result |= {
            "m_pub_seconds_flexmix": flex_time["seconds"],
            "m_pub_seconds_mixed": mixed_time["seconds"],
            "cpu_share": min(flex_time["cpu_share"], mixed_time["cpu_share"]),
            "added_share_of_a_pass": mixed_time["seconds"] / flex_time["seconds"],
        }
        line += f"; M_pub {flex_time['seconds']:.1f} s and {mixed_time['seconds']:.1f} s"
    print(json.dumps(result))
    print(line)


if __name__ == "__main__":
    main()
