"""The revocation certificate's extraction evidence: the rate at which the attack extracts the revoked owner's
training documents from the new serving MoE, against M_pub's on the same windows.

Why here: the certificate (tasks.registry.certificate) is written by the registry, while the attack lives in
tasks.privacy, above it; the flows layer may import both. Why a module of its own: `flexo revoke` runs it too, without
importing Prefect and every pipeline step the `revoke` flow brings in.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from tasks.core.config import Profile
from tasks.core.errors import FlexoError


def certify_extraction(profile: Profile, certificate: Mapping[str, Any], by: str | None = None) -> dict[str, Any]:
    """The certificate with the extraction evidence added, in its file and the audit trail
    (`tasks.registry.certificate.record_extraction`). A measurement that cannot run (no train split of the owner, M_pub
    missing) is recorded with its reason: the revocation and the rest of the certificate stand."""
    from tasks.registry.certificate import record_extraction

    try:
        extraction = measure_extraction(profile, certificate)
    except FlexoError as err:
        extraction = {"measured": False, "verdict": f"extraction rate not measured: {err}"}
    return record_extraction(profile, certificate, extraction, by)


def measure_extraction(profile: Profile, certificate: Mapping[str, Any]) -> dict[str, Any]:
    """The attack (`attack.*` settings, its own probes, sampling and calibration) on the revoked owner's training
    documents against the new serving MoE and against the M_pub it was assembled on, the same windows for both;
    compared by `tasks.registry.certificate.extraction_comparison`."""
    import torch

    from model.extraction import extraction_attack, memorize
    from model.hashing import sha256_file
    from model.public import load_moe, load_public_model
    from tasks.core import build
    from tasks.core.artifacts import WEIGHTS_FILE, RunPaths
    from tasks.core.device import torch_device
    from tasks.core.errors import IntegrityError
    from tasks.core.tokenizer import load_tokenizer
    from tasks.privacy.documents import attack_documents
    from tasks.registry.certificate import extraction_comparison
    from tasks.registry.download import fetch, moe_dir
    from tasks.registry.store import get_version
    from tasks.training.assemble import read_manifest

    a = profile.attack
    name = str(certificate["expert"]).rsplit(":", 1)[0]
    domain = name.removeprefix(profile.registry.expert_model_prefix)
    serving_dir = moe_dir(fetch(profile, get_version(profile, *str(certificate["serving_moe"]).rsplit(":", 1))))
    public_dir = RunPaths(profile).public_model_dir
    built_on = read_manifest(serving_dir).get("public_sha256")
    if not (public_dir / WEIGHTS_FILE).exists() or sha256_file(public_dir / WEIGHTS_FILE) != built_on:
        raise IntegrityError(
            f"{public_dir / WEIGHTS_FILE}: missing, or not the M_pub {certificate['serving_moe']} was assembled on "
            f"(sha256 {built_on}); M_pub's level cannot be measured"
        )
    tokenizer = load_tokenizer(profile)
    documents = attack_documents(profile, domain, tokenizer)
    settings, device = build.sampling_settings(profile), torch_device(profile)

    def attack(model: Any, probes: list) -> list[bool]:
        """Per probe: was it extracted (the attack's metric, the shared prefix counted)."""
        result = extraction_attack(
            model.to(device).eval(),
            probes,
            lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
            settings,
            a.similarity_threshold,
            profile.seed,
        )
        return [score.best_with_prefix >= result.threshold for score in result.scores]

    public = load_public_model(str(public_dir)).eval()
    overfit = copy.deepcopy(public).to(device)
    calibration = documents.calibration_probes
    windows = torch.tensor([probe.window for probe in calibration], dtype=torch.long)
    memorize(overfit, windows, a.calibration_epochs, a.calibration_lr, profile.seed)
    calibrated = attack(overfit, calibration)
    del overfit
    on_public = attack(public, documents.probes)
    on_serving = attack(load_moe(str(serving_dir)), documents.probes)
    source = f"{len(documents.probes)} windows of data/{domain}/train ({documents.eligible} eligible documents)"
    return extraction_comparison(
        on_serving, on_public, sum(calibrated) / len(calibrated), a.min_calibration_rate, source
    )
