"""Which assembled MoE the evaluation and the attack score: the one being served, else the one just assembled.

Why here: "the serving MoE" is a registry question (the `serving` alias, refused if revoked, sha256-verified); the run
directory's MoE is only the answer where no registry has one yet (a first run, or tests without a store).
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.artifacts import MANIFEST_FILE, RunPaths
from tasks.core.config import Profile
from tasks.core.errors import ConfigError, DataError
from tasks.core.tracking import store_exists
from tasks.registry.download import moe_dir
from tasks.registry.resolve import resolve_serving_moe


def locate_moe(profile: Profile) -> Path:
    """The registry's `serving` flexo-moe (refused if revoked, sha256-verified) when a registry exists and has one;
    else the run directory's assembled MoE. Looking never creates an empty store."""
    if store_exists(profile):
        try:
            _ref, pyfunc = resolve_serving_moe(profile)
            return moe_dir(pyfunc)
        except ConfigError:
            pass  # no serving version registered: use the run directory
    local = RunPaths(profile).moe_dir
    if not (local / MANIFEST_FILE).exists():
        raise DataError(
            f"{local}: no assembled MoE (and no `serving` flexo-moe in the registry); run `flexo assemble` first"
        )
    return local
