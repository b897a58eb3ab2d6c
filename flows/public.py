"""Flow `public`: train M_pub on public data (with the public-only tokenizer), or adopt an existing model as M_pub
(`anchor`: no training run), register `flexo-public`, and compute the public router row r_pub.

Why r_pub here: it is public data's, every owner's coordinated training reads it, and computed lazily inside the first
owner's training it was that run's one-off (embedding the public sample: about 5 s in bf16, 20 s in fp32 on 2 cores),
hidden in a training step instead of shown and cached as a step of its own."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.inputs import as_profile, data_hash, metrics_of, tokenizer_sha, weights_sha
from flows.outcomes import finish, publish, upstream_missing
from flows.runner import run_step
from flows.steps import code_fingerprint
from tasks.core.artifacts import WEIGHTS_FILE, RunPaths
from tasks.core.config import Profile


@flow(name="public", result_serializer="json", log_prints=True)
def public(profile: str | Profile | None = None, fail_on_error: bool = True) -> list[dict[str, Any]]:
    """Pretrain the public model, or adopt the anchor (cached on the public data hash, the tokenizer, the profile with
    its `anchor` section, and the code); register it."""
    p = as_profile(profile)
    public_hash = data_hash(p, "public")
    trained = run_step(
        "public",
        "train_public",
        p,
        public_hash,
        tokenizer_sha(p),
        code_fingerprint("train_public"),
        expect=RunPaths(p).public_model_dir / WEIGHTS_FILE,
    )
    out = [trained]
    skip = upstream_missing("public", "register_public", None, [trained])
    if skip:
        out.append(skip)
    else:
        model_dir = trained.result["model_dir"]
        out.append(
            run_step(
                "public",
                "register_public",
                p,
                model_dir,
                weights_sha(model_dir),
                public_hash,
                metrics_of(trained.result),
            )
        )
    out.append(
        run_step(
            "public",
            "embed_domain",
            p,
            "public",
            public_hash,
            code_fingerprint("embed_domain"),
            domain="public",
            expect=RunPaths(p).router_embedding("public"),
        )
    )
    publish("flexo-public", f"public model ({p.name})", out)
    return finish(out, fail_on_error)
