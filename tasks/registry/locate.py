"""Which assembled MoE the evaluation and the attack score: the one being served, else the one just assembled.

Why here: "the serving MoE" is a registry question (the `serving` alias, refused if it or an expert inside is revoked
or withdrawn, every file sha256-verified); the run directory's MoE is only the answer where no registry has one yet (a
first run, or tests without a store), and even then an expert the registry withdrew refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.core.artifacts import MANIFEST_FILE, RunPaths
from tasks.core.config import Profile
from tasks.core.errors import ConfigError, DataError
from tasks.core.tracking import store_exists
from tasks.registry.consent import check_assembled
from tasks.registry.download import moe_dir
from tasks.registry.resolve import resolve_serving_moe


def locate_moe(profile: Profile) -> Path:
    """The registry's `serving` flexo-moe (refused if it or an expert inside is withdrawn, sha256-verified) when a
    registry exists and has one; else the run directory's assembled MoE (refused if the registry withdrew an expert
    inside). Looking never creates an empty store."""
    if store_exists(profile):
        try:
            _ref, pyfunc = resolve_serving_moe(profile)
            return moe_dir(pyfunc)
        except ConfigError:
            pass  # no serving version registered: use the run directory
    local = RunPaths(profile).moe_dir
    if not (local / MANIFEST_FILE).exists():
        raise DataError(
            f"{local}: no assembled MoE (and no `serving` flexo-moe in the registry); "
            "run `flexo run --stage assemble` first"
        )
    if store_exists(profile):
        check_assembled(profile, json.loads((local / MANIFEST_FILE).read_text()), str(local))
    return local
