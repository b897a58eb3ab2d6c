"""A small real world for registry, governance and serving tests: M_pub, router rows, a tokenizer and trained-looking
experts (start state + seeded noise, so opting one out really changes the output), all files under tmp_path; and the
world of the revocation matrices: experts revoked each of the four ways a steward can revoke one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from model.config import TokenizerIds
from model.coordinated import CoordinatedExpertModel
from model.export import export_pretrained
from model.public import build_public_model
from tasks.core.artifacts import RunPaths
from tasks.core.build import model_sizes
from tasks.core.config import Profile
from tasks.training.expert_file import save_expert
from tasks.training.route import load_router_embedding

IDS = TokenizerIds(pad_token_id=0, eos_token_id=1)
TEXTS = [
    "Stocks fell sharply as the central bank raised rates.",
    "The theorem follows from the lemma by induction on n.",
    "def add(a, b): return a + b",
    "Once upon a time a fox lived in the forest.",
] * 8


@dataclass
class World:
    profile: Profile
    paths: RunPaths
    public: torch.nn.Module
    public_sha: str


def build_tokenizer(target: Path) -> None:
    """A byte-level BPE tokenizer (ids 0 = <pad>, 1 = <eos>) trained on a few sentences, saved for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(TEXTS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>")
    fast.save_pretrained(str(target))


def build_world(profile: Profile) -> World:
    paths = RunPaths(profile)
    public = build_public_model(model_sizes(profile), IDS, seed=0)
    public_sha = export_pretrained(public, paths.public_model_dir)
    build_tokenizer(paths.tokenizer_dir)
    for index, domain in enumerate(["public", *profile.closed_domains]):
        row = torch.randn(profile.model.hidden_size, generator=torch.Generator().manual_seed(100 + index))
        target = paths.router_embedding(domain)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file({"raw": row.clone(), "projected": row.clone()}, str(target))
    return World(profile, paths, public, public_sha)


def make_expert(world: World, domain: str, seed: int) -> Path:
    """An expert file for `domain`: the coordinated start state with seeded noise on its FFN (a stand-in for
    training)."""
    r_pub = load_router_embedding(world.paths.router_embedding("public"))
    r_i = load_router_embedding(world.paths.router_embedding(domain))
    state = CoordinatedExpertModel.from_public(world.public, r_pub, r_i).expert_state()
    generator = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        if key.endswith(".weight"):
            state[key] = value + 0.5 * torch.randn(value.shape, generator=generator)
    path = world.paths.root / "trained" / domain / f"expert-{seed}.safetensors"
    save_expert(state, path, domain=domain, public_sha256=world.public_sha)
    return path


def md5_of(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode()).hexdigest()


# The four ways a steward can revoke an expert, each applied to its own domain, and the domain nobody revokes.
WAYS = {"cli": "news", "client_tag": "math", "alias_removed": "code", "alias_to_revoked": "reddit"}
KEPT = "academic"


def serving_world(profile: Profile, domains: list[str]) -> World:
    """Active expert version 1 for each of `domains` (seeds 1, 2, ...) and `flexo-moe` version 1, serving, holding
    them all."""
    from tasks.registry import registry
    from tasks.registry.governance import assemble_and_register

    world = build_world(profile)
    for seed, domain in enumerate(domains, start=1):
        registry.register_expert(profile, domain, make_expert(world, domain, seed), md5_of(domain))
    assemble_and_register(profile)
    return world


def consent_world(profile: Profile) -> tuple[World, dict[str, Path]]:
    """A world where every WAYS domain and KEPT has an active expert version 1, reddit also a version 2 whose check
    failed (so `active` stayed on 1), and `flexo-moe` version 1 (serving) holds them all. Returns the expert files."""
    from tasks.registry import registry
    from tasks.registry.governance import assemble_and_register

    world = build_world(profile)
    files = {domain: make_expert(world, domain, seed) for seed, domain in enumerate([*WAYS.values(), KEPT], start=1)}
    for domain, path in files.items():
        registry.register_expert(profile, domain, path, md5_of(domain))
    reddit_v2 = make_expert(world, WAYS["alias_to_revoked"], 99)
    registry.register_expert(profile, WAYS["alias_to_revoked"], reddit_v2, md5_of("v2"), checks={"extraction": False})
    assemble_and_register(profile)
    return world, files


def revoke_outside_the_cli(profile: Profile) -> None:
    """What a steward does in the MLflow UI or with the client, nothing else: `status=revoked` on math version 1; the
    `active` alias of code deleted; reddit version 2 tagged revoked and `active` moved onto it."""
    from mlflow import MlflowClient
    from tasks.core.tracking import tracking_uri

    uri = tracking_uri(profile)
    mlclient = MlflowClient(tracking_uri=uri, registry_uri=uri)
    prefix = profile.registry.expert_model_prefix
    mlclient.set_model_version_tag(f"{prefix}{WAYS['client_tag']}", "1", "status", "revoked")
    mlclient.delete_registered_model_alias(f"{prefix}{WAYS['alias_removed']}", "active")
    mlclient.set_model_version_tag(f"{prefix}{WAYS['alias_to_revoked']}", "2", "status", "revoked")
    mlclient.set_registered_model_alias(f"{prefix}{WAYS['alias_to_revoked']}", "active", "2")
