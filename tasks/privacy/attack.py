"""The extraction-attack stage: how much of a domain's training data can be pulled out of each model, and the admission gate.

Why: a data owner publishing an expert needs evidence of what it leaks. We run the paper's attack (`model.extraction`) on
the domain's TRAIN split against M_pub (never saw the domain), the dense domain model, FlexOlmo with the expert, FlexOlmo
with it removed (exact opt-out: should fall back to M_pub's rate) and a DP-trained expert: an extra file at
RunPaths.expert_dir(d)/dp/expert.safetensors is attacked as its own row; when `train_expert.dp.enabled` made the main expert
DP-trained, the FlexOlmo row says so (epsilon from the file's metadata). A calibration model (M_pub overfitted on a few
windows) must be extracted at a high rate, or the attack itself is broken and the stage says so instead of reporting
reassuring zeros.

The gate: an expert whose rate inside FlexOlmo (the paper's metric, prefix counted) exceeds `attack.max_extraction_rate` is
refused the `active` alias. The registry calls `admission_decision`; the rate travels as the version tag `extraction_rate`.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer, FlexOlmoForCausalLM, Olmo2ForCausalLM, PreTrainedModel

from model.extraction import ExtractionResult, Probe, SamplingSettings, extraction_attack, make_probes, memorize
from model.hashing import sha256_file
from model.merge import MergeError, layer_experts, merge_experts
from model.optout import keep_experts
from model.public import load_moe, load_public_model
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.errors import DataError, FlexoError, GateError, IntegrityError

# MLflow model-version tags the attack writes (the registry and `flexo experts` read them).
TAG_EXTRACTION_RATE = "extraction_rate"
TAG_EXTRACTION_RATE_NO_PREFIX = "extraction_rate_no_prefix"
TAG_ADMISSION = "extraction_admission"  # "admitted" | "refused"
TAG_ADMISSION_REASON = "extraction_reason"
GATE_CHECK = "extraction"  # the registry's check name: version tag `check.extraction` = passed | failed

EXPERT_FILE = "expert.safetensors"
DP_SUBDIR = (
    "dp"  # an extra DP-trained expert to compare: RunPaths.expert_dir(d)/dp/expert.safetensors (attacked if present)
)
REPORT_FILE = "report.json"

# Model keys in the result, in report order.
PUBLIC, DENSE, FLEXOLMO, FLEXOLMO_WITHOUT, FLEXOLMO_DP = (
    "public",
    "dense",
    "flexolmo",
    "flexolmo_without",
    "flexolmo_dp",
)


class CalibrationError(FlexoError):
    """The overfitted calibration model was not extracted: the attack cannot detect memorisation, its zeros mean nothing."""


@dataclass(frozen=True)
class ModelRate:
    """One model's extraction numbers. `rate` counts the shared prefix (paper); `rate_no_prefix` compares continuations only."""

    name: str
    description: str
    num_docs: int
    extracted: int
    rate: float
    extracted_no_prefix: int
    rate_no_prefix: float
    mean_similarity: float
    mean_similarity_no_prefix: float
    seconds: float
    doc_scores: list[dict] = field(default_factory=list, repr=False)

    @classmethod
    def of(
        cls, name: str, description: str, result: ExtractionResult, seconds: float, doc_ids: list[str]
    ) -> ModelRate:
        scores = [
            {
                "id": doc_ids[s.doc_index],
                "offset": s.offset,
                "best": round(s.best_with_prefix, 4),
                "best_no_prefix": round(s.best_without_prefix, 4),
                "best_sample": s.best_sample,
            }
            for s in result.scores
        ]
        return cls(
            name=name,
            description=description,
            num_docs=result.num_docs,
            extracted=result.extracted(True),
            rate=result.rate(True),
            extracted_no_prefix=result.extracted(False),
            rate_no_prefix=result.rate(False),
            mean_similarity=result.mean_best(True),
            mean_similarity_no_prefix=result.mean_best(False),
            seconds=seconds,
            doc_scores=scores,
        )


