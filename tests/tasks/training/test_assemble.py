"""Assembly from files: router embeddings from the real encoder, experts checked against the M_pub they were trained
on."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from model.config import ModelSizes, TokenizerIds
from model.coordinated import CoordinatedExpertModel
from model.export import export_pretrained
from model.public import build_public_model
from tasks.core.artifacts import RunPaths
from tasks.core.errors import DataError, IntegrityError
from tasks.training.assemble import assemble, read_manifest
from tasks.training.expert_file import save_expert
from tasks.training.route import embed_domain, load_router_embedding


def _public(profile, seed=0):
    return build_public_model(ModelSizes.from_mapping(profile.model), TokenizerIds(0, 1), seed)


def _rows(profile, paths, domains):
    for index, domain in enumerate(domains):
        row = torch.randn(profile.model.hidden_size, generator=torch.Generator().manual_seed(index)) * 0.3
        target = paths.router_embedding(domain)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file({"raw": row.clone(), "projected": row.clone()}, str(target))


def _setup(profile, domains=("news", "math")):
    paths = RunPaths(profile)
    public = _public(profile)
    public_sha = export_pretrained(public, paths.public_model_dir)
    _rows(profile, paths, ["public", *domains])
    r_pub = load_router_embedding(paths.router_embedding("public"))
    files = []
    for domain in domains:
        r_i = load_router_embedding(paths.router_embedding(domain))
        state = CoordinatedExpertModel.from_public(public, r_pub, r_i).expert_state()
        path = paths.expert_dir(domain) / "expert.safetensors"
        save_expert(state, path, domain=domain, public_sha256=public_sha)
        files.append(path)
    return paths, public, files


def test_assemble_exports_a_plain_transformers_moe_with_manifest(tmp_profile) -> None:
    paths, public, files = _setup(tmp_profile)
    result = assemble(tmp_profile, files, top_k=3)
    assert result.top_k == 3 and result.experts == ["public", "news", "math"]
    manifest = read_manifest(result.model_dir)
    assert manifest["sha256"] == result.sha256 and len(manifest["expert_sha256"]) == 2
    moe = AutoModelForCausalLM.from_pretrained(result.model_dir, local_files_only=True)
    ids = torch.randint(2, tmp_profile.model.vocab_size, (2, 12))
    with torch.no_grad():  # start-state experts, all selected (top-3 of 3): the MoE still computes M_pub
        assert (moe(input_ids=ids).logits - public(input_ids=ids).logits).abs().max() < 1e-5


def test_tampered_expert_is_refused(tmp_profile) -> None:
    _, _, files = _setup(tmp_profile)
    from model.hashing import sha256_file

    recorded = [sha256_file(f) for f in files]
    data = bytearray(files[0].read_bytes())
    data[-1] ^= 0xFF
    files[0].write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match the recorded"):
        assemble(tmp_profile, files, expected_sha256=recorded)


def test_expert_from_another_public_model_is_refused(tmp_profile) -> None:
    paths, _, files = _setup(tmp_profile)
    export_pretrained(_public(tmp_profile, seed=9), paths.public_model_dir)  # M_pub replaced after the experts trained
    with pytest.raises(IntegrityError, match="trained against M_pub"):
        assemble(tmp_profile, files)


def test_embed_domain_reads_only_its_train_split(tmp_profile) -> None:
    paths = RunPaths(tmp_profile)
    with pytest.raises(DataError, match="train split of 'news' is missing"):
        embed_domain(tmp_profile, "news")
    split = paths.split("news", "train")
    split.parent.mkdir(parents=True)
    pd.DataFrame(
        {"id": ["a", "b", "c"], "text": ["Stocks fell today.", "The minister said.", "Rain in Sydney."]}
    ).to_parquet(split)
    out = embed_domain(tmp_profile, "news")
    row = load_router_embedding(out)
    assert row.shape == (tmp_profile.model.hidden_size,)
    assert 0 < row.norm() <= 1.0 + 1e-5  # a mean of unit vectors, through an orthogonal map
