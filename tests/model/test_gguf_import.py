"""A GGUF file read back as the transformers model it was written from: config, tokenizer and weights (F32 exactly,
Q8_0 as the file holds it), with llama.cpp's q/k permutation undone."""

from __future__ import annotations

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from model.gguf_import import gguf_config, gguf_tokenizer, load_gguf_model
from tests.model.gguf_files import EOS, PAD, TEXTS, byte_level_bpe, dequantized_reference, tiny_llama, write_llama_gguf


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_weights_round_trip_exactly_as_the_file_holds_them(tmp_path) -> None:
    model = tiny_llama(vocab_size=320)
    ids = torch.randint(2, 300, (2, 12), generator=torch.Generator().manual_seed(3))
    exact = write_llama_gguf(model, byte_level_bpe(), tmp_path / "f32.gguf", quantized="")
    back = load_gguf_model(exact)
    assert isinstance(back, LlamaForCausalLM) and not back.config.tie_word_embeddings
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    assert torch.equal(_logits(back, ids), _logits(model, ids))

    quantized = load_gguf_model(write_llama_gguf(model, byte_level_bpe(), tmp_path / "q8.gguf"))
    reference = dequantized_reference(model)
    assert torch.equal(_logits(quantized, ids), _logits(reference, ids))
    assert not torch.equal(_logits(quantized, ids), _logits(model, ids))  # Q8_0 did change those weights


def test_config_and_tokenizer_come_from_the_metadata(tmp_path) -> None:
    bpe = byte_level_bpe()
    path = write_llama_gguf(tiny_llama(vocab_size=320), bpe, tmp_path / "tiny.gguf")
    config = gguf_config(path)
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("llama", 32, 2)
    assert (config.num_attention_heads, config.num_key_value_heads, config.intermediate_size) == (4, 2, 64)
    assert config.rope_parameters["rope_theta"] == 10_000.0 and abs(config.rms_norm_eps - 1e-5) < 1e-9
    tokenizer = gguf_tokenizer(path)
    assert (tokenizer.eos_token, tokenizer.pad_token) == (EOS, PAD) and len(tokenizer) == 320
    original = PreTrainedTokenizerFast(tokenizer_object=bpe)
    for text in TEXTS[:2] + ["the brown number, plus seven!"]:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert ids == original(text).input_ids and tokenizer.decode(ids) == text
