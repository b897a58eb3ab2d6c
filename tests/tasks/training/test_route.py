"""The sentence encoder behind every router row: how much of each document it reads is the profile's
`router.encoder_max_tokens`, and the stored proxy pool is only reused when it was read the same way."""

from __future__ import annotations

import numpy as np

from tasks.core.config import Profile
from tasks.training.route import encode, load_encoder


def _reading(profile: Profile, tokens: int) -> Profile:
    return profile.model_copy(update={"router": profile.router.model_copy(update={"encoder_max_tokens": tokens})})


def test_the_encoder_reads_only_the_first_encoder_max_tokens_word_pieces(tiny_profile) -> None:
    head = "The river rose overnight and the town council met at dawn to plan the evacuation of the lower streets. " * 6
    same_head = [head + "Tail one: a recipe for bread with flour and yeast.", head + "Tail two: import numpy as np"]
    tokens = len(load_encoder().tokenizer(head)["input_ids"])
    assert 64 < tokens < 256  # the head fills the short reading, not the long one

    short = encode(same_head, _reading(tiny_profile, 64))
    np.testing.assert_allclose(short[0], short[1], atol=1e-6)  # the tails are cut off
    full = encode(same_head, _reading(tiny_profile, 256))
    assert float(full[0] @ full[1]) < 0.9999  # the tails are read
    assert np.allclose(np.linalg.norm(full, axis=1), 1.0, atol=1e-5)
