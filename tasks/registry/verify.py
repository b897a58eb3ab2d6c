"""Before the pipeline reuses a cached assembly: the expert files it was made of and the MoE it registered still hash to
what the registry recorded.

Why: the assemble step is cached on the active experts' sha256 *tags*, so a file changed in the artifact store would
not change its key. This check runs on every pipeline run (it is never cached): it downloads and hashes every active
expert and the `serving` MoE (weights, served code, model card), and says when the cached assembly cannot stand for
what is served, so the step re-runs instead of reporting a stale hit.
"""

from __future__ import annotations

from typing import Any

from tasks.core.config import Profile
from tasks.registry.consent import holdings
from tasks.registry.download import fetch
from tasks.registry.names import SERVING_ALIAS, STATUS_ACTIVE, TAG_FILES
from tasks.registry.resolve import resolve_active_experts
from tasks.registry.store import by_alias


def verify_assembly(profile: Profile) -> dict[str, Any]:
    """IntegrityError naming the file when an active expert's or the serving MoE's stored bytes changed; otherwise
    what was verified and whether the assembly must be redone (`refresh`): no usable `serving` version, one registered
    without a record of its files, or one holding other expert versions than the active ones."""
    refs = resolve_active_experts(profile)
    verified = []
    for ref in refs:
        fetch(profile, ref)
        verified.append(f"{ref.name}:{ref.version}")
    serving = by_alias(profile, profile.registry.moe_model, SERVING_ALIAS)
    if serving is None or serving.status != STATUS_ACTIVE or TAG_FILES not in serving.tags:
        return {"serving": "", "refresh": True, "verified": verified}
    fetch(profile, serving)
    verified.append(f"{serving.name}:{serving.version}")
    stale = holdings(serving) != {ref.domain: ref.version for ref in refs}
    return {"serving": f"{serving.name}:{serving.version}", "refresh": stale, "verified": verified}
