"""What one generation request may ask, checked before any model is loaded (so a bad argument is a clear ConfigError
naming it, never a traceback, and costs no model load).

Kept free of torch and MLflow: `flexo generate` checks its arguments with it before importing either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tasks.core.config import Profile
from tasks.core.errors import ConfigError

PUBLIC = "public"  # the shared expert inside every MoE: never revocable, never excluded


def check_request(prompt: Any, max_new_tokens: Any) -> None:
    """ConfigError for an empty prompt or an answer length that is not a whole number of at least 1."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError("the prompt is empty: give some text to continue")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be a whole number of at least 1, got {max_new_tokens!r}")


def check_names(profile: Profile, experts: Sequence[str] | None, exclude: Sequence[str] | None) -> None:
    """Every expert named is `public` or a configured domain; opt-in and opt-out are not mixed; public is never
    excluded."""
    if experts and exclude:
        raise ConfigError("give either --experts (opt-in) or --exclude (opt-out), not both")
    unknown = sorted({*(experts or []), *(exclude or [])} - {PUBLIC, *profile.closed_domains})
    if unknown:
        raise ConfigError(f"expert(s) {unknown} are not configured domains; choose from {profile.closed_domains}")
    if exclude and PUBLIC in exclude:
        raise ConfigError("the public expert cannot be excluded: it holds the shared model everyone builds on")


def dropped_experts(names: Sequence[str], experts: Sequence[str] | None, exclude: Sequence[str] | None) -> list[int]:
    """Indices of a MoE's experts (`names`, in its order) to mask: everything not opted in (`experts`; public always
    stays) plus everything `exclude`d. Serving and the lm-eval model type share it, so `experts=`/`exclude=` mean the
    same everywhere."""
    if experts and exclude:
        raise ConfigError("give either experts (opt-in) or exclude (opt-out), not both")
    unknown = sorted({*(experts or []), *(exclude or [])} - set(names))
    if unknown:
        raise ConfigError(f"expert(s) {unknown} are not in this model; it holds {list(names)}")
    if exclude and PUBLIC in exclude:
        raise ConfigError("the public expert cannot be excluded: it holds the shared model everyone builds on")
    if experts:
        keep = {PUBLIC, *experts}
        return [i for i, name in enumerate(names) if name not in keep]
    return [list(names).index(name) for name in (exclude or [])]