@dataclass(frozen=True)
class Calibration:
    """The sanity check: M_pub overfitted on `num_docs` windows must be extracted at >= `required_rate`."""

    rate: ModelRate
    epochs: int
    final_loss: float
    required_rate: float
    seconds: float

    @property
    def passed(self) -> bool:
        return self.rate.rate >= self.required_rate


@dataclass(frozen=True)
class AttackResult:
    """Everything one attack on one domain found, and the gate's decision on the expert."""

    profile: str
    domain: str
    expert_sha256: str
    train_docs: int  # documents in the train split
    eligible_docs: int  # of which at least window_tokens long
    too_short_docs: int  # shorter than the window: cannot be attacked with this protocol (counted, not hidden)
    settings: dict
    calibration: Calibration
    models: dict[str, ModelRate]
    extraction_rate: float  # the gate's number: FlexOlmo with the expert, prefix counted
    admitted: bool
    reason: str
    report_path: Path
    seconds: float

    def rates(self) -> dict[str, float]:
        return {name: m.rate for name, m in self.models.items()}


# ----------------------------------------------------------------------------------------------------------- the gate


def admission_decision(rate: float, profile: Profile) -> tuple[bool, str]:
    """(admitted, reason) for an expert with this extraction rate; the registry gives `active` only when admitted."""
    if rate is None or not isinstance(rate, (int, float)) or math.isnan(rate) or not 0.0 <= rate <= 1.0:
        return False, f"no valid extraction rate recorded ({rate!r}); run `flexo attack <domain>` before admission"
    limit = profile.attack.max_extraction_rate
    if rate > limit:
        return False, (
            f"refused: extraction rate {rate:.1%} exceeds attack.max_extraction_rate {limit:.1%}; the expert reproduces "
            "its training text. Retrain with DP (train_expert.dp.enabled), fewer epochs or deduplicated data, then re-attack"
        )
    return True, f"admitted: extraction rate {rate:.1%} <= attack.max_extraction_rate {limit:.1%}"


def admission_from_tags(tags: dict[str, str], profile: Profile) -> tuple[bool, str]:
    """The decision from a model version's tags (missing or unreadable `extraction_rate` = not admitted, with why)."""
    raw = tags.get(TAG_EXTRACTION_RATE)
    if raw is None:
        return False, f"no `{TAG_EXTRACTION_RATE}` tag: the expert was never attacked; run `flexo attack <domain>`"
    try:
        value = float(raw)
    except ValueError:
        return False, f"tag `{TAG_EXTRACTION_RATE}` is not a number ({raw!r}); re-run `flexo attack <domain>`"
    return admission_decision(value, profile)


def check_admission(rate: float, profile: Profile) -> str:
    """The gate as a check: returns the reason when admitted, raises GateError (exit 7) with the reason when refused."""
    admitted, reason = admission_decision(rate, profile)
    if not admitted:
        raise GateError(reason)
    return reason


# ------------------------------------------------------------------------------------------------------------- inputs


def sampling_settings(profile: Profile) -> SamplingSettings:
    a = profile.attack
    if a.window_tokens > profile.model.max_seq_len:
        raise DataError(
            f"attack.window_tokens ({a.window_tokens}) exceeds model.max_seq_len ({profile.model.max_seq_len}); "
            "shorten the window in params.yaml"
        )
    return SamplingSettings(
        a.prefix_tokens, a.window_tokens, a.samples_per_prefix, a.top_k, a.top_p, a.temperature, a.batch_prefixes
    )


