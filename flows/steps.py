"""Prefect `@task` wrappers around the areas' plain step functions, and the record of what each stage did.

Why: the flows in `flows/` must stay thin wiring, and the areas' functions must stay plain (testable without Prefect).
This module is the seam: each wrapper resolves its area's function by name (`tasks.training.train:train_expert`), calls it, and
returns a small JSON-able dict of paths, sha256s and metrics (never tensors). Caching keys on the inputs (the profile,
content hashes of the data and upstream weights) plus a fingerprint of the code that computes the step, so an
unchanged rerun is a cache hit and a changed data set, weight file or source file is not. A step whose area function
has not been written is *skipped* with that reason, never faked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.core.config import REPO_ROOT, Profile
from tasks.core.errors import FlexoError

GPU_TAG = "gpu"  # tag-based concurrency limit: one worker never runs two GPU trainings at once

# Each step: the area function it runs ("module:function"), the code its result depends on, and how Prefect runs it.
STEPS: dict[str, dict[str, Any]] = {
    "prepare_domain": {
        "target": "tasks.data.pipeline:prepare_domain",
        "code": [
            "tasks/data/pipeline.py",
            "tasks/data/sources",
            "tasks/data/ingest.py",
            "tasks/data/validate.py",
            "tasks/data/pii.py",
            "tasks/data/textsig.py",
            "tasks/data/split.py",
        ],
    },
    "split_domain": {
        "target": "tasks.data.pipeline:finish_domain",
        "code": ["tasks/data/pipeline.py", "tasks/data/split.py", "tasks/core/datasets.py"],
    },
    "check_disjoint": {"target": "tasks.data.pipeline:check_disjoint", "code": ["tasks/data/pipeline.py"]},
    "check_benchmark": {
        "target": "tasks.evaluation.evaluate:check_benchmark_data",
        "code": ["tasks/evaluation/evaluate.py", "tasks/evaluation/tasks.py"],
    },
    "train_tokenizer": {"target": "tasks.data.pipeline:train_tokenizer", "code": ["tasks/data/pipeline.py"]},
    "version_domain": {
        "target": "tasks.data.pipeline:version_domain",
        "code": ["tasks/data/pipeline.py"],
        "retry": True,
    },
    "write_card": {"target": "tasks.data.cards:write_card", "code": ["tasks/data/cards.py"]},
    "record_shared_stages": {
        "target": "tasks.data.versioning:record_shared_stages",
        "code": ["tasks/data/versioning.py"],
        "cache": False,
    },
    "dataset_hash": {"target": "tasks.core.datasets:dataset_hash", "code": [], "cache": False},
    "train_public": {
        "target": "tasks.training.train:train_public",
        "code": ["tasks/training/train.py", "model"],
        "gpu": True,
    },
    "register_public": {
        "target": "tasks.registry.registry:register_public",
        "code": ["tasks/registry/registry.py"],
        "retry": True,
    },
    "embed_domain": {
        "target": "tasks.training.route:embed_domain",
        "code": ["tasks/training/route.py", "model/router.py"],
    },
    "train_expert": {
        "target": "tasks.training.train:train_expert",
        "code": ["tasks/training/train.py", "model"],
        "gpu": True,
    },
    "train_dense": {
        "target": "tasks.training.train:train_dense",
        "code": ["tasks/training/train.py", "model"],
        "gpu": True,
    },
    "register_expert": {
        "target": "tasks.registry.registry:register_expert",
        "code": ["tasks/registry/registry.py"],
        "retry": True,
    },
    "assemble": {
        "target": "tasks.registry.governance:assemble_and_register",
        "code": ["tasks/registry/governance.py", "tasks/training/assemble.py", "tasks/registry/registry.py", "model"],
        "retry": True,
    },
    "train_ablation": {
        "target": "tasks.training.ablations:train_variant",
        "code": ["tasks/training/ablations.py", "tasks/training/train.py", "model"],
        "gpu": True,
    },
    "assemble_ablation": {
        "target": "tasks.training.ablations:assemble_variant",
        "code": ["tasks/training/ablations.py", "tasks/training/assemble.py", "model"],
    },
    "evaluate": {
        "target": "tasks.evaluation.evaluate:evaluate",
        "code": ["tasks/evaluation/evaluate.py", "model"],
        "gpu": True,
    },
    "attack": {
        "target": "tasks.privacy.attack:attack_and_record",
        "code": ["tasks/privacy/attack.py", "model"],
        "gpu": True,
    },
    "revoke": {"target": "tasks.registry.governance:revoke", "code": [], "cache": False, "retry": True},
    "active_experts": {
        "target": "tasks.registry.registry:resolve_active_experts",
        "code": [],
        "cache": False,
        "retry": True,
    },
}


class StepMissing(Exception):
    """The area function a step runs does not exist (yet): the stage is skipped, and the summary says so."""


def resolve(step: str) -> Callable[..., Any]:
    """The area's plain function for `step`; StepMissing naming it when its module or function is not there."""
    module_name, func_name = STEPS[step]["target"].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:  # the area's module exists but imports something missing: a real failure
            raise
        raise StepMissing(f"{module_name}.{func_name} does not exist yet (module {module_name} not found)") from exc
    func = getattr(module, func_name, None)
    if func is None:
        raise StepMissing(f"{module_name}.{func_name} does not exist yet")
    return func


