"""The extraction-attack stage: how much of a domain's training data can be pulled out of each model, and the admission
gate.

Why: a data owner publishing an expert needs evidence of what it leaks. We run the paper's attack (`model.extraction`)
on the domain's TRAIN split against M_pub (never saw the domain), the dense domain model, FlexOlmo with the expert,
FlexOlmo with it removed (exact opt-out: should fall back to M_pub's rate) and a DP-trained expert: an extra file at
RunPaths.expert_dir(d)/dp/expert.safetensors is attacked as its own row; when `train_expert.dp.enabled` made the main
expert DP-trained, the FlexOlmo row says so (epsilon from the file's metadata). A calibration model (M_pub overfitted
on a few windows) must be extracted at a high rate, or the attack itself is broken and the stage says so instead of
reporting reassuring zeros.

The gate (`tasks.privacy.gate`): an expert whose rate inside FlexOlmo (the paper's metric, prefix counted) exceeds
`attack.max_extraction_rate` is refused the `active` alias; the rate travels as the version tag `extraction_rate`
(`tasks.privacy.record`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import Olmo2ForCausalLM, PreTrainedModel

from model.extraction import ExtractionResult, Probe, SamplingSettings, extraction_attack, memorize
from model.hashing import sha256_file
from model.memory import collect_only_new_objects, release_freed_memory
from model.public import load_public_model
from tasks.core import build
from tasks.core.artifacts import EXPERT_FILE, WEIGHTS_FILE, RunPaths
from tasks.core.config import Profile
from tasks.core.device import torch_device
from tasks.core.errors import DataError
from tasks.core.tokenizer import load_tokenizer
from tasks.privacy.documents import AttackDocuments, attack_documents
from tasks.privacy.gate import admission_decision
from tasks.privacy.models import AttackModels
from tasks.privacy.record import record_attack
from tasks.privacy.results import (
    FLEXOLMO,
    REPORT_FILE,
    AttackResult,
    Calibration,
    CalibrationError,
    ModelRate,
    write_report,
)


@dataclass(frozen=True)
class _Extraction:
    """How every model of one attack is probed: the same settings, seed, decoding and device."""

    profile: Profile
    settings: SamplingSettings
    tokenizer: Any
    documents: AttackDocuments
    device: torch.device

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def run(self, model: PreTrainedModel, probes: list[Probe], on_batch) -> ExtractionResult:
        a = self.profile.attack
        return extraction_attack(
            model, probes, self.decode, self.settings, a.similarity_threshold, self.profile.seed, on_batch=on_batch
        )


def attack(profile: Profile, domain: str | None = None, progress: bool = True) -> AttackResult:
    """Run the calibration and the attack on every model for `domain` (default `attack.domain`); write the report.

    Raises CalibrationError (after writing the report) when the overfitted model is not extracted.
    """
    from rich.progress import Progress

    started = time.perf_counter()
    domain = domain or profile.attack.domain
    if domain not in profile.closed_domains:
        raise DataError(f"attack: '{domain}' is not a data owner's domain; choose one of {profile.closed_domains}")
    device = torch_device(profile)
    if profile.runtime.num_threads:
        torch.set_num_threads(profile.runtime.num_threads)
    paths = RunPaths(profile)
    settings = build.sampling_settings(profile)
    tokenizer = load_tokenizer(profile)
    documents = attack_documents(profile, domain, tokenizer)
    public_weights = paths.public_model_dir / WEIGHTS_FILE
    if not public_weights.exists():
        raise DataError(f"{public_weights}: M_pub is missing; run `flexo train-public` first")
    public_sha = sha256_file(public_weights)
    expert_path = paths.expert_dir(domain) / EXPERT_FILE
    expert_sha = sha256_file(expert_path) if expert_path.exists() else ""
    public = load_public_model(str(paths.public_model_dir)).eval()
    targets = AttackModels(profile, domain, public, public_sha).targets()
    extraction = _Extraction(profile, settings, tokenizer, documents, device)
    # per target, the collection scans what the attack made, not the whole process
    with Progress(transient=True, disable=not progress) as bar, collect_only_new_objects():
        calibration = _calibrate(extraction, public, bar)
        rates: dict[str, ModelRate] = {}
        for target in targets:
            task = bar.add_task(f"attack: {target.name}", total=len(documents.probes))
            t0 = time.perf_counter()
            model = target.build().to(device).eval()
            description = target.describe()
            result = extraction.run(model, documents.probes, lambda n, t=task: bar.advance(t, n))
            rates[target.name] = ModelRate.of(
                target.name, description, result, time.perf_counter() - t0, documents.doc_ids
            )
            del model
            release_freed_memory()  # this model's generation buffers (and the model, unless reused) before the next
    out = _result(profile, domain, expert_sha, documents, calibration, rates, time.perf_counter() - started)
    write_report(out)
    if not calibration.passed:
        raise CalibrationError(
            f"the attack is broken: the calibration model (M_pub overfitted on {calibration.rate.num_docs} windows, "
            f"final loss {calibration.final_loss:.3f}) was extracted at {calibration.rate.rate:.0%}, below "
            f"attack.min_calibration_rate {profile.attack.min_calibration_rate:.0%}; its low rates on the real models "
            f"prove nothing. Report: {out.report_path}"
        )
    return out


def _calibrate(extraction: _Extraction, public: Olmo2ForCausalLM, bar) -> Calibration:
    """M_pub overfitted on a few training windows must be extracted, or the attack is broken."""
    a, probes = extraction.profile.attack, extraction.documents.calibration_probes
    task = bar.add_task("calibration: overfitting", total=a.calibration_epochs + len(probes))
    t0 = time.perf_counter()
    overfit = copy.deepcopy(public).to(extraction.device)
    windows = torch.tensor([p.window for p in probes], dtype=torch.long)
    loss = memorize(
        overfit,
        windows,
        a.calibration_epochs,
        a.calibration_lr,
        extraction.profile.seed,
        on_epoch=lambda *_: bar.advance(task),
    )
    bar.update(task, description="calibration: attacking")
    result = extraction.run(overfit, probes, lambda n: bar.advance(task, n))
    seconds = time.perf_counter() - t0
    description = f"M_pub overfitted {a.calibration_epochs} epochs on {len(probes)} training windows"
    rate = ModelRate.of("calibration", description, result, seconds, extraction.documents.doc_ids)
    return Calibration(rate, a.calibration_epochs, loss, a.min_calibration_rate, seconds)


def _result(
    profile: Profile,
    domain: str,
    expert_sha: str,
    documents: AttackDocuments,
    calibration: Calibration,
    rates: dict[str, ModelRate],
    seconds: float,
) -> AttackResult:
    """The gate's verdict on the FlexOlmo rate, with everything the report holds."""
    gate_rate = rates[FLEXOLMO].rate
    admitted, reason = admission_decision(gate_rate, profile)
    return AttackResult(
        profile=profile.name,
        domain=domain,
        expert_sha256=expert_sha,
        train_docs=documents.train_docs,
        eligible_docs=documents.eligible,
        too_short_docs=documents.train_docs - documents.eligible,
        settings=profile.attack.model_dump(),
        calibration=calibration,
        models=rates,
        extraction_rate=gate_rate,
        admitted=admitted,
        reason=reason,
        report_path=RunPaths(profile).attack_dir / domain / REPORT_FILE,
        seconds=seconds,
    )


def attack_and_record(profile: Profile, domain: str) -> dict:
    """The stage as the pipeline runs it: attack, log to MLflow, tag the expert version; a small JSON-able summary."""
    result = attack(profile, domain, progress=False)
    version = record_attack(profile, result)
    return {
        "domain": domain,
        "rates": result.rates(),
        "extraction_rate": result.extraction_rate,
        "admitted": result.admitted,
        "reason": result.reason,
        "expert_version": version,
        "report": str(result.report_path),
    }
