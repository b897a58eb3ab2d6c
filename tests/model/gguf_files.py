"""Tiny GGUF files written with the `gguf` package the way llama.cpp's converter writes a Llama: architecture metadata,
a byte-level BPE tokenizer (tokens, types, merges), and the tensors under GGUF names with q/k rows permuted for its
rotary layout. One tensor kind can be stored Q8_0-quantized, so dequantization is exercised as well."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM

EOS, PAD = "<|endoftext|>", "<|pad|>"
TEXTS = ["the quick brown fox jumps over the lazy dog", "sum add plus minus times equals number prime"] * 20


def byte_level_bpe(vocab_size: int = 300) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(TEXTS, trainer)
    return tokenizer


def tiny_llama(vocab_size: int, rope_theta: float = 10_000.0, rms_norm_eps: float = 1e-5) -> LlamaForCausalLM:
    """A random untied Llama (GQA, non-trivial norms) whose ids match `byte_level_bpe`'s specials (eos 0, pad 1)."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.copy_(1 + 0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (rotary halves interleaved per head); `heads`: the projection's head count."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def write_llama_gguf(model: LlamaForCausalLM, tokenizer: Tokenizer, path: Path, quantized: str = "ffn_up") -> Path:
    """`model` and `tokenizer` as a GGUF file; tensors whose GGUF name contains `quantized` are stored Q8_0."""
    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_vocab_size(config.vocab_size)
    _add_tokenizer(writer, tokenizer, config.vocab_size)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        base, suffix = hf_name.rsplit(".", 1)
        name = f"{names.get_name(base)}.{suffix}"
        weights = tensor.numpy().astype(np.float32)
        if ".attn_q." in name:
            weights = _permute(weights, config.num_attention_heads)
        elif ".attn_k." in name:
            weights = _permute(weights, config.num_key_value_heads)
        if quantized and quantized in name:
            packed = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, weights)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_tokenizer(writer, tokenizer: Tokenizer, vocab_size: int) -> None:
    """A byte-level BPE as GGUF tokenizer metadata ("gpt2" model), padded with unused tokens to the model's vocab."""
    import gguf

    spec = json.loads(tokenizer.to_str())
    tokens = [token for token, _ in sorted(spec["model"]["vocab"].items(), key=lambda item: item[1])]
    tokens += [f"<|unused{i}|>" for i in range(vocab_size - len(tokens))]
    special = {EOS, PAD} | {t for t in tokens if t.startswith("<|unused")}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]])
    writer.add_bos_token_id(tokens.index(EOS))
    writer.add_eos_token_id(tokens.index(EOS))
    writer.add_pad_token_id(tokens.index(PAD))


def dequantized_reference(model: LlamaForCausalLM, quantized: str = "ffn_up") -> LlamaForCausalLM:
    """`model` with the tensors `write_llama_gguf` quantizes replaced by their Q8_0 round trip: what the file holds."""
    import copy

    import gguf

    reference = copy.deepcopy(model)
    names = {"ffn_up": "mlp.up_proj"}
    with torch.no_grad():
        for hf_name, parameter in reference.named_parameters():
            if quantized and names[quantized] in hf_name:
                packed = gguf.quants.quantize(parameter.numpy().astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
                restored = gguf.quants.dequantize(packed, gguf.GGMLQuantizationType.Q8_0)
                parameter.copy_(torch.from_numpy(np.array(restored, dtype=np.float32)))
    return reference
