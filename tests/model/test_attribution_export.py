"""Attribution reads the router; export round-trips through transformers; the router map is a fixed orthogonal map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from model.attribution import expert_attribution, record_routing
from model.coordinated import CoordinatedExpertModel
from model.export import export_pretrained
from model.hashing import sha256_file
from model.merge import merge_experts
from model.optout import masked_experts
from model.router import domain_embedding, orthogonal_map, project
from tests.model.conftest import random_row


@pytest.fixture
def moe(public_model):
    r_pub = random_row(0)
    experts = [CoordinatedExpertModel.from_public(public_model, r_pub, random_row(s)).expert_state() for s in (1, 2)]
    return merge_experts(public_model, r_pub, experts, top_k=2)


def test_attribution_sums_to_one_and_masked_expert_gets_nothing(moe, batch) -> None:
    mass = expert_attribution(moe, batch)
    assert mass.shape == (batch.numel(), 3)
    assert torch.allclose(mass.sum(dim=-1), torch.ones(batch.numel()), atol=1e-5)
    with masked_experts(moe, [2]):
        masked = expert_attribution(moe, batch)
    assert masked[:, 2].abs().max() == 0


def test_routing_is_recorded_across_generate_steps(moe) -> None:
    prompt = torch.tensor([[5, 6, 7]])
    with record_routing(moe) as record:
        out = moe.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=0)
    mass, selected = record.per_token()
    generated = out.shape[1] - prompt.shape[1]
    assert mass.shape[0] == prompt.shape[1] + generated - 1  # prompt pass, then one token per step
    assert torch.allclose(selected.sum(-1), torch.full((mass.shape[0],), 2.0))  # top-2 slots per layer


def _tiny_tokenizer(path) -> None:
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=96, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(["hello world"] * 10, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>").save_pretrained(path)


def test_export_round_trip_through_plain_transformers(moe, public_model, batch, tmp_path) -> None:
    _tiny_tokenizer(tmp_path / "tok")
    for name, model in (("moe", moe), ("public", public_model)):
        digest = export_pretrained(model, tmp_path / name, tokenizer_dir=tmp_path / "tok")
        assert digest == sha256_file(tmp_path / name / "model.safetensors")
        assert not list((tmp_path / name).glob("*.bin")) and not list((tmp_path / name).glob("*.pt"))
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / name, local_files_only=True)
        assert type(reloaded) is type(model)
        with torch.no_grad():
            assert torch.equal(reloaded(input_ids=batch).logits, model(input_ids=batch).logits)


def test_domain_embedding_is_mean_of_unit_vectors() -> None:
    docs = np.array([[3.0, 0.0], [0.0, 2.0]])
    assert np.allclose(domain_embedding(docs), [0.5, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        domain_embedding(np.array([[np.nan, 1.0]]))


@pytest.mark.parametrize("d_e,d", [(384, 512), (384, 256)])
def test_orthogonal_map_is_fixed_and_orthogonal(d_e: int, d: int) -> None:
    q = orthogonal_map(d_e, d, seed=7)
    assert q.shape == (d, d_e)
    gram = q.T @ q if d >= d_e else q @ q.T
    assert torch.allclose(gram, torch.eye(min(d, d_e)), atol=1e-5)
    assert torch.equal(q, orthogonal_map(d_e, d, seed=7))  # every owner computes the same map
    if d >= d_e:  # norms and angles preserved
        v = torch.randn(d_e)
        assert torch.allclose(project(v.numpy(), d, seed=7).norm(), v.norm(), atol=1e-4)
