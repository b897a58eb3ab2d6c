"""What the registry writes and reads: aliases, statuses, tag keys and pyfunc keys, and `VersionRef`, the one view of a
registered version the rest of flexo sees (with the rule that a revoked version may not be used).

Registered models (DESIGN.md "Names"): `flexo-public`, `flexo-expert-<domain>`, `flexo-moe`. Stages are deprecated in
MLflow 3, so aliases and tags carry the lifecycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.config import Profile
from tasks.core.errors import RevokedError

ACTIVE_ALIAS = "active"  # on expert (and M_pub) versions whose checks passed
SERVING_ALIAS = "serving"  # on the flexo-moe version `flexo serve` / `flexo generate` use
STATUS_ACTIVE = "active"
STATUS_REVOKED = "revoked"
STATUS_REVOKED_DEPENDENCY = "revoked_dependency"  # a flexo-moe version holding a revoked expert

# version tags
TAG_DOMAIN = "domain"
TAG_OWNER = "owner"
TAG_DATA_MD5 = "data_md5"
TAG_SHA256 = "sha256"
TAG_STATUS = "status"
TAG_REVOKED_BY = "revoked_by"
TAG_REVOKED_AT = "revoked_at"
TAG_REVOKED_REASON = "revoked_reason"
TAG_REVOKED_DEPENDENCY = "revoked_dependency"  # on a flexo-moe version: "<expert model>:<version>" it held
TAG_ALIAS_WITHHELD = "alias_withheld"  # the failed checks that kept `active` off a version
CHECK_TAG_PREFIX = "check."  # check.<name> = passed | failed
METRIC_TAG_PREFIX = "metric."
EXPERTS_TAG = "experts"  # on MoE versions: "news:3,math:1" (exact expert versions inside)
EXPERT_TAG_PREFIX = "expert."  # on MoE versions: expert.<domain> = version
TAG_FILES = "files_sha256"  # JSON {relative path: sha256} of every stored file of the version (registry.digests)

# the flexo-moe pyfunc ("model from code": this entry file plus safetensors, no pickled python object)
PYFUNC_ENTRY = Path(__file__).with_name("serving_entry.py")
MOE_ARTIFACT = "moe"  # the pyfunc's artifact key: the assembled model directory
# the pyfunc's model_config keys
MAX_NEW_TOKENS_KEY = "max_new_tokens"  # default answer length
HOLDINGS_KEY = "experts"  # {domain: version}: the expert versions inside, whose consent every answer checks
PREFIX_KEY = "expert_model_prefix"  # registered model of domain d: <prefix><d>
REGISTRY_URI_KEY = "registry_uri"  # the store it was registered in, without credentials ($MLFLOW_TRACKING_URI wins)
CONSENT_TTL_KEY = "consent_ttl_s"  # seconds a served answer may rely on the last reading of the registry


@dataclass(frozen=True)
class VersionRef:
    """One registered version, as the rest of flexo sees it."""

    name: str
    version: str
    domain: str
    sha256: str
    owner: str
    status: str
    aliases: tuple[str, ...]
    source: str
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} version {self.version}"


def expert_model_name(profile: Profile, domain: str) -> str:
    """The registered model holding `domain`'s expert versions."""
    return f"{profile.registry.expert_model_prefix}{domain}"


def check_usable(ref: VersionRef) -> None:
    """RevokedError naming the revocation if this version (or an expert inside it) was revoked."""
    if ref.status == STATUS_REVOKED:
        raise RevokedError(
            f"{ref.label} was revoked by {ref.tags.get(TAG_REVOKED_BY, '?')} at {ref.tags.get(TAG_REVOKED_AT, '?')}: "
            f'"{ref.tags.get(TAG_REVOKED_REASON, "")}". It may not be loaded; '
            "`flexo experts` shows the active versions."
        )
    if ref.status == STATUS_REVOKED_DEPENDENCY:
        raise RevokedError(
            f"{ref.label} contains a revoked expert ({ref.tags.get(TAG_REVOKED_DEPENDENCY, '?')}); use the current "
            f"`{SERVING_ALIAS}` version, re-assembled without it"
        )
