"""Flow `expert`: one data owner's expert, on the owner's own worker, reading only data/<domain>.

Router embedding → coordinated training against the frozen M_pub → registration of `flexo-expert-<domain>`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import steps as pt
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile


@flow(name="expert", flow_run_name="expert-{domain}", result_serializer="json", log_prints=True)
def expert(domain: str, profile: str | Profile | None = None, fail_on_error: bool = True) -> list[dict[str, Any]]:
    """Train and register the expert of `domain` (cached on its data hash, M_pub's sha256, its router row and code)."""
    pt.check_owner(domain)
    p = pt.as_profile(profile)
    paths = RunPaths(p)
    dhash = pt.data_hash(p, domain)
    embedded = pt.run_step(
        "expert",
        "embed_domain",
        p,
        domain,
        dhash,
        pt.code_fingerprint("embed_domain"),
        domain=domain,
        expect=paths.router_embedding(domain),
    )
    out = [embedded]
    trained = pt.upstream_missing("expert", "train_expert", domain, [embedded]) or pt.run_step(
        "expert",
        "train_expert",
        p,
        domain,
        dhash,
        pt.weights_sha(paths.public_model_dir),
        embedded.result.get("sha256", ""),
        pt.code_fingerprint("train_expert"),
        domain=domain,
        expect=paths.expert_dir(domain) / "expert.safetensors",
    )
    out.append(trained)
    if p.orchestration.dense_models:
        out.append(
            pt.upstream_missing("expert", "train_dense", domain, [embedded])
            or pt.run_step(
                "expert",
                "train_dense",
                p,
                domain,
                dhash,
                pt.weights_sha(paths.public_model_dir),
                pt.code_fingerprint("train_dense"),
                domain=domain,
                expect=paths.dense_dir(domain) / "model" / "model.safetensors",
            )
        )
    skip = pt.upstream_missing("expert", "register_expert", domain, [trained])
    if skip:
        out.append(skip)
    else:
        expert_file = pt.first_path(
            trained.result, ("expert_file", "path", "expert_path"), paths.expert_dir(domain) / "expert.safetensors"
        )
        out.append(
            pt.run_step(
                "expert",
                "register_expert",
                p,
                domain,
                str(expert_file),
                pt.file_sha256(expert_file),
                dhash,
                pt.metrics_of(trained.result),
                embedded.result.get("path"),
                trained.result.get("dp_epsilon"),
                domain=domain,
            )
        )
    pt.publish(f"flexo-expert-{domain}", f"expert {domain} ({p.name})", out)
    return pt.finish(out, fail_on_error)