def load_tokenizer(profile: Profile):
    directory = RunPaths(profile).tokenizer_dir
    if not (directory / "tokenizer.json").exists() and not (directory / "tokenizer_config.json").exists():
        raise DataError(f"{directory}: the tokenizer is missing; run `flexo data` (tokenizer training) first")
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def training_documents(profile: Profile, domain: str) -> pd.DataFrame:
    """The domain's TRAIN split (what the models were trained on: the attack's targets)."""
    split = RunPaths(profile).split(domain, "train")
    if not split.exists():
        raise DataError(f"{split}: the train split of '{domain}' is missing; run `flexo data --domain {domain}` first")
    frame = pd.read_parquet(split)
    missing = [c for c in ("id", "text") if c not in frame.columns]
    if missing:
        raise DataError(f"{split}: columns {missing} missing (expected id, text); rebuild the split with `flexo data`")
    bad = frame.index[frame["text"].isna() | frame["id"].isna()].tolist()
    if bad:
        raise DataError(f"{split}: row {bad[0]} has no id or text ({len(bad)} such rows); rebuild the split")
    return frame.reset_index(drop=True)


def select_probes(token_lists: list[list[int]], count: int, window: int, seed: int) -> tuple[list[Probe], int]:
    """A seeded sample of `count` documents among those >= window tokens, one random window each; (probes, eligible)."""
    eligible = [i for i, t in enumerate(token_lists) if len(t) >= window]
    order = np.random.default_rng(seed).permutation(len(eligible))[:count]
    chosen = [eligible[i] for i in order]
    probes, _ = make_probes([token_lists[i] for i in chosen], window, seed)
    # map back to row indices of the split
    return [Probe(chosen[p.doc_index], p.offset, p.window) for p in probes], len(eligible)


# ------------------------------------------------------------------------------------------------------------- models


def _load_dense(directory: Path) -> Olmo2ForCausalLM:
    if not (directory / "model.safetensors").exists():
        raise DataError(f"{directory}: the dense domain model is missing; run the dense baseline training first")
    return load_public_model(str(directory)).eval()


def _load_expert_state(path: Path, public_sha: str) -> dict[str, torch.Tensor]:
    from tasks.training.expert_file import load_expert

    if not path.exists():
        raise DataError(f"{path}: the expert is missing; train it first (`flexo train-expert <domain>`)")
    state, metadata = load_expert(path)
    if metadata["public_sha256"] != public_sha:
        raise IntegrityError(
            f"{path}: trained against M_pub {metadata['public_sha256'][:12]}…, the current M_pub is {public_sha[:12]}…; "
            "retrain the expert on the current public model"
        )
    return state


def _dp_label(path: Path) -> str:
    """What the expert file says about its training: DP with the accountant's epsilon, or no DP."""
    from safetensors import safe_open

    if not path.exists():
        return "missing"
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if meta.get("dp", "").lower() == "true":
        return f"DP-SGD, epsilon {meta.get('dp_epsilon', '?')}, delta {meta.get('dp_delta', '?')}"
    return "no DP"


def _serving_moe(profile: Profile, public_sha: str) -> tuple[FlexOlmoForCausalLM, list[str]] | None:
    """The deployed MoE (the registry's `serving` flexo-moe, else RunPaths.moe_dir) and its expert names, if there is one
    and it was built on this M_pub (sha256 of its weights checked against its manifest). Its manifest lists only the
    active, non-revoked experts it was assembled from."""
    from tasks.training.assemble import MANIFEST, locate_moe, read_manifest

    try:
        moe_dir = locate_moe(profile)
    except DataError:
        return None
    manifest = read_manifest(moe_dir)
    if manifest.get("public_sha256") != public_sha:
        return None  # assembled on an older M_pub: not the model this expert would join
    weights = moe_dir / "model.safetensors"
    if not weights.exists() or sha256_file(weights) != manifest.get("sha256"):
        raise IntegrityError(f"{weights}: missing or its sha256 differs from {moe_dir / MANIFEST}; re-assemble the MoE")
    moe = load_moe(str(moe_dir))
    return moe, list(manifest["experts"])


def _experts_of(moe: FlexOlmoForCausalLM, index: int, r_pub: torch.Tensor) -> dict[str, torch.Tensor]:
    """Expert `index` of a merged MoE in the expert-file layout (so it can be merged again beside a new expert)."""
    state: dict[str, torch.Tensor] = {}
    for layer_index, layer in enumerate(moe.model.layers):
        rows, ffns = layer_experts(layer.mlp)
        for key, weight in ffns[index].items():
            state[f"layers.{layer_index}.{key}.weight"] = weight.detach().clone()
        state[f"layers.{layer_index}.router"] = rows[index].detach().clone()
        state[f"layers.{layer_index}.router_public"] = r_pub
    return state


