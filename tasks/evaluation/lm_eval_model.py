"""flexo models as an lm-evaluation-harness model type (`--model flexo --model_args profile=demo,model=moe`).

Why: lm-eval's `LM` interface is per request (`loglikelihood`, `loglikelihood_rolling`, `generate_until`), so every
model the FLEXMIX report compares runs in lm-eval as one model, including the ones that are not one network:

  model=public              M_pub
  model=dense:<domain>      a dense domain model
  model=moe                 the serving MoE (registry's `serving` version, else the run directory's; `moe_dir=` for
                            another), with `experts=a+b` (opt in; public always stays) or `exclude=a+b` (opt out)
  model=btm                 BTM over M_pub and the dense models
  model=soup / soup_weighted    the uniform / per-example weighted parameter average of the members
  model=prompt              prompt routing: a sentence-embedding classifier picks one member per request

Lists in `model_args` are joined with `+` (lm-eval splits its argument string on commas). Requests are tokenized as
flexo's own evaluation does (`tasks.evaluation.inputs.tokenize_tasks`: context and continuation apart, the context
keeping its last half-window, the continuation cut to fit), and every log-likelihood comes back as a
`ScoredLoglikelihood` carrying the bytes it covers, so bits per byte divides by exactly what was scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import lm_eval.models  # noqa: F401  lm-eval's own types first: it fills its registry only while that is empty
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from transformers import PreTrainedModel

from model.public import load_moe, load_public_model
from model.scoring import Request, Scores
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile, load_profile
from tasks.core.device import resolve_run_precision, torch_device
from tasks.core.errors import ConfigError
from tasks.core.tokenizer import load_tokenizer
from tasks.evaluation.inputs import router_rows, tokenize_tasks
from tasks.evaluation.lm_eval_engines import (
    BTMEngine,
    Members,
    ModelEngine,
    NextToken,
    PromptRoutingEngine,
    Scoring,
    WeightedSoupEngine,
    uniform_soup_engine,
)
from tasks.evaluation.results import FLEX, PUBLIC, SOUP_UNIFORM, SOUP_WEIGHTED, dense_name
from tasks.evaluation.tasks import Item, Task, TaskSpec
from tasks.registry.locate import locate_moe
from tasks.registry.request import dropped_experts
from tasks.training.assemble import read_manifest

MODEL_KINDS = ("public", "dense:<domain>", "moe", "btm", "soup", "soup_weighted", "prompt")
DEFAULT_MAX_GEN_TOKS = 64
MODEL_ARGS = ("profile", "params", "model", "experts", "exclude", "moe_dir", "batch_size", "device")


class Engine(Protocol):
    def score(self, requests: Sequence[Request], contexts: Sequence[str]) -> Scores: ...

    def next_token(self, prompt: Sequence[int], text: str) -> Any: ...  # a context manager yielding a NextToken


class ScoredLoglikelihood(tuple):
    """lm-eval's (loglik, is_greedy) pair, carrying the UTF-8 bytes of the continuation that was scored."""

    n_bytes: int

    def __new__(cls, loglik: float, greedy: bool, n_bytes: int) -> ScoredLoglikelihood:
        pair = super().__new__(cls, (loglik, greedy))
        pair.n_bytes = n_bytes
        return pair

    def __getnewargs__(self) -> tuple[float, bool, int]:  # pickled by lm-eval's request cache
        return (self[0], self[1], self.n_bytes)


def _names(value: str | Sequence[str] | None) -> list[str]:
    if value is None or value == "":
        return []
    return [v for v in value.split("+") if v] if isinstance(value, str) else list(value)


