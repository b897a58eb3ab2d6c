"""A small real world for registry, governance and serving tests: M_pub, router rows, a tokenizer and trained-looking
experts (start state + seeded noise, so opting one out really changes the output), all files under tmp_path."""

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
