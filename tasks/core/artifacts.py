"""Where each stage writes, for one profile. The single source of truth for run paths.

Why: a task never reaches into another task's files by guessing names; it asks `RunPaths`. Everything here is under
`paths.runs_dir` (git- and DVC-ignored scratch); what must be kept is registered in MLflow or tracked by DVC.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.core.config import REPO_ROOT, Profile

# File names, spelled once. WEIGHTS_FILE equals `model.export.WEIGHTS_FILE` (transformers' save_pretrained name); it is
# repeated here so the registry can name it without importing transformers.
WEIGHTS_FILE = "model.safetensors"
EXPERT_FILE = "expert.safetensors"  # one owner's expert: its FFNs + router row, with M_pub's sha256 in the metadata
EXPERT_CARD_FILE = "expert_card.json"
TRAIN_RESULT_FILE = "train_result.json"
MANIFEST_FILE = "flexo_manifest.json"  # an assembled MoE's record of the exact experts inside it
ROUTER_ROW_FILE = "router.safetensors"  # a registered expert's domain embedding, beside its expert file
MODEL_CARD_FILE = "model_card.md"  # a registered MoE's generated card: every expert, owner and exact version
ANCHOR_FILE = "anchor.json"  # beside an adopted M_pub: where it came from (source, sha256, license, parameters)


@dataclass(frozen=True)
class RunPaths:
    profile: Profile

    @property
    def root(self) -> Path:
        return self.profile.path("runs_dir") / self.profile.name

    # data plane (DVC-tracked, under data/)
    def domain_dir(self, domain: str) -> Path:
        return self.profile.path("data_dir") / domain

    def split(self, domain: str, split: str) -> Path:
        """data/<domain>/<split>.parquet, split in train|val|test."""
        return self.domain_dir(domain) / f"{split}.parquet"

    @property
    def data_name(self) -> str:
        """The data folder's own name ("data"; a profile building its own data at scale sets another `paths.data_dir`,
        e.g. "data-at-scale"): staging and data reports are kept apart by it, so two data sets never mix."""
        return self.profile.path("data_dir").name

    def data_staging(self, domain: str) -> Path:
        """runs/data/<domain>/: ingested/accepted parquet and train fingerprints (intermediate, not DVC-versioned)."""
        return self.profile.path("runs_dir") / self.data_name / domain

    @property
    def data_reports_dir(self) -> Path:
        """reports/data/: validation reports, data cards, bytes-per-token and disjointness results (reports/<data
        folder name>/ for a profile with its own data). A profile with an existing M_pub (`anchor`) counts tokens with
        that model's tokenizer, so it writes under reports/data/<profile>/ and leaves the trained tokenizer's reports
        (DVC outputs) as they are."""
        root = self.profile.path("reports_dir") / self.data_name
        return root / self.profile.name if self.profile.anchor.pretrained else root

    @property
    def tokenizer_dir(self) -> Path:
        """A transformers tokenizer trained on the public train split only; with an existing model as M_pub
        (`anchor`), that model's own tokenizer, which the data stage copies under `anchor_dir` instead."""
        if self.profile.anchor.pretrained:
            return self.anchor_dir / "tokenizer"
        return self.profile.path("data_dir") / "tokenizer"

    @property
    def anchor_dir(self) -> Path:
        """An existing M_pub's run-side files (its tokenizer); the dequantized checkpoint itself is cached once per
        machine under `data.source_cache_dir` (`tasks.data.anchor`)."""
        return self.root / "anchor"

    # models
    @property
    def public_dir(self) -> Path:
        """Checkpoints under ckpt/, the final M_pub as a save_pretrained directory under model/."""
        return self.root / "public"

    @property
    def public_model_dir(self) -> Path:
        return self.public_dir / "model"

    def router_embedding(self, domain: str) -> Path:
        """safetensors with `raw` (d_e,) and `projected` (d,) domain embeddings."""
        return self.root / "router" / f"{domain}.safetensors"

    @property
    def public_pool_embeddings(self) -> Path:
        """safetensors with the unit sentence embeddings of router tuning's public proxy pool (public text only)."""
        return self.root / "router" / "public-pool.safetensors"

    def expert_dir(self, domain: str) -> Path:
        """Checkpoints under ckpt/, the trained expert as expert.safetensors + expert_card.json."""
        return self.root / "experts" / domain

    def dense_dir(self, domain: str) -> Path:
        """The dense domain model (all parameters continued on D_i): checkpoints and model/."""
        return self.root / "dense" / domain

    @property
    def moe_dir(self) -> Path:
        """The assembled FlexOlmoForCausalLM (+ tokenizer), loadable by plain transformers."""
        return self.root / "moe"

    def ablation_dir(self, variant: str) -> Path:
        """One router ablation (`tasks.training.ablations`): router/<domain>.safetensors, experts/<domain>/, moe/."""
        return self.root / "ablations" / variant

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def attack_dir(self) -> Path:
        return self.root / "attack"

    @property
    def reports_dir(self) -> Path:
        return self.profile.path("reports_dir")

    @property
    def eval_report(self) -> Path:
        """The FLEXMIX report `evaluate` writes (its figures sit in the folder of the same stem)."""
        return self.reports_dir / f"flexmix-{self.profile.name}.md"

    @property
    def registry_cache(self) -> Path:
        """Registered versions downloaded for use (verified by sha256 before every load), per model and version."""
        return self.root / "registry"


def repo_relative(path: Path) -> str:
    """A path as written into files DVC tracks: repository-relative when inside it, so every clone records the same
    bytes (a machine path would make each clone's dvc.lock differ)."""
    path = Path(path)
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)