@register_model("flexo")
class FlexoLM(LM):
    """One flexo model (see the module docstring for `model=`) behind lm-eval's request interface."""

    def __init__(
        self,
        profile: str | Profile | None = None,
        params: str | None = None,
        model: str = "moe",
        experts: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        moe_dir: str | None = None,
        batch_size: int | str | None = None,
        device: str | None = None,
        max_batch_size: int | None = None,  # lm-eval passes it to every model type; batches are `batch_size`
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:  # a misspelt `exclude` must not score the MoE with every expert
            raise ConfigError(f"unknown flexo model_args {sorted(unknown)}; flexo takes {', '.join(MODEL_ARGS)}")
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile, params)
        wanted = "cuda" if (device or "").startswith("cuda") else device  # `--device cuda:0`: the profile's form
        if wanted == "cpu" or (wanted == "cuda" and torch.cuda.is_available()):  # lm-eval's default is cuda
            runtime = self.profile.runtime.model_copy(update={"device": wanted})
            self.profile = self.profile.model_copy(update={"runtime": runtime})
        if self.profile.runtime.num_threads:
            torch.set_num_threads(self.profile.runtime.num_threads)
        self.torch_device = torch_device(self.profile)
        self.tokenizer = load_tokenizer(self.profile)
        self.max_length = self.profile.model.max_seq_len
        size = self.profile.eval.batch_size if batch_size in (None, "", "auto") else int(batch_size)
        precision = resolve_run_precision(self.profile, self.torch_device)
        self.scoring = Scoring(self.profile, self.torch_device, self.tokenizer.pad_token_id, size, precision)
        self.kind = model
        self.engine: Engine = self._engine(model, _names(experts), _names(exclude), moe_dir)

    # ---- building the model --------------------------------------------------------------------------------------

    def _load_dense(self, directory: Any) -> PreTrainedModel:
        dense = load_public_model(str(directory))
        module: torch.nn.Module = dense  # `.to` typed through the module (the model's wrapper hides its signature)
        module.to(self.torch_device).eval()
        return dense

    def _members(self) -> Members:
        paths = RunPaths(self.profile)
        names, models = [PUBLIC], [self._load_dense(self._public_dir())]
        for domain in self.profile.closed_domains:
            directory = paths.dense_dir(domain) / "model"
            if (directory / "config.json").exists():
                names.append(dense_name(domain))
                models.append(self._load_dense(directory))
        if len(models) == 1:
            raise ConfigError(f"no dense domain models under {paths.dense_dir('<domain>')}: run `flexo train-dense`")
        return Members(self.scoring, names, models)

    def _public_dir(self) -> Any:
        directory = RunPaths(self.profile).public_model_dir
        if not (directory / "config.json").exists():
            raise ConfigError(f"{directory}: M_pub is missing; run `flexo train-public` first")
        return directory

    def _engine(self, kind: str, opt_in: list[str], opt_out: list[str], moe_dir: str | None) -> Engine:
        if (opt_in or opt_out) and kind != "moe":
            raise ConfigError("experts= / exclude= apply to model=moe only")
        if kind == "public":
            return ModelEngine(self.scoring, self._load_dense(self._public_dir()), PUBLIC)
        if kind.startswith("dense:"):
            domain = kind.split(":", 1)[1]
            directory = RunPaths(self.profile).dense_dir(domain) / "model"
            if not (directory / "config.json").exists():
                raise ConfigError(f"{directory}: no dense model for '{domain}'; run `flexo train-dense`")
            return ModelEngine(self.scoring, self._load_dense(directory), dense_name(domain))
        if kind == "moe":
            directory = locate_moe(self.profile) if moe_dir is None else RunPaths(self.profile).root / moe_dir
            experts = list(read_manifest(directory)["experts"])
            moe: torch.nn.Module = load_moe(str(directory))
            moe.to(self.torch_device)
            return ModelEngine(self.scoring, moe, FLEX, dropped_experts(experts, opt_in, opt_out))
        if kind == "btm":
            return BTMEngine(self._members(), f"BTM (top-{self.profile.eval.btm_top_k})")
        if kind == "soup":
            return uniform_soup_engine(self.scoring, self._members(), SOUP_UNIFORM)
        if kind == "soup_weighted":
            return WeightedSoupEngine(self._members(), SOUP_WEIGHTED)
        if kind == "prompt":
            members = self._members()
            domains = ["public", *(n.removeprefix("dense ") for n in members.names[1:])]
            centroids = router_rows(self.profile, domains, "raw")
            if centroids is None:
                raise ConfigError("prompt routing needs router embeddings (runs/<profile>/router/*.safetensors)")
            return PromptRoutingEngine(members, centroids)
        raise ConfigError(f"model={kind!r} is not a flexo model; choose one of {', '.join(MODEL_KINDS)}")

    # ---- lm-eval's request interface -----------------------------------------------------------------------------

    def _score_pairs(self, pairs: Sequence[tuple[str, str]]) -> tuple[Scores, list[int]]:
        """(context, continuation) pairs tokenized and cut as flexo's evaluation cuts them; the scores and the bytes
        of each scored continuation."""
        spec = TaskSpec("lm-eval requests", "", "bpb", "", 0.0, False)
        items = [Item(str(i), context, (continuation,), 0) for i, (context, continuation) in enumerate(pairs)]
        requests, layout = tokenize_tasks([Task(spec, items, len(items))], self.tokenizer, self.max_length)
        contexts = [context for context, _ in pairs]
        return self.engine.score(requests, contexts), [int(n) for n in layout.n_bytes]

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        if not requests:
            return []
        order = self._flexo_order(requests)
        pairs = [(str(requests[i].args[0]), str(requests[i].args[1])) for i in order]
        scores, n_bytes = self._score_pairs(pairs)
        out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        for position, index in enumerate(order):
            loglik, greedy = float(scores.loglik[position]), bool(scores.greedy[position])
            out[index] = ScoredLoglikelihood(loglik, greedy, n_bytes[position])
        return out

    def _flexo_order(self, requests: list[Any]) -> list[int]:
        """Request indices in `flexo eval`'s order (FLEXMIX tasks by domain as the profile lists them, then item, then
        choice; anything else after, as given): length-sorted batching then groups the same requests as the
        evaluation's own passes, which bf16 needs for the same numbers (a different padded width rounds differently)."""
        from tasks.evaluation.lm_eval_tasks import lm_eval_name
        from tasks.evaluation.tasks import task_specs

        names = [lm_eval_name(spec.name) for d in self.profile.domains for spec, _ in task_specs(d, self.profile.eval)]
        rank = {name: position for position, name in enumerate(names)}

        def key(index: int) -> tuple[int, int, int, int]:
            request = requests[index]
            task = rank.get(str(getattr(request, "task_name", "")), len(rank))
            if task == len(rank):
                return (task, index, 0, 0)
            return (task, int(request.doc_id), int(request.idx), index)

        return sorted(range(len(requests)), key=key)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Each whole text in disjoint windows of the model's length, the first token predicted after EOS."""
        if not requests:
            return []
        windows: list[Request] = []
        owner: list[int] = []
        for index, request in enumerate(requests):
            tokens = self.tokenizer(str(request.args[0]), add_special_tokens=False)["input_ids"]
            rolling = get_rolling_token_windows(tokens, self.tokenizer.eos_token_id, self.max_length, 1)
            for context, target in map(make_disjoint_window, rolling):
                windows.append(Request(tuple(context), tuple(target)))
                owner.append(index)
        totals = [0.0] * len(requests)
        if windows:
            scores = self.engine.score(windows, [""] * len(windows))
            for index, ll in zip(owner, scores.loglik, strict=True):
                totals[index] += float(ll)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy continuation of each context until a stop string, EOS or `max_gen_toks` new tokens."""
        return [self._greedy(str(r.args[0]), dict(r.args[1]) if len(r.args) > 1 else {}) for r in requests]

    @torch.no_grad()
    def _greedy(self, context: str, kwargs: dict[str, Any]) -> str:
        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        budget = min(int(kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS)), self.max_length - 1)
        prompt = self.tokenizer(context, add_special_tokens=False)["input_ids"][-(self.max_length - budget) :]
        ids = list(prompt) or [self.tokenizer.eos_token_id]
        generated: list[int] = []
        text = ""
        with self.engine.next_token(ids, context) as step:
            step_fn: NextToken = step
            for _ in range(budget):
                token = int(step_fn(torch.tensor([ids + generated], device=self.torch_device)).argmax())
                if token == self.tokenizer.eos_token_id:
                    break
                generated.append(token)
                text = self.tokenizer.decode(generated)
                if any(stop in text for stop in until):
                    break
        cuts = [text.index(stop) for stop in until if stop in text]
        return text[: min(cuts)] if cuts else text

    @property
    def tokenizer_name(self) -> str:
        return str(RunPaths(self.profile).tokenizer_dir)
