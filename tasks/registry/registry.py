"""The MLflow model registry for flexo, in one import: every expert a separately versioned, revocable model.

Callers (the flows, the CLI, the attack's gate, tests) use this module; each job lives in its own:
`names` (aliases, statuses, tags, `VersionRef`, `check_usable`), `store` (the client and version queries), `register`
(M_pub and experts, the checks that give or take `active`), `moe_version` (the `flexo-moe` pyfunc), `download`
(fetch and sha256 verification) and `resolve` (the active experts, the serving MoE).
"""

from __future__ import annotations

from tasks.core.tracking import tracking_uri
from tasks.registry.download import expert_files, fetch, moe_dir, verify
from tasks.registry.moe_version import model_card, register_moe
from tasks.registry.names import (
    ACTIVE_ALIAS,
    EXPERT_TAG_PREFIX,
    EXPERTS_TAG,
    MAX_NEW_TOKENS_KEY,
    MOE_ARTIFACT,
    SERVING_ALIAS,
    STATUS_ACTIVE,
    STATUS_REVOKED,
    STATUS_REVOKED_DEPENDENCY,
    VersionRef,
    check_usable,
    expert_model_name,
)
from tasks.registry.register import record_check, register_expert, register_public
from tasks.registry.resolve import moe_versions_containing, resolve_active_experts, resolve_serving_moe
from tasks.registry.store import by_alias, client, get_version, versions, versions_if_any

__all__ = [
    "ACTIVE_ALIAS",
    "EXPERTS_TAG",
    "EXPERT_TAG_PREFIX",
    "MAX_NEW_TOKENS_KEY",
    "MOE_ARTIFACT",
    "SERVING_ALIAS",
    "STATUS_ACTIVE",
    "STATUS_REVOKED",
    "STATUS_REVOKED_DEPENDENCY",
    "VersionRef",
    "by_alias",
    "check_usable",
    "client",
    "expert_files",
    "expert_model_name",
    "fetch",
    "get_version",
    "model_card",
    "moe_dir",
    "moe_versions_containing",
    "record_check",
    "register_expert",
    "register_moe",
    "register_public",
    "resolve_active_experts",
    "resolve_serving_moe",
    "tracking_uri",  # the store every call above goes to (`flexo experts` prints it)
    "verify",
    "versions",
    "versions_if_any",
]
