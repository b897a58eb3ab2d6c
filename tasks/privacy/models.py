"""The models one attack scores: M_pub, the dense domain model, FlexOlmo with the expert (the deployed MoE, or its
other experts merged again beside this one), FlexOlmo with the expert removed, and a DP-trained expert's FlexOlmo.

Why the deployed MoE: the gate asks what this expert leaks where it is served, so FlexOlmo is the MoE people query,
not a two-expert stand-in. Merging goes through assembly's own checks (`load_coordinated_expert`, `merge_checked`), so
an expert the pipeline would refuse to assemble is refused here the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import FlexOlmoForCausalLM, Olmo2ForCausalLM, PreTrainedModel

from model.hashing import sha256_file
from model.merge import layer_experts
from model.optout import keep_experts
from model.public import load_moe, load_public_model
from tasks.core.artifacts import EXPERT_FILE, MANIFEST_FILE, WEIGHTS_FILE, RunPaths
from tasks.core.config import Profile
from tasks.core.errors import DataError, IntegrityError
from tasks.privacy.results import DENSE, FLEXOLMO, FLEXOLMO_DP, FLEXOLMO_WITHOUT, PUBLIC
from tasks.registry.locate import locate_moe
from tasks.training.assemble import load_coordinated_expert, merge_checked, read_manifest
from tasks.training.route import load_router_embedding

DP_SUBDIR = "dp"  # an extra DP-trained expert to compare: RunPaths.expert_dir(d)/dp/expert.safetensors (if present)


def load_dense(directory: Path) -> Olmo2ForCausalLM:
    if not (directory / WEIGHTS_FILE).exists():
        raise DataError(f"{directory}: the dense domain model is missing; run the dense baseline training first")
    return load_public_model(str(directory)).eval()


def dp_label(path: Path) -> str:
    """What the expert file says about its training: DP with the accountant's epsilon, or no DP."""
    from safetensors import safe_open

    if not path.exists():
        return "missing"
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if meta.get("dp", "").lower() == "true":
        return f"DP-SGD, epsilon {meta.get('dp_epsilon', '?')}, delta {meta.get('dp_delta', '?')}"
    return "no DP"


def serving_moe(profile: Profile, public_sha: str) -> tuple[FlexOlmoForCausalLM, list[str]] | None:
    """The deployed MoE (the registry's `serving` flexo-moe, else RunPaths.moe_dir) and its expert names, if there is
    one and it was built on this M_pub (sha256 of its weights checked against its manifest). Its manifest lists only
    the active, non-revoked experts it was assembled from."""
    try:
        moe_dir = locate_moe(profile)
    except DataError:
        return None
    manifest = read_manifest(moe_dir)
    if manifest.get("public_sha256") != public_sha:
        return None  # assembled on an older M_pub: not the model this expert would join
    weights = moe_dir / WEIGHTS_FILE
    if not weights.exists() or sha256_file(weights) != manifest.get("sha256"):
        raise IntegrityError(
            f"{weights}: missing or its sha256 differs from {moe_dir / MANIFEST_FILE}; re-assemble the MoE"
        )
    return load_moe(str(moe_dir)), list(manifest["experts"])


