"""The one tokenizer loader: every stage that turns text into ids (training, routing, evaluation, the attack) loads
the project tokenizer here, with the same checks and the same errors.

Why one: three stages had three loaders with three different checks (one tested the vocabulary against the model,
one only the pad token, one nothing), so the same broken tokenizer failed in one stage and slipped through another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.errors import ConfigError, DataError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def load_tokenizer(profile: Profile, directory: Path | None = None) -> Any:
    """The tokenizer in `directory` (default: the profile's `RunPaths.tokenizer_dir`: trained on public data only, or
    an existing M_pub's own (`anchor`)), offline.

    DataError when it is missing or defines no eos/pad token (the data stage must train it with both); ConfigError
    when it has more tokens than `model.vocab_size` (the model could not embed them)."""
    from transformers import AutoTokenizer

    directory = Path(directory) if directory is not None else RunPaths(profile).tokenizer_dir
    if not any((directory / name).exists() for name in TOKENIZER_FILES):
        what = "take the anchor's tokenizer" if profile.anchor.pretrained else "train it on the public split"
        raise DataError(f"{directory}: the tokenizer is missing; run the data stage (`flexo data`) to {what}")
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise DataError(
            f"{directory}: the tokenizer defines no eos_token/pad_token; retrain it with both (`flexo data`)"
        )
    if len(tokenizer) > profile.model.vocab_size:
        raise ConfigError(
            f"model.vocab_size ({profile.model.vocab_size}) is smaller than the tokenizer's {len(tokenizer)} tokens "
            f"({directory}); raise model.vocab_size or retrain the tokenizer"
        )
    return tokenizer
