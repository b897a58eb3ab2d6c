"""Flow `public`: train M_pub on public data (with the public-only tokenizer) and register `flexo-public`."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import steps as pt
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile


@flow(name="public", result_serializer="json", log_prints=True)
def public(profile: str | Profile | None = None, fail_on_error: bool = True) -> list[dict[str, Any]]:
    """Pretrain the public model (cached on the public data hash, the tokenizer and the code); register it."""
    p = pt.as_profile(profile)
    paths = RunPaths(p)
    public_hash = pt.data_hash(p, "public")
    tokenizer_hash = pt.file_sha256(paths.tokenizer_dir) if paths.tokenizer_dir.exists() else ""
    trained = pt.run_step(
        "public",
        "train_public",
        p,
        public_hash,
        tokenizer_hash,
        pt.code_fingerprint("train_public"),
        expect=paths.public_model_dir / "model.safetensors",
    )
    out = [trained]
    skip = pt.upstream_missing("public", "register_public", None, [trained])
    if skip:
        out.append(skip)
    else:
        model_dir = pt.first_path(trained.result, ("model_dir", "public_model_dir", "path"), paths.public_model_dir)
        out.append(
            pt.run_step(
                "public",
                "register_public",
                p,
                str(model_dir),
                pt.weights_sha(model_dir),
                public_hash,
                pt.metrics_of(trained.result),
            )
        )
    pt.publish("flexo-public", f"public model ({p.name})", out)
    return pt.finish(out, fail_on_error)
