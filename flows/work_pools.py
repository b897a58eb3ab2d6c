"""Work pools: one process pool per data owner (the embedded default), plus Docker and Kubernetes GPU pool templates.

Why: each owner's training must run on the owner's own machine and read only the owner's data, so every owner gets
its own pool (`<prefix><owner>`) and `flexo worker --owner <domain>` serves only that pool. The GPU templates in
`deploy/work-pools/` are checked with Prefect's own base-job-template validation (every `{{ var }}` declared), their
defaults with Prefect's JSON-schema validation, and rendered with Prefect's templating to prove the GPU request
(`nvidia.com/gpu` for Kubernetes, an nvidia device request for Docker) reaches the job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tasks.core.config import REPO_ROOT, Profile
from tasks.core.errors import ConfigError

TEMPLATES_DIR = REPO_ROOT / "deploy" / "work-pools"
GPU_TEMPLATES = {"docker": "docker-gpu.json", "kubernetes": "kubernetes-gpu.json"}
SHARED = "shared"


@dataclass(frozen=True)
class PoolSpec:
    name: str
    type: str
    description: str
    base_job_template: dict[str, Any]


def owner_of(profile: Profile, who: str) -> tuple[str, str]:
    """(domain, owner) for a domain name or an owner name; ConfigError listing the choices otherwise."""
    for domain, cfg in profile.domains.items():
        if who in (domain, cfg.owner) and domain != "public":
            return domain, cfg.owner
    choices = ", ".join(f"{d} ({c.owner})" for d, c in profile.domains.items() if d != "public")
    raise ConfigError(f"--owner '{who}' is neither a data owner's domain nor an owner; choose one of: {choices}")


def pool_name(profile: Profile, owner: str) -> str:
    return f"{profile.orchestration.work_pool_prefix}{owner}"


def process_template() -> dict[str, Any]:
    """Prefect's own default base job template for process workers (the embedded default)."""
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()


def load_template(kind: str) -> dict[str, Any]:
    if kind not in GPU_TEMPLATES:
        raise ConfigError(f"no GPU job template for pool type '{kind}'; choose one of {sorted(GPU_TEMPLATES)}")
    path = TEMPLATES_DIR / GPU_TEMPLATES[kind]
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable JSON job template: {exc}") from exc


def defaults(template: dict[str, Any]) -> dict[str, Any]:
    return {k: v["default"] for k, v in template["variables"].get("properties", {}).items() if "default" in v}


def validate_template(
    template: dict[str, Any], job_variables: dict[str, Any] | None = None, source: str = "template"
) -> dict[str, Any]:
    """Validate with Prefect's own checks; return the job configuration rendered with defaults + `job_variables`."""
    from prefect._internal.schemas.validators import validate_values_conform_to_schema
    from prefect.server.schemas.actions import validate_base_job_template
    from prefect.utilities.templating import apply_values

    try:
        validate_base_job_template(template)
        values = {**defaults(template), **(job_variables or {})}
        validate_values_conform_to_schema(values, template["variables"], ignore_required=True)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return apply_values(template["job_configuration"], values)


def gpu_request(kind: str, rendered: dict[str, Any]) -> int:
    """The number of GPUs a rendered job asks for (0 if none): what the GPU pools exist for."""
    if kind == "kubernetes":
        container = rendered["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
        return int(container["resources"]["limits"].get("nvidia.com/gpu", 0))
    requests = rendered.get("container_create_kwargs", {}).get("device_requests", [])
    return sum(int(r.get("Count", 0)) for r in requests if "gpu" in sum(r.get("Capabilities", []), []))


def check_gpu_templates() -> dict[str, int]:
    """Validate both GPU templates; {kind: GPUs requested by default}. ConfigError if one asks for none."""
    out = {}
    for kind in GPU_TEMPLATES:
        rendered = validate_template(load_template(kind), source=str(TEMPLATES_DIR / GPU_TEMPLATES[kind]))
        out[kind] = gpu_request(kind, rendered)
        if out[kind] < 1:
            raise ConfigError(f"{GPU_TEMPLATES[kind]}: the rendered job requests no GPU")
    return out


def pools(profile: Profile, gpu: bool = False) -> list[PoolSpec]:
    """The pools `flexo deploy` creates: one process pool per owner, one shared; the GPU pools when asked."""
    template = process_template()
    specs = [
        PoolSpec(
            pool_name(profile, profile.domains[d].owner),
            "process",
            f"flexo: {profile.domains[d].owner}'s own machine (domain {d}); reads only data/{d}",
            template,
        )
        for d in profile.closed_domains
    ]
    specs.append(
        PoolSpec(
            pool_name(profile, SHARED), "process", "flexo: public model, assembly, evaluation, revocation", template
        )
    )
    if gpu:
        for kind in GPU_TEMPLATES:
            specs.append(
                PoolSpec(pool_name(profile, f"{kind}-gpu"), kind, f"flexo: {kind} GPU jobs", load_template(kind))
            )
    return specs


def create_pools(specs: list[PoolSpec]) -> list[str]:
    """Create (or update the template of) each pool on the Prefect server in use; return their names."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        for spec in specs:
            try:
                client.create_work_pool(
                    WorkPoolCreate(
                        name=spec.name,
                        type=spec.type,
                        description=spec.description,
                        base_job_template=spec.base_job_template,
                    )
                )
            except ObjectAlreadyExists:
                client.update_work_pool(
                    spec.name, WorkPoolUpdate(description=spec.description, base_job_template=spec.base_job_template)
                )
    return [s.name for s in specs]