def build_flexolmo(
    profile: Profile, public: Olmo2ForCausalLM, public_sha: str, domain: str, expert_path: Path
) -> tuple[FlexOlmoForCausalLM, int, str]:
    """FlexOlmo holding the expert under attack: (model, the expert's index, what it is made of).

    With a deployed MoE (`tasks.training.assemble.locate_moe`) that already holds exactly this expert file, that MoE as deployed. With one
    that does not (e.g. a new expert awaiting admission), its other experts plus this one, merged again. Without one, the
    2-expert FlexOlmo [public, this expert].
    """
    from tasks.training.route import load_router_embedding

    state = _load_expert_state(expert_path, public_sha)
    serving = _serving_moe(profile, public_sha)
    if serving is not None:
        moe, names = serving
        if domain in names:
            index = names.index(domain)
            deployed = _experts_of(moe, index, state[next(k for k in state if k.endswith("router_public"))])
            if all(torch.equal(deployed[k], state[k]) for k in deployed if not k.endswith("router_public")):
                return moe, index, f"the serving MoE as deployed (experts {names})"
    r_pub = load_router_embedding(RunPaths(profile).router_embedding("public"))
    others: list[tuple[str, dict[str, torch.Tensor]]] = []
    source = "M_pub + this expert"
    if serving is not None:
        moe, names = serving
        others = [(name, _experts_of(moe, i, r_pub)) for i, name in enumerate(names) if i and name != domain]
        source = f"the assembled MoE's experts {[n for n, _ in others]} + this expert"
    states = [s for _, s in others] + [state]
    try:
        merged = merge_experts(public, r_pub, states, profile.router.top_k)
    except MergeError as err:
        raise IntegrityError(f"{expert_path}: {err}") from err
    return merged, len(states), source  # expert 0 is public, so the attacked expert sits at index len(states)


# -------------------------------------------------------------------------------------------------------------- stage


