"""`flexo-public` registers an adopted anchor as it came in: its version carries the anchor's source, origin, sha256,
license and parameter count, and its artifacts hold `anchor.json`."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from tasks.core.artifacts import ANCHOR_FILE, RunPaths
from tasks.core.hashing import file_sha256
from tasks.data.pipeline import train_tokenizer
from tasks.registry import registry
from tasks.training.train import train_public
from tests.model.gguf_files import EOS, byte_level_bpe, tiny_llama
from tests.tasks.training.test_anchor import TINY_ANCHOR, _with_anchor


def test_the_registered_public_version_says_where_the_anchor_came_from(tmp_profile, tmp_path: Path) -> None:
    checkpoint = tmp_path / "anchor"
    anchor = tiny_llama(**TINY_ANCHOR)
    anchor.save_pretrained(checkpoint)
    PreTrainedTokenizerFast(tokenizer_object=byte_level_bpe(), eos_token=EOS).save_pretrained(checkpoint)
    world = _with_anchor(tmp_profile, source="checkpoint", path=str(checkpoint), license="Apache-2.0")
    train_tokenizer(world)
    public = train_public(world)
    model_dir = RunPaths(world).public_model_dir
    ref = registry.register_public(world, model_dir, "md5-public", public.metrics)
    assert ref.sha256 == public.sha256 and ref.aliases == ("active",)
    tags = ref.tags
    assert (tags["anchor_source"], tags["anchor_origin"]) == ("checkpoint", str(checkpoint))
    assert tags["anchor_sha256"] == file_sha256(checkpoint) and tags["anchor_license"] == "Apache-2.0"
    assert tags["anchor_parameters"] == str(anchor.num_parameters()) and tags["anchor_moe_host"] == "qwen2_moe"
    assert json.loads((model_dir / ANCHOR_FILE).read_text())["weights_sha256"] == ref.sha256
