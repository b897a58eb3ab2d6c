"""The tokenizer is a byte-level BPE trained on public train only, loadable by transformers offline, with eos/pad."""

from __future__ import annotations

import json
import os

from tasks.core.datasets import load_split
from tasks.data.cards import write_card
from tasks.data.pipeline import build_domain, train_tokenizer
from tests.tasks.data_world import folder_domain, with_domains, write_txt_folder


def test_tokenizer_public_only_roundtrip_bytes_per_token_and_card(tmp_profile, tmp_path):
    from transformers import AutoTokenizer

    pub, secret = tmp_path / "pub", tmp_path / "secret"
    write_txt_folder(pub, 80, seed=5)
    secret.mkdir()
    for i in range(40):  # a closed domain full of one word the public text never uses
        (secret / f"s{i}.txt").write_text(
            f"quixotically zephyrous quixotically zephyrous number {i} " * 8, encoding="utf-8"
        )
    p = with_domains(
        tmp_profile,
        {"public": folder_domain(pub, owner="pub"), "secret": folder_domain(secret, owner="sec")},
        near_duplicate_threshold=0.99,
    )
    build_domain(p, "public")
    build_domain(p, "secret")
    result = train_tokenizer(p)
    tok = AutoTokenizer.from_pretrained(str(result.path))
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    assert tok.eos_token_id is not None and tok.pad_token_id is not None and tok.eos_token_id != tok.pad_token_id
    assert 256 < len(tok) <= p.tokenizer.vocab_size  # a tiny corpus may run out of merges before the cap
    text = load_split(p, "public", "val")["text"][0]
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level: lossless
    assert result.trained_on_docs == len(load_split(p, "public", "train"))
    vocab = tok.get_vocab()
    assert not any("quixot" in t or "zephyr" in t for t in vocab)  # never saw the closed domain
    assert set(result.bytes_per_token) == {"public", "secret"}
    assert result.bytes_per_token["public"] > result.bytes_per_token["secret"] > 0
    card = write_card(p, "secret")
    info = json.loads(card.with_suffix(".json").read_text())
    assert info["tokens"]["train"] > 0 and info["owner"] == "sec" and info["dvc_md5"].endswith(".dir")
    assert sum(info["documents"].values()) + info["quarantined"] == info["ingested"]
    assert "quarantine by reason" in card.read_text().lower()


def test_token_counts_run_parallel_and_leave_the_switch_as_it_was(monkeypatch):
    """Counting switches tokenizers' parallelism on only while it encodes: the same lengths, the process setting
    (false, against fork warnings in later stages) restored."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from tasks.data.tokenizer_training import _encoded_lengths, _per_text

    texts = [f"document {i} with a few words, some repeated words {i % 7}" for i in range(300)]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=300)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    assert _per_text(tok, texts) == _encoded_lengths(tok, texts)
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