def _device(profile: Profile) -> torch.device:
    wanted = profile.runtime.device
    if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def attack(profile: Profile, domain: str | None = None, progress: bool = True) -> AttackResult:
    """Run the calibration and the attack on every model for `domain` (default `attack.domain`); write the report.

    Raises CalibrationError (after writing the report) when the overfitted model is not extracted.
    """
    started = time.perf_counter()
    domain = domain or profile.attack.domain
    if domain not in profile.closed_domains:
        raise DataError(f"attack: '{domain}' is not a data owner's domain; choose one of {profile.closed_domains}")
    if profile.runtime.num_threads:
        torch.set_num_threads(profile.runtime.num_threads)
    a, paths = profile.attack, RunPaths(profile)
    settings = sampling_settings(profile)
    tokenizer = load_tokenizer(profile)
    frame = training_documents(profile, domain)
    token_lists = tokenizer(frame["text"].tolist(), add_special_tokens=False)["input_ids"]
    probes, eligible = select_probes(token_lists, a.num_docs, a.window_tokens, profile.seed)
    if not probes:
        raise DataError(
            f"{paths.split(domain, 'train')}: no document has {a.window_tokens} tokens; lower attack.window_tokens"
        )
    calibration_probes, _ = select_probes(token_lists, a.calibration_docs, a.window_tokens, profile.seed + 1)
    doc_ids = frame["id"].astype(str).tolist()

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)

    public_weights = paths.public_model_dir / "model.safetensors"
    if not public_weights.exists():
        raise DataError(f"{public_weights}: M_pub is missing; run `flexo train-public` first")
    public_sha = sha256_file(public_weights)
    expert_path = paths.expert_dir(domain) / EXPERT_FILE
    expert_sha = sha256_file(expert_path) if expert_path.exists() else ""
    device = _device(profile)

    plan: list[tuple[str, str, Callable[[], PreTrainedModel]]] = []
    public = load_public_model(str(paths.public_model_dir)).eval()
    moe_cache: dict[str, tuple[FlexOlmoForCausalLM, int, str]] = {}

    def flexolmo() -> tuple[FlexOlmoForCausalLM, int, str]:
        if "main" not in moe_cache:
            moe_cache["main"] = build_flexolmo(profile, public, public_sha, domain, expert_path)
        return moe_cache["main"]

    plan.append((PUBLIC, "M_pub: never saw the domain", lambda: public))
    plan.append(
        (
            DENSE,
            "dense domain model (all parameters continued on the domain)",
            lambda: _load_dense(paths.dense_dir(domain) / "model"),
        )
    )
    plan.append((FLEXOLMO, "FlexOlmo with the expert", lambda: flexolmo()[0]))

    def without() -> FlexOlmoForCausalLM:
        moe, index, _ = flexolmo()
        return keep_experts(moe, [i for i in range(moe.config.num_experts) if i != index])

    plan.append((FLEXOLMO_WITHOUT, "FlexOlmo with the expert removed (exact opt-out)", without))
    dp_path = paths.expert_dir(domain) / DP_SUBDIR / EXPERT_FILE
    if dp_path.exists():  # a DP-trained expert beside the plain one: attack both
        plan.append(
            (
                FLEXOLMO_DP,
                f"FlexOlmo with the DP-trained expert ({_dp_label(dp_path)})",
                lambda: build_flexolmo(profile, public, public_sha, domain, dp_path)[0],
            )
        )
    elif profile.train_expert.dp.enabled and not expert_path.exists():
        raise DataError(
            f"{expert_path}: the (DP-trained) expert is missing; train it first (`flexo train-expert {domain}`)"
        )

    from rich.progress import Progress

    rates: dict[str, ModelRate] = {}
    with Progress(transient=True, disable=not progress) as bar:
        # 1. calibration: M_pub overfitted on a few windows must be extracted, or the attack is broken
        calib_task = bar.add_task("calibration: overfitting", total=a.calibration_epochs + len(calibration_probes))
        t0 = time.perf_counter()
        overfit = copy.deepcopy(public).to(device)
        windows = torch.tensor([p.window for p in calibration_probes], dtype=torch.long)
        loss = memorize(
            overfit,
            windows,
            a.calibration_epochs,
            a.calibration_lr,
            profile.seed,
            on_epoch=lambda *_: bar.advance(calib_task),
        )
        bar.update(calib_task, description="calibration: attacking")
        result = extraction_attack(
            overfit,
            calibration_probes,
            decode,
            settings,
            a.similarity_threshold,
            profile.seed,
            on_batch=lambda n: bar.advance(calib_task, n),
        )
        seconds = time.perf_counter() - t0
        calibration = Calibration(
            ModelRate.of(
                "calibration",
                f"M_pub overfitted {a.calibration_epochs} epochs on {len(calibration_probes)} training windows",
                result,
                seconds,
                doc_ids,
            ),
            a.calibration_epochs,
            loss,
            a.min_calibration_rate,
            seconds,
        )
        del overfit
        # 2. the models
        for name, description, build in plan:
            task = bar.add_task(f"attack: {name}", total=len(probes))
            t0 = time.perf_counter()
            model = build().to(device).eval()
            if name == FLEXOLMO:
                description = f"{description} ({_dp_label(expert_path)}): {flexolmo()[2]}"
            result = extraction_attack(
                model,
                probes,
                decode,
                settings,
                a.similarity_threshold,
                profile.seed,
                on_batch=lambda n, t=task: bar.advance(t, n),
            )
            rates[name] = ModelRate.of(name, description, result, time.perf_counter() - t0, doc_ids)

    gate_rate = rates[FLEXOLMO].rate
    admitted, reason = admission_decision(gate_rate, profile)
    out = AttackResult(
        profile=profile.name,
        domain=domain,
        expert_sha256=expert_sha,
        train_docs=len(frame),
        eligible_docs=eligible,
        too_short_docs=len(frame) - eligible,
        settings=a.model_dump(),
        calibration=calibration,
        models=rates,
        extraction_rate=gate_rate,
        admitted=admitted,
        reason=reason,
        report_path=paths.attack_dir / domain / REPORT_FILE,
        seconds=time.perf_counter() - started,
    )
    write_report(out)
    if not calibration.passed:
        raise CalibrationError(
            f"the attack is broken: the calibration model (M_pub overfitted on {calibration.rate.num_docs} windows, final "
            f"loss {loss:.3f}) was extracted at {calibration.rate.rate:.0%}, below attack.min_calibration_rate "
            f"{a.min_calibration_rate:.0%}; its low rates on the real models prove nothing. Report: {out.report_path}"
        )
    return out


