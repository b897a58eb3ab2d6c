"""How in-domain router tuning's proxy sets are, against the size of the public pool they are ranked from.

Why: router tuning (RT, paper §3.3.3) only teaches the router to send a domain's tokens to its expert when the owner's
proxy set D̂_i (public documents most like the owner's data) holds documents of that domain. On `demo` and
`anchor-demo` the 2,000-document pool holds none nearer code than the public mix (reports' `proxy_in_domain_code`
0.00). This measures, on a profile's built data (no model, no run), for each pool size: each proxy set's in-domain
share (`tasks.evaluation.proxy.in_domain_shares`, as the report's training notes define it) and how many documents of
the whole pool are nearest each owner's centroid. The largest pool is encoded once: every smaller pool is a prefix of
it (`sample_documents` takes a prefix of one seeded permutation), exactly the pool `eval.rt_proxy_pool` = n would use.

Each centroid is computed as `flexo`'s router step computes it (`router_sample`, the encoder, `domain_embedding`),
here on one machine that holds every domain's data: a stand-in for what each owner sends, never stored.

Usage:  .venv/bin/python benchmarks/proxy_pool.py --profile small [--pools 2000 8000 32000] [--out FILE]
Prints one JSON document and a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EXAMPLE_CHARS = 120  # the start of each owner's best-ranked proxy document, shown so a reader can judge it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--pools", type=int, nargs="+", default=None, help="pool sizes (default: eval.rt_proxy_pool)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    import numpy as np

    from model.router import domain_embedding
    from tasks.core.config import load_profile
    from tasks.core.datasets import read_texts
    from tasks.evaluation.proxy import PUBLIC, in_domain_shares, nearest_centroid, select_proxies
    from tasks.training.route import encode, router_sample, sample_documents

    profile = load_profile(profile=args.profile)
    pools = sorted(set(args.pools or [profile.eval.rt_proxy_pool]))
    if pools[0] <= 0:
        parser.error("--pools: every size must be positive")
    owners = [d for d in profile.domains if d != PUBLIC]
    per_domain = profile.eval.rt_proxy_docs
    started = time.perf_counter()

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(encode(texts, profile.router.embed_batch_size, profile.runtime.precision))

    centroids = {d: domain_embedding(embed(router_sample(profile, d))) for d in [PUBLIC, *owners]}
    centroid_seconds = time.perf_counter() - started
    public_texts = read_texts(profile, PUBLIC, "train")
    largest = sample_documents(public_texts, pools[-1], profile.seed)
    encode_started = time.perf_counter()
    pool_embeddings = embed(largest)
    encode_seconds = time.perf_counter() - encode_started
    rows = {d: centroids[d] for d in owners}
    names, nearest = nearest_centroid(pool_embeddings, rows, centroids[PUBLIC])

    results = []
    for size in pools:
        n = min(size, len(largest))
        shares = in_domain_shares(pool_embeddings[:n], rows, centroids[PUBLIC], per_domain)
        counts = {d: int(np.sum(nearest[:n] == names.index(d))) for d in names}
        best = select_proxies(largest[:n], pool_embeddings[:n], rows, 1)
        results.append(
            {
                "pool": n,
                "in_domain_share": shares,
                "pool_nearest_count": counts,
                "best_proxy_start": {d: " ".join(best[d][0].split())[:EXAMPLE_CHARS] for d in owners},
            }
        )
    doc = {
        "benchmark": "proxy_pool",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "profile": profile.name,
        "data_dir": str(profile.paths.data_dir),
        "public_train_documents": len(public_texts),
        "rt_proxy_docs": per_domain,
        "router_embed_docs": profile.router.embed_docs,
        "precision": profile.runtime.precision,
        "seconds": {"centroids": round(centroid_seconds, 1), "pool_encode": round(encode_seconds, 1)},
        "pools": results,
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(_table(doc, owners))


def _table(doc: dict, owners: list[str]) -> str:
    head = "| pool | " + " | ".join(owners) + " |"
    lines = [f"\nIn-domain share of each {doc['rt_proxy_docs']}-document proxy set (pool documents nearest the owner)"]
    lines += [head, "|" + "---:|" * (len(owners) + 1)]
    for row in doc["pools"]:
        cells = [f"{row['in_domain_share'][d]:.2f} ({row['pool_nearest_count'][d]})" for d in owners]
        lines.append(f"| {row['pool']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