def experts_of(moe: FlexOlmoForCausalLM, index: int, r_pub: torch.Tensor) -> dict[str, torch.Tensor]:
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

    With a deployed MoE (`locate_moe`) that already holds exactly this expert file, that MoE as deployed. With one that
    does not (e.g. a new expert awaiting admission), its other experts plus this one, merged again. Without one, the
    2-expert FlexOlmo [public, this expert].
    """
    if not expert_path.exists():
        raise DataError(f"{expert_path}: the expert is missing; train it first (`flexo train-expert <domain>`)")
    state, _ = load_coordinated_expert(expert_path, public_sha)
    serving = serving_moe(profile, public_sha)
    if serving is not None:
        moe, names = serving
        if domain in names:
            index = names.index(domain)
            deployed = experts_of(moe, index, state[next(k for k in state if k.endswith("router_public"))])
            if all(torch.equal(deployed[k], state[k]) for k in deployed if not k.endswith("router_public")):
                return moe, index, f"the serving MoE as deployed (experts {names})"
    r_pub = load_router_embedding(RunPaths(profile).router_embedding("public"))
    others: list[tuple[str, dict[str, torch.Tensor]]] = []
    source = "M_pub + this expert"
    if serving is not None:
        moe, names = serving
        others = [(name, experts_of(moe, i, r_pub)) for i, name in enumerate(names) if i and name != domain]
        source = f"the assembled MoE's experts {[n for n, _ in others]} + this expert"
    states = [s for _, s in others] + [state]
    merged = merge_checked(public, r_pub, states, profile.router.top_k)
    return merged, len(states), source  # expert 0 is public, so the attacked expert sits at index len(states)


@dataclass(frozen=True)
class Target:
    """One model to attack, built only when its turn comes (so one large model at a time is made)."""

    name: str
    build: Callable[[], PreTrainedModel]
    describe: Callable[[], str]  # asked after `build`: FlexOlmo's description says what it was built from


class AttackModels:
    """Every model of one attack on `domain`, in report order; FlexOlmo with the expert is built once and reused for
    the opt-out."""

    def __init__(self, profile: Profile, domain: str, public: Olmo2ForCausalLM, public_sha: str) -> None:
        self.profile, self.domain, self.public, self.public_sha = profile, domain, public, public_sha
        self.paths = RunPaths(profile)
        self.expert_path = self.paths.expert_dir(domain) / EXPERT_FILE
        self._flexolmo: tuple[FlexOlmoForCausalLM, int, str] | None = None

    def flexolmo(self) -> tuple[FlexOlmoForCausalLM, int, str]:
        if self._flexolmo is None:
            self._flexolmo = build_flexolmo(self.profile, self.public, self.public_sha, self.domain, self.expert_path)
        return self._flexolmo

    def without(self) -> FlexOlmoForCausalLM:
        moe, index, _ = self.flexolmo()
        return keep_experts(moe, [i for i in range(moe.config.num_experts) if i != index])

    def targets(self) -> list[Target]:
        """M_pub, dense, FlexOlmo, FlexOlmo without the expert, and the DP expert's FlexOlmo when its file exists.
        DataError now (before any attack runs) when DP training is on and the expert it should have made is missing."""

        def fixed(text: str) -> Callable[[], str]:
            return lambda: text

        def flexolmo_description() -> str:
            return f"FlexOlmo with the expert ({dp_label(self.expert_path)}): {self.flexolmo()[2]}"

        targets = [
            Target(PUBLIC, lambda: self.public, fixed("M_pub: never saw the domain")),
            Target(
                DENSE,
                lambda: load_dense(self.paths.dense_dir(self.domain) / "model"),
                fixed("dense domain model (all parameters continued on the domain)"),
            ),
            Target(FLEXOLMO, lambda: self.flexolmo()[0], flexolmo_description),
            Target(FLEXOLMO_WITHOUT, self.without, fixed("FlexOlmo with the expert removed (exact opt-out)")),
        ]
        dp_path = self.paths.expert_dir(self.domain) / DP_SUBDIR / EXPERT_FILE
        if dp_path.exists():  # a DP-trained expert beside the plain one: attack both
            build_dp = lambda: build_flexolmo(self.profile, self.public, self.public_sha, self.domain, dp_path)[0]
            targets.append(
                Target(FLEXOLMO_DP, build_dp, fixed(f"FlexOlmo with the DP-trained expert ({dp_label(dp_path)})"))
            )
        elif self.profile.train_expert.dp.enabled and not self.expert_path.exists():
            raise DataError(
                f"{self.expert_path}: the (DP-trained) expert is missing; "
                f"train it first (`flexo train-expert {self.domain}`)"
            )
        return targets
