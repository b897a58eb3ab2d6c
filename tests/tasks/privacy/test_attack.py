"""The attack stage end to end on tiny real models, a real BPE tokenizer, real parquet splits and a real MLflow store.

An expert overfitted on its domain's training documents must be refused by the gate; a start-state expert must be
admitted; a calibration that cannot extract is reported as a broken attack.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from model.config import ModelSizes, TokenizerIds
from model.coordinated import CoordinatedExpertModel
from model.export import export_pretrained
from model.public import build_public_model
from tasks.core.artifacts import RunPaths
from tasks.core.errors import ConfigError, DataError, GateError
from tasks.privacy.attack import attack
from tasks.privacy.gate import (
    GATE_CHECK,
    TAG_ADMISSION,
    TAG_EXTRACTION_RATE,
    admission_decision,
    admission_from_tags,
    check_admission,
)
from tasks.privacy.record import record_attack
from tasks.privacy.results import DENSE, FLEXOLMO, FLEXOLMO_DP, FLEXOLMO_WITHOUT, PUBLIC, CalibrationError
from tasks.training.expert_file import save_expert

LOGIT_SCALE = 30.0
EXPERT_STEPS = 150
WORDS = [f"w{chr(97 + i)}{chr(97 + j)}" for i in range(10) for j in range(10)]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models are latency-bound; one thread avoids spin-waiting on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def profile(tmp_profile):
    """tiny, with top-2 of 2 in the merged model so FlexOlmo computes exactly what the coordinated expert trained."""
    return tmp_profile.model_copy(update={"router": tmp_profile.router.model_copy(update={"top_k": 2})})


def _texts(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=30)) for _ in range(count)]


def _tokenizer(paths: RunPaths, vocab_size: int) -> PreTrainedTokenizerFast:
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<unk>"])
    raw.train_from_iterator(_texts(200, seed=99), trainer)
    from tokenizers import decoders

    raw.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tok.save_pretrained(paths.tokenizer_dir)
    return tok


def _train_expert(
    public, r_pub, r_math, token_lists: list[list[int]], window: int, steps: int
) -> dict[str, torch.Tensor]:
    """A coordinated expert trained `steps` full-batch steps on every window of every document: many steps overfit."""
    model = CoordinatedExpertModel.from_public(public, r_pub, r_math, bias_init=None)
    if steps:
        batch = torch.tensor([t[i : i + window] for t in token_lists for i in range(len(t) - window + 1)])
        optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
        for _ in range(steps):
            optimizer.zero_grad()
            model(batch).loss.backward()
            optimizer.step()
    return model.expert_state()


def _workspace(profile, expert_steps: int = 0, docs: int = 6) -> RunPaths:
    """Tokenizer, math train split, M_pub, router rows, the math expert and the dense math model, all under tmp_path."""
    paths = RunPaths(profile)
    tok = _tokenizer(paths, profile.tokenizer.vocab_size)
    texts = _texts(docs, seed=1)
    split = paths.split("math", "train")
    split.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": [f"math-{i}" for i in range(docs)], "text": texts}).to_parquet(split)
    ids = TokenizerIds(tok.pad_token_id, tok.eos_token_id)
    public = build_public_model(ModelSizes.from_mapping(profile.model), ids, seed=0).eval()
    with torch.no_grad():  # a trained LM's logit scale: at init (std 0.02) a frozen head caps every logit below ~1
        public.model.norm.weight.fill_(LOGIT_SCALE)
    public_sha = export_pretrained(public, paths.public_model_dir)
    rows = {}
    for index, domain in enumerate(["public", "math"]):
        rows[domain] = torch.randn(profile.model.hidden_size, generator=torch.Generator().manual_seed(index)) * 0.3
        target = paths.router_embedding(domain)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file({"raw": rows[domain].clone(), "projected": rows[domain].clone()}, str(target))
    token_lists = [t[: profile.model.max_seq_len] for t in tok(texts, add_special_tokens=False)["input_ids"]]
    assert min(len(t) for t in token_lists) >= profile.attack.window_tokens
    state = _train_expert(public, rows["public"], rows["math"], token_lists, profile.attack.window_tokens, expert_steps)
    save_expert(state, paths.expert_dir("math") / "expert.safetensors", domain="math", public_sha256=public_sha)
    export_pretrained(public, paths.dense_dir("math") / "model")  # the dense baseline here: M_pub itself
    return paths


def test_start_state_expert_is_admitted_and_opt_out_falls_back_to_public(profile) -> None:
    from tasks.training.expert_file import load_expert

    paths = _workspace(profile)
    expert = paths.expert_dir("math") / "expert.safetensors"
    state, meta = load_expert(expert)  # a DP-trained expert beside it (here: the same weights, labelled by metadata)
    save_expert(
        state,
        expert.parent / "dp" / "expert.safetensors",
        domain="math",
        public_sha256=meta["public_sha256"],
        dp="True",
        dp_epsilon="8",
        dp_delta="1e-06",
    )
    result = attack(profile, "math", progress=False)
    assert set(result.models) == {PUBLIC, DENSE, FLEXOLMO, FLEXOLMO_WITHOUT, FLEXOLMO_DP}
    assert "epsilon 8" in result.models[FLEXOLMO_DP].description and "no DP" in result.models[FLEXOLMO].description
    assert result.models[FLEXOLMO_DP].rate == result.models[FLEXOLMO].rate  # same weights, same seeds
    assert result.calibration.passed and result.calibration.rate.rate >= profile.attack.min_calibration_rate
    assert result.train_docs == 6 and result.eligible_docs == 6 and result.too_short_docs == 0
    for rate in result.models.values():
        assert rate.num_docs == profile.attack.num_docs
    # a fresh random M_pub reproduces nothing; opting the expert out gives M_pub's numbers back
    assert result.models[PUBLIC].rate == 0.0
    assert result.models[FLEXOLMO_WITHOUT].rate == result.models[PUBLIC].rate
    assert result.models[FLEXOLMO_WITHOUT].mean_similarity == pytest.approx(result.models[PUBLIC].mean_similarity)
    assert result.admitted and result.extraction_rate == result.models[FLEXOLMO].rate
    report = json.loads((paths.attack_dir / "math" / "report.json").read_text())
    assert report["calibration"]["passed"] and report["models"][FLEXOLMO]["num_docs"] == profile.attack.num_docs
    assert len(report["models"][PUBLIC]["doc_scores"]) == profile.attack.num_docs


def test_overfitted_expert_is_refused_and_tagged_in_mlflow(profile) -> None:
    import mlflow
    from model.hashing import sha256_file

    paths = _workspace(profile, expert_steps=EXPERT_STEPS)
    result = attack(profile, "math", progress=False)
    assert result.models[FLEXOLMO].rate >= 0.75  # the expert memorised its training documents
    assert result.models[FLEXOLMO_WITHOUT].rate == 0.0  # removing it removes the leak
    assert not result.admitted and "exceeds attack.max_extraction_rate" in result.reason
    with pytest.raises(GateError, match="refused"):
        check_admission(result.extraction_rate, profile)

    from tasks.registry import registry

    expert = paths.expert_dir("math") / "expert.safetensors"
    version = registry.register_expert(profile, "math", expert, data_md5="0" * 32)  # no checks yet: gets `active`
    assert registry.ACTIVE_ALIAS in version.aliases and version.sha256 == sha256_file(expert)
    assert record_attack(profile, result) == version.version
    after = registry.get_version(profile, version.name, version.version)
    assert float(after.tags[TAG_EXTRACTION_RATE]) == pytest.approx(result.extraction_rate)
    assert after.tags[TAG_ADMISSION] == "refused" and after.tags[f"check.{GATE_CHECK}"] == "failed"
    assert registry.ACTIVE_ALIAS not in after.aliases  # the gate took the alias away
    assert admission_from_tags(after.tags, profile)[0] is False
    runs = mlflow.search_runs(filter_string="tags.stage = 'attack'")
    assert runs["metrics.extraction_rate.flexolmo"].iloc[0] == pytest.approx(result.extraction_rate)


def test_calibration_that_cannot_extract_says_the_attack_is_broken(profile) -> None:
    attack_cfg = profile.attack.model_copy(update={"calibration_epochs": 1})
    weak = profile.model_copy(update={"attack": attack_cfg})
    paths = _workspace(weak)
    with pytest.raises(CalibrationError, match="the attack is broken"):
        attack(weak, "math", progress=False)
    assert json.loads((paths.attack_dir / "math" / "report.json").read_text())["calibration"]["passed"] is False


def test_gate_decisions(tiny_profile) -> None:
    limit = tiny_profile.attack.max_extraction_rate
    assert admission_decision(limit, tiny_profile)[0] is True
    admitted, reason = admission_decision(min(1.0, limit + 0.01), tiny_profile)
    assert not admitted and "exceeds" in reason
    assert admission_decision(float("nan"), tiny_profile)[0] is False
    assert admission_from_tags({}, tiny_profile) == (False, admission_from_tags({}, tiny_profile)[1])
    assert "never attacked" in admission_from_tags({}, tiny_profile)[1]
    assert admission_from_tags({TAG_EXTRACTION_RATE: "0.0"}, tiny_profile)[0] is True
    assert "admitted" in check_admission(0.0, tiny_profile)


def test_missing_inputs_are_named(profile) -> None:
    with pytest.raises(DataError, match="tokenizer is missing"):
        attack(profile, "math", progress=False)
    with pytest.raises(DataError, match="not a data owner's domain"):
        attack(profile, "public", progress=False)
    paths = _workspace(profile)
    (paths.dense_dir("math") / "model" / "model.safetensors").unlink()
    with pytest.raises(DataError, match="dense domain model is missing"):
        attack(profile, "math", progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_config_error_before_any_input_is_read(profile) -> None:
    """`runtime.device: cuda` without CUDA is refused as training refuses it, never attacked on the CPU: a ConfigError
    raised before the tokenizer (missing here, which would be a DataError) or any model is loaded."""
    cuda = profile.model_copy(update={"runtime": profile.runtime.model_copy(update={"device": "cuda"})})
    with pytest.raises(ConfigError, match="runtime.device is 'cuda'"):
        attack(cuda, "math", progress=False)
    assert not RunPaths(cuda).attack_dir.exists()


def test_cli_refuses_an_overfitted_expert_with_exit_code_7(profile, tmp_path, monkeypatch, capsys) -> None:
    """`flexo attack math` on a real params file whose paths point into tmp_path: table printed, gate exit code 7.
    Through the CLI's entry point in this process (a new interpreter's imports cost seconds and change nothing)."""
    import os

    import yaml

    from tasks.core.config import DEFAULT_PARAMS
    from tests.flows.conftest import flexo_in_process

    _workspace(profile, expert_steps=EXPERT_STEPS)
    raw = yaml.safe_load(DEFAULT_PARAMS.read_text())
    raw["defaults"]["paths"].update(profile.paths.model_dump())
    raw["profiles"]["tiny"].setdefault("router", {})["top_k"] = 2
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "FLEXO_PARAMS": str(params)}
    done = flexo_in_process(monkeypatch, capsys, env, "attack", "math", "--profile", "tiny", "--no-mlflow")
    assert done.returncode == 7, done.stderr
    assert "flexolmo_without" in done.stderr and "calibration" in done.stderr
    assert "exceeds attack.max_extraction_rate" in done.stderr


def test_flexolmo_is_the_serving_moe_plus_the_expert(profile) -> None:
    """A new expert joins the assembled MoE's experts; an expert already in it is attacked in the MoE as deployed."""
    from model.public import load_public_model
    from tasks.training.assemble import assemble

    paths = _workspace(profile)
    public = load_public_model(str(paths.public_model_dir))
    row = torch.randn(profile.model.hidden_size, generator=torch.Generator().manual_seed(7)) * 0.3
    save_file({"raw": row.clone(), "projected": row.clone()}, str(paths.router_embedding("news")))
    from tasks.training.route import load_router_embedding

    news_state = CoordinatedExpertModel.from_public(
        public, load_router_embedding(paths.router_embedding("public")), row
    ).expert_state()
    from model.hashing import sha256_file

    news = paths.expert_dir("news") / "expert.safetensors"
    save_expert(
        news_state, news, domain="news", public_sha256=sha256_file(paths.public_model_dir / "model.safetensors")
    )
    math = paths.expert_dir("math") / "expert.safetensors"

    assemble(profile, [news])
    joined = attack(profile, "math", progress=False)
    assert "experts ['news'] + this expert" in joined.models[FLEXOLMO].description
    assemble(profile, [news, math])
    deployed = attack(profile, "math", progress=False)
    assert "as deployed" in deployed.models[FLEXOLMO].description
    # without math: [public, news] at top-2 of 2, start-state news = FFN_pub, so exactly M_pub's function and numbers
    for result in (joined, deployed):
        without = result.models[FLEXOLMO_WITHOUT]
        assert without.mean_similarity == pytest.approx(result.models[PUBLIC].mean_similarity)
        assert [d["best_sample"] for d in without.doc_scores] == [
            d["best_sample"] for d in result.models[PUBLIC].doc_scores
        ]


def test_flexolmo_is_the_registrys_serving_moe(profile) -> None:
    """In the pipeline the deployed MoE is the registry's `flexo-moe@serving` (not RunPaths.moe_dir): the attack must
    find it there and attack the expert inside it as deployed."""
    from tasks.registry import registry
    from tasks.registry.governance import assemble_and_register

    paths = _workspace(profile)
    registry.register_expert(profile, "math", paths.expert_dir("math") / "expert.safetensors", "0" * 32)
    assemble_and_register(profile)
    assert not (paths.moe_dir / "flexo_manifest.json").exists()
    result = attack(profile, "math", progress=False)
    assert "the serving MoE as deployed (experts ['public', 'math'])" in result.models[FLEXOLMO].description
