"""A tiny but complete world for the evaluation tests: 8 domains of synthetic text with distinct vocabularies, a BPE
tokenizer, M_pub, a dense model per domain, router embeddings, expert files and the assembled MoE, all under tmp_path.

Real objects throughout (transformers models, a `tokenizers` BPE, safetensors files, `tasks.training.assemble`); only
the text is synthetic, from seeded word lists, so that domains differ the way real ones do (vocabulary) and tests stay
fast.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from model.baselines import dense_as_expert
from model.config import ModelSizes, TokenizerIds
from model.export import export_pretrained
from model.public import build_public_model
from tasks.core.artifacts import EXPERT_FILE, RunPaths
from tasks.core.config import Profile
from tasks.training.assemble import assemble
from tasks.training.expert_file import save_expert

WORDS = {
    "public": "the a people city year world history river water people house road market music language".split(),
    "news": "minister police government court election report official said percent storm council".split(),
    "reddit": "lol anyone else thread upvote honestly my friend post edit thanks imo guys".split(),
    "academic": "we propose results model estimator theorem hypothesis sample variance regression".split(),
    "educational": "students learn lesson example chapter exercise define tutorial notice section".split(),
    "creative": "moon heart night dream whisper silver love sorrow wind rose shadow".split(),
}


def _prose(words: list[str], rng: np.random.Generator, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        n = int(rng.integers(6, 12))
        out.append(" ".join(rng.choice(words, n)).capitalize() + ".")
    return " ".join(out)


def _code(rng: np.random.Generator) -> str:
    name = rng.choice(["total", "value", "count", "items", "result"])
    lines = [
        f"def compute_{name}(data):",
        f"    {name} = 0",
        "    for item in data:",
        f"        {name} += item * {int(rng.integers(2, 9))}",
        f"    return {name}",
    ]
    return "\n".join(lines) + "\n"


def _math(rng: np.random.Generator) -> tuple[str, str]:
    a, b = int(rng.integers(1, 50)), int(rng.integers(1, 50))
    return f"What is {a} plus {b}?", str(a + b)


def write_domain(profile: Profile, domain: str, rng: np.random.Generator, rows: int) -> None:
    paths = RunPaths(profile)
    for split, count in (("train", rows), ("val", profile.data.val_docs), ("test", profile.data.test_docs)):
        records = []
        for i in range(count):
            if domain == "code":
                records.append({"id": f"{domain}-{split}-{i}", "text": _code(rng) + _code(rng)})
            elif domain == "math":
                q, a = _math(rng)
                records.append({"id": f"{domain}-{split}-{i}", "text": f"{q}\n{a}", "question": q, "answer": a})
            else:
                records.append({"id": f"{domain}-{split}-{i}", "text": _prose(WORDS[domain], rng, 6)})
        path = paths.split(domain, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(records).to_parquet(path)


def write_tokenizer(profile: Profile) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    paths = RunPaths(profile)
    texts = [t for d in profile.domains for t in pd.read_parquet(paths.split(d, "train"))["text"]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=profile.tokenizer.vocab_size,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    fast.save_pretrained(str(paths.tokenizer_dir))


def _perturbed(model, seed: int, scale: float):
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in other.named_parameters():
            if "mlp" in name:
                p.add_(scale * torch.randn(p.shape, generator=gen))
    return other


def build_world(profile: Profile, dense: bool = True, public: torch.nn.Module | None = None) -> None:
    """`public`: M_pub itself (an anchor such as a tiny Llama, pad id 0 and eos id 1 as the tokenizer here); by default
    an OLMo-2 as flexo builds it."""
    rng = np.random.default_rng(0)
    for domain in profile.domains:
        write_domain(profile, domain, rng, rows=60)
    write_tokenizer(profile)
    paths = RunPaths(profile)
    if public is None:
        sizes = ModelSizes.from_mapping(profile.model)
        public = build_public_model(sizes, TokenizerIds(pad_token_id=0, eos_token_id=1), seed=0).eval()
    public_sha = export_pretrained(public, paths.public_model_dir, paths.tokenizer_dir)
    gen = torch.Generator().manual_seed(3)
    rows = {}
    for domain in profile.domains:
        raw, projected = torch.randn(384, generator=gen), torch.randn(profile.model.hidden_size, generator=gen) * 0.3
        rows[domain] = projected
        out = paths.router_embedding(domain)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file({"raw": raw, "projected": projected}, str(out))
    files = []
    for index, domain in enumerate(profile.closed_domains, start=1):
        model = _perturbed(public, index, 0.02)
        if dense:
            export_pretrained(model, paths.dense_dir(domain) / "model")
        state = dense_as_expert(model, rows["public"], rows[domain])
        files.append(paths.expert_dir(domain) / EXPERT_FILE)
        save_expert(state, files[-1], domain=domain, public_sha256=public_sha)
    assemble(profile, files)


def bf16_world_under(root: Path, tiny_profile: Profile) -> Profile:
    """`tiny_profile` moved under `root`, one thread and bf16 autocast, with its world built: the evaluations whose
    results must not change when memory is freed are compared there."""
    from tests.profiles import paths_under

    profile = tiny_profile.model_copy(
        update={
            "paths": tiny_profile.paths.model_copy(update=paths_under(root)),
            "runtime": tiny_profile.runtime.model_copy(update={"num_threads": 1, "precision": "bf16"}),
        }
    )
    build_world(profile)
    return profile