def available(step: str) -> bool:
    """Whether the step's area function exists and imports."""
    try:
        resolve(step)
    except Exception:
        return False
    return True


def code_fingerprint(step: str) -> str:
    """sha256 over the source files a step's result depends on (part of its cache key: edit the code, miss the cache)."""
    digest = hashlib.sha256()
    for rel in STEPS[step]["code"]:
        path = REPO_ROOT / rel
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            if file.exists():
                digest.update(str(file.relative_to(REPO_ROOT)).encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """Content hash of a file, or of every file under a directory (names + bytes), for cache keys and lineage."""
    digest = hashlib.sha256()
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def json_sha256(value: Any) -> str:
    """A content hash of a step's JSON result (cache key of steps that depend on another step's output)."""
    return hashlib.sha256(json.dumps(jsonable(value), sort_keys=True).encode()).hexdigest()


def jsonable(value: Any) -> Any:
    """A JSON-able copy of a step's result (dataclasses, pydantic models, paths); tensors are refused, not pickled."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if (
        type(value).__module__.startswith(("torch", "numpy"))
        and hasattr(value, "item")
        and getattr(value, "ndim", 1) == 0
    ):
        return value.item()
    if type(value).__module__.startswith("torch"):
        raise TypeError(f"a step returned a {type(value).__name__}; steps return paths and hashes, never tensors")
    return str(value)


def _call(step: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call the area function; record its own wall time (`compute_seconds`: the work, without orchestration)."""
    started = time.perf_counter()
    result = resolve(step)(*args, **kwargs)
    out = jsonable(result)
    out = out if isinstance(out, dict) else {"value": out}
    out["compute_seconds"] = round(time.perf_counter() - started, 3)
    return out


class MlflowTrainLogger:
    """`tasks.core.train_logging.TrainLogger` onto the active MLflow run (flattened params, metrics per step)."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow
        from tasks.core.tracking import flatten

        mlflow.log_params(flatten(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def _tracked(step: str, profile: Profile, domain: str | None, **kwargs: Any) -> dict[str, Any]:
    """Run a model step inside an MLflow stage run (lineage tags, params, metrics); the result links to the run."""
    import mlflow
    from tasks.core import tracking
    from tasks.core.train_logging import ConsoleLogger, FanOutLogger

    args = (profile,) if domain is None else (profile, domain)
    with tracking.stage_run(profile, step, domain) as run:
        if step.startswith("train_"):
            kwargs["logger"] = FanOutLogger(
                [ConsoleLogger(prefix=f"{step} {domain or ''}".strip()), MlflowTrainLogger()]
            )
        try:
            out = _call(step, *args, **kwargs)
        except Exception as exc:
            if not (step.startswith("train_") and type(exc.__cause__).__name__ == "CheckpointError"):
                raise
            # The cache missed because an input changed, so the old checkpoint belongs to another run: start fresh.
            mlflow.set_tag("resumed", f"no: {exc}")
            out = _call(step, *args, **{**kwargs, "resume": False})
        metrics = {
            k: float(v)
            for k, v in (out.get("metrics") or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if metrics and not step.startswith("train_"):
            mlflow.log_metrics({k.replace("/", ".").replace(" ", "_"): v for k, v in metrics.items()})
        if domain and data_hash_available():
            mlflow.set_tag("data_md5", data_hash(profile, domain))
    out["mlflow_run_id"] = run.info.run_id
    out["mlflow_run"] = (
        f"{tracking.tracking_uri(profile)} experiment={profile.registry.experiment} run={run.info.run_id}"
    )
    return out


def data_hash_available() -> bool:
    return available("dataset_hash")


# ---- the plain bodies of the Prefect tasks (the extra hash arguments are cache-key inputs only) -------------------


def prepare_domain(profile: Profile, domain: str, code: str) -> dict[str, Any]:
    """Ingest, validate (GX, quarantine) and fingerprint one domain: the part that needs no other domain."""
    return _call("prepare_domain", profile, domain)


def split_domain(profile: Profile, domain: str, prepared: Mapping[str, str], code: str) -> dict[str, Any]:
    """Split, dedup and decontaminate one domain against every prepared domain (`prepared`: their results' hashes)."""
    return _call("split_domain", profile, domain)


def check_disjoint(profile: Profile, builds: Mapping[str, str], code: str) -> dict[str, Any]:
    return _call("check_disjoint", profile)


def check_benchmark(profile: Profile, domains: list[str], data_hashes: Mapping[str, str], code: str) -> dict[str, Any]:
    """Whether every FLEXMIX task can be built from these domains' test splits (before any training)."""
    return _call("check_benchmark", profile, domains)


def train_tokenizer(profile: Profile, public_hash: str, code: str) -> dict[str, Any]:
    return _call("train_tokenizer", profile)


def version_domain(profile: Profile, domain: str, data_hash: str, code: str) -> dict[str, Any]:
    """`dvc add` + push to the owner's remote (retried with backoff: the remote can be briefly unreachable)."""
    return _call("version_domain", profile, domain)


def write_card(profile: Profile, domain: str, data_hash: str, tokenizer_hash: str, code: str) -> dict[str, Any]:
    """The domain's data card (reports/data/cards/<domain>.md|json), after versioning so it carries the DVC md5."""
    out = _call("write_card", profile, domain)
    return {**out, "path": out["value"]}


def record_shared_stages(profile: Profile) -> dict[str, Any]:
    """`dvc commit` of the cross-domain DVC stages after a full data build (cheap; not cached: dvc.lock is the record)."""
    return _call("record_shared_stages", profile)


def dataset_hash(profile: Profile, domain: str) -> str:
    return str(resolve("dataset_hash")(profile, domain))


def train_public(profile: Profile, public_hash: str, tokenizer_hash: str, code: str) -> dict[str, Any]:
    return _tracked("train_public", profile, None)


def register_public(
    profile: Profile, model_dir: str, weights_sha: str, data_md5: str, metrics: Mapping[str, float]
) -> dict[str, Any]:
    return _call("register_public", profile, Path(model_dir), data_md5, dict(metrics))


def embed_domain(profile: Profile, domain: str, data_hash: str, code: str) -> dict[str, Any]:
    out = _call("embed_domain", profile, domain)
    return {**out, "path": out["value"], "sha256": file_sha256(out["value"])}


def train_expert(
    profile: Profile, domain: str, data_hash: str, public_sha: str, router_sha: str, code: str
) -> dict[str, Any]:
    """Coordinated training of one expert against the frozen M_pub (MLflow stage run `train_expert/<domain>`)."""
    return _tracked("train_expert", profile, domain)


def train_dense(profile: Profile, domain: str, data_hash: str, public_sha: str, code: str) -> dict[str, Any]:
    """The dense domain model (baselines and the extraction study)."""
    return _tracked("train_dense", profile, domain)


def register_expert(
    profile: Profile,
    domain: str,
    expert_file: str,
    expert_sha: str,
    data_md5: str,
    metrics: Mapping[str, float],
    router_file: str | None,
    dp_epsilon: float | None = None,
) -> dict[str, Any]:
    return _call(
        "register_expert",
        profile,
        domain,
        Path(expert_file),
        data_md5,
        metrics=dict(metrics),
        router_file=Path(router_file) if router_file else None,
        dp_epsilon=dp_epsilon,
    )


def assemble(profile: Profile, expert_shas: Mapping[str, str], code: str) -> dict[str, Any]:
    """Assemble every active expert (sha256-verified from the registry) and register `flexo-moe` as `serving`."""
    return _call("assemble", profile)


def train_ablation(
    profile: Profile, variant: str, domain: str, data_hash: str, public_sha: str, code: str
) -> dict[str, Any]:
    """One expert retrained under a router ablation (MLflow stage run `train_ablation/<domain>`, param `variant`)."""
    return _tracked("train_ablation", profile, domain, variant=variant)


def assemble_ablation(profile: Profile, variant: str, expert_shas: Mapping[str, str], code: str) -> dict[str, Any]:
    """M_pub + the variant's experts merged into the variant's own MoE (not registered: a research artifact)."""
    return _call("assemble_ablation", profile, variant)


def evaluate(
    profile: Profile, moe_sha: str, code: str, ablation_shas: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """FLEXMIX-small (cached on the serving MoE's sha256, the ablation MoEs' and the code)."""
    return _tracked("evaluate", profile, None)


def attack(profile: Profile, domain: str, expert_sha: str, code: str) -> dict[str, Any]:
    return _call("attack", profile, domain)


def revoke(profile: Profile, domain: str, version: str, reason: str, by: str | None = None) -> dict[str, Any]:
    return _call("revoke", profile, domain, version, reason, by=by)


def active_experts(profile: Profile) -> dict[str, Any]:
    """The registry's active, non-revoked expert versions: {domain: {version, sha256}} (a registry read: retried)."""
    refs = resolve("active_experts")(profile)
    return {ref.domain: {"version": str(ref.version), "sha256": ref.sha256} for ref in refs}


def as_profile(profile: str | Profile | None) -> Profile:
    """A flow parameter (a profile name, or a resolved Profile from a test or a caller) as a validated Profile."""
    from tasks.core.config import load_profile

    return profile if isinstance(profile, Profile) else load_profile(profile)


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what can succeed on a second try: a flexo error (bad config, bad data, integrity, revoked, gate)
    is permanent and fails at once; anything else (a locked database, an unreachable remote) is retried."""
    from tasks.core.errors import FlexoError

    try:
        state.result()
    except FlexoError:
        return False
    except Exception:
        return True
    return True


def prefect_task(name: str, profile: Profile, occupy_gpu: bool = True) -> Any:
    """The Prefect task for step `name`: cached on inputs + source, retried with backoff where the step can fail
    transiently, tagged `gpu` where it trains or runs a model (unless `occupy_gpu` is False: see `_cache_hit`)."""
    from prefect import task
    from prefect.cache_policies import INPUTS, NONE, TASK_SOURCE

    spec = STEPS.get(name, {})
    fn = globals()[name]
    orch = profile.orchestration
    return task(
        fn,
        name=name,
        cache_policy=(INPUTS + TASK_SOURCE) if spec.get("cache", True) else NONE,
        persist_result=spec.get("cache", True),
        result_serializer="json",
        retries=orch.retries if spec.get("retry") else 0,
        retry_delay_seconds=list(orch.retry_delay_seconds) if spec.get("retry") else 0,
        retry_condition_fn=_transient,
        tags=[GPU_TAG] if spec.get("gpu") and occupy_gpu else [],
    )


def _cache_hit(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether Prefect holds a cached result for this call, asked the way the task engine asks (same cache policy, same
    result store). Why: the engine takes the `gpu` tag's concurrency slot *before* it looks at the cache, and each
    acquisition on the ephemeral server waits about a second, so a cached rerun spent half its time queueing for a GPU it
    never used. A cache hit therefore runs untagged; anything uncertain keeps the tag."""
    import inspect
    from types import SimpleNamespace

    from prefect.results import get_result_store

    try:
        inputs = dict(inspect.signature(task.fn).bind(*args, **kwargs).arguments)
        key = task.cache_policy.compute_key(task_ctx=SimpleNamespace(task=task), inputs=inputs, flow_parameters={})
        return bool(key) and get_result_store().update_for_task(task).exists(key)
    except Exception:  # noqa: BLE001 - a failed probe only costs the slot wait
        return False


# ---- what each stage did ------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One step of one run: completed, cached (reused), skipped (not written yet / upstream missing) or failed."""

    stage: str
    step: str
    domain: str | None
    status: str
    seconds: float
    detail: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "cached")


Listener = Callable[[str, str, str | None, str], None]  # (stage, step, domain, status)
_listeners: list[Listener] = []


def add_listener(listener: Listener) -> Callable[[], None]:
    """Register a progress callback (the CLI's display); returns its remover. In-process only, by design."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


def notify(stage: str, step: str, domain: str | None, status: str) -> None:
    for listener in list(_listeners):
        listener(stage, step, domain, status)


def run_step(
    stage: str,
    step: str,
    profile: Profile,
    *args: Any,
    domain: str | None = None,
    expect: Path | None = None,
    refresh: bool = False,
    **kwargs: Any,
) -> Outcome:
    """Run one step as a Prefect task and record what happened; a failure is recorded, not raised (a failed domain
    must not stop the others). `expect`: the file the step writes; if it is gone, the cache is refreshed instead of
    trusting a cached result that points at nothing. `refresh`: run it even on a cache hit (the caller knows better)."""
    started = time.perf_counter()
    try:
        resolve(step)
    except StepMissing as missing:
        outcome = Outcome(stage, step, domain, "skipped", 0.0, str(missing))
        notify(stage, step, domain, outcome.status)
        return outcome
    except Exception as exc:  # the area's module exists but does not import: a failure, not a skip
        outcome = Outcome(stage, step, domain, "failed", 0.0, f"{type(exc).__name__} importing the step: {exc}")
        notify(stage, step, domain, outcome.status)
        return outcome
    notify(stage, step, domain, "running")
    refresh = refresh or (expect is not None and not Path(expect).exists())
    task = prefect_task(step, profile)
    if task.tags and not refresh and _cache_hit(task, (profile, *args), kwargs):
        task = prefect_task(step, profile, occupy_gpu=False)  # a cache hit occupies no GPU slot
    task = task.with_options(
        task_run_name=f"{step}-{domain}" if domain else step, refresh_cache=True if refresh else None
    )
    state = task(profile, *args, return_state=True, **kwargs)
    seconds = time.perf_counter() - started
    if state.is_completed():
        value = state.result()
        result = value if isinstance(value, dict) else {"value": value}
        outcome = Outcome(stage, step, domain, "cached" if state.name == "Cached" else "completed", seconds, "", result)
    else:
        error = state.result(raise_on_failure=False)
        detail = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(state.message)
        outcome = Outcome(stage, step, domain, "failed", seconds, detail)
    notify(stage, step, domain, outcome.status)
    return outcome


def upstream_missing(stage: str, step: str, domain: str | None, needs: Iterable[Outcome]) -> Outcome | None:
    """A 'skipped' outcome when a step's inputs were not produced (an upstream step failed or was skipped)."""
    bad = [o for o in needs if not o.ok]
    if not bad:
        return None
    why = "; ".join(f"{o.step}{'/' + o.domain if o.domain else ''} {o.status}" for o in bad)
    outcome = Outcome(stage, step, domain, "skipped", 0.0, f"upstream not available: {why}")
    notify(stage, step, domain, outcome.status)
    return outcome


def metrics_of(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric final metrics of a training result (its `metrics` mapping), for registration tags."""
    metrics = result.get("metrics") or {}
    return {str(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def first_path(result: Mapping[str, Any], keys: Sequence[str], default: Path) -> Path:
    """The first of `keys` the result names (areas name their output paths differently), else `default`."""
    for key in keys:
        if result.get(key):
            return Path(result[key])
    return default


def summary_table(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    return [
        {
            "stage": o.stage,
            "step": o.step,
            "domain": o.domain or "",
            "status": o.status,
            "seconds": round(o.seconds, 2),
            "detail": o.detail[:300],
        }
        for o in outcomes
    ]


def summary_markdown(title: str, outcomes: Sequence[Outcome], links: Mapping[str, str] | None = None) -> str:
    """The run's markdown summary: counts, every step, and which failed and why."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    lines = [f"# {title}", "", ", ".join(f"**{n}** {s}" for s, n in sorted(counts.items())) or "nothing ran", ""]
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        lines += ["## Failed", ""] + [f"- `{o.step}` {o.domain or ''}: {o.detail}" for o in failed] + [""]
    lines += ["## Steps", "", "| stage | step | domain | status | seconds | detail |", "|---|---|---|---|---:|---|"]
    for row in summary_table(outcomes):
        detail = str(row["detail"]).replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {row['stage']} | {row['step']} | {row['domain']} | {row['status']} | {row['seconds']} | {detail} |"
        )
    if links:
        lines += ["", "## Where to look", ""] + [f"- {k}: `{v}`" for k, v in links.items()]
    return "\n".join(lines) + "\n"


def publish(key: str, title: str, outcomes: Sequence[Outcome], links: Mapping[str, str] | None = None) -> str:
    """Markdown + table artifacts in the Prefect UI for one run (key: lowercase letters, digits, dashes)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    markdown = summary_markdown(title, outcomes, links)
    create_markdown_artifact(markdown=markdown, key=key, description=title)
    if outcomes:
        create_table_artifact(table=summary_table(outcomes), key=f"{key}-steps", description=f"{title}: every step")
    return markdown


def publish_table(key: str, rows: Sequence[Mapping[str, Any]], description: str) -> None:
    from prefect.artifacts import create_table_artifact

    if rows:
        create_table_artifact(table=[dict(r) for r in rows], key=key, description=description)


def write_summary(path: Path, outcomes: Sequence[Outcome], extra: Mapping[str, Any] | None = None) -> Path:
    """The run summary as JSON (for scripts and the benchmark)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"steps": [dataclasses.asdict(o) for o in outcomes], **dict(extra or {})}
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def ensure_gpu_limit(slots: int) -> None:
    """Create (or update) the tag-based concurrency limit `gpu` on the Prefect server in use."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=slots)


def data_hash(profile: Profile, domain: str) -> str:
    """The content hash of data/<domain> for cache keys and lineage: the DVC md5 from `tasks.core.datasets.dataset_hash`
    when the data area provides it, else `sha256:<hex>` over the domain's files ("" when there is no data yet)."""
    from tasks.core.artifacts import RunPaths

    if available("dataset_hash"):
        try:
            return dataset_hash(profile, domain)
        except Exception:  # not versioned yet: fall back to the content itself
            pass
    directory = RunPaths(profile).domain_dir(domain)
    return f"sha256:{file_sha256(directory)}" if directory.exists() else ""


def weights_sha(model_dir: Path) -> str:
    """sha256 of a save_pretrained directory's `model.safetensors` ("" when absent)."""
    weights = Path(model_dir) / "model.safetensors"
    return file_sha256(weights) if weights.exists() else ""


def outcomes_from(rows: Iterable[Mapping[str, Any]]) -> list[Outcome]:
    """Outcomes back from a subflow's JSON result."""
    return [Outcome(**dict(row)) for row in rows]


def as_rows(outcomes: Iterable[Outcome]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(o) for o in outcomes]


OWNER_ENV = "FLEXO_OWNER_DOMAIN"  # set by `flexo worker --owner`: that worker runs only its own domain's flows


def check_owner(domain: str | None) -> None:
    """On an owner's worker, refuse a flow for any other domain (an owner's machine reads only its own data)."""
    import os

    from tasks.core.errors import ConfigError

    mine = os.environ.get(OWNER_ENV)
    if mine and domain != mine:
        raise ConfigError(
            f"this worker belongs to the owner of '{mine}' ({OWNER_ENV}); it refuses to run domain '{domain}'"
        )


class StepsFailed(FlexoError):
    """Raised at the end of a flow (after its summary is published) when any of its steps failed."""


def finish(outcomes: Sequence[Outcome], fail_on_error: bool) -> list[dict[str, Any]]:
    """A flow's return value; with `fail_on_error` the flow run ends Failed, naming each failed step and why."""
    failed = [o for o in outcomes if o.status == "failed"]
    if failed and fail_on_error:
        raise StepsFailed("; ".join(f"{o.step}{'/' + o.domain if o.domain else ''}: {o.detail[:300]}" for o in failed))
    return as_rows(outcomes)