def write_report(result: AttackResult) -> Path:
    """report.json beside the attack's run: settings, counts, per-model rates and per-document best samples."""
    result.report_path.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(result)
    data["report_path"] = str(result.report_path)
    data["calibration"]["passed"] = result.calibration.passed
    result.report_path.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    return result.report_path


def summary_rows(result: AttackResult) -> list[tuple[str, str, str, str, str, str]]:
    """(model, extracted/docs, rate, rate without prefix, mean best similarity with / without prefix) rows for tables."""
    models = [result.calibration.rate, *result.models.values()]
    return [
        (
            m.name,
            f"{m.extracted}/{m.num_docs}",
            f"{m.rate:.1%}",
            f"{m.rate_no_prefix:.1%}",
            f"{m.mean_similarity:.3f}",
            f"{m.mean_similarity_no_prefix:.3f}",
        )
        for m in models
    ]


# ------------------------------------------------------------------------------------------------------------ MLflow


def record_attack(profile: Profile, result: AttackResult) -> str | None:
    """Log the rates to an MLflow run; tag the registered expert version(s) whose sha256 matches and pass the gate's
    verdict to the registry (`record_check`: a refusal takes the `active` alias away). Returns the newest such version."""
    import mlflow
    from tasks.core import tracking
    from tasks.registry import registry

    with tracking.stage_run(profile, "attack", result.domain, params={"attack": result.settings}):
        metrics = {f"extraction_rate.{n}": m.rate for n, m in result.models.items()}
        metrics.update({f"extraction_rate_no_prefix.{n}": m.rate_no_prefix for n, m in result.models.items()})
        metrics.update(
            {
                "extraction_rate.calibration": result.calibration.rate.rate,
                "extraction_rate": result.extraction_rate,
                "attack_seconds": result.seconds,
            }
        )
        tracking.log_metrics(metrics)
        mlflow.set_tags(
            {TAG_ADMISSION: "admitted" if result.admitted else "refused", "expert_sha256": result.expert_sha256}
        )
        mlflow.log_artifact(str(result.report_path), artifact_path="attack")
    name = registry.expert_model_name(profile, result.domain)
    matching = [v for v in registry.versions_if_any(profile, name) if v.sha256 == result.expert_sha256]
    if not matching:
        return None
    tags = {
        TAG_EXTRACTION_RATE: f"{result.extraction_rate:.6f}",
        TAG_EXTRACTION_RATE_NO_PREFIX: f"{result.models[FLEXOLMO].rate_no_prefix:.6f}",
        TAG_ADMISSION: "admitted" if result.admitted else "refused",
        TAG_ADMISSION_REASON: result.reason,
    }
    client = registry.client(profile)
    for version in matching:
        for key, value in tags.items():
            client.set_model_version_tag(name, version.version, key, value)
        registry.record_check(profile, result.domain, version.version, GATE_CHECK, result.admitted, result.reason)
    return max((v.version for v in matching), key=int)


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


def attack_task():
    """The Prefect task around `attack_and_record`, built on first use so importing this module does not import Prefect.

    No retries: the attack is seeded, a retry would give the same answer.
    """
    from prefect import task

    return task(attack_and_record, name="attack", retries=0)
