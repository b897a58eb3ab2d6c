"""How each flexo model scores a list of log-likelihood requests and picks its next token: what the lm-eval model
type (`tasks.evaluation.lm_eval_model`) runs underneath.

Why per request, not per model: lm-eval's `LM` interface is a list of requests, so a baseline that is not one network
(the BTM ensemble, the per-example weighted soup, prompt routing) answers it like any model: it decides per request
which weights (or which mixture) score it. Every engine scores through `model.scoring` in the profile's precision, in
the same batches as the evaluation's own passes (`tasks.evaluation.families`), so the numbers are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel

from model.baselines import EnsembleScorer, nearest_centroid, routing_weights, uniform_soup, weighted_soup
from model.optout import masked_experts
from model.precision import Precision, autocast
from model.scoring import Request, Scorer, Scores, model_scorer, score_requests, token_logprobs
from tasks.core.config import Profile

NextToken = Callable[[torch.Tensor], torch.Tensor]  # (1, T) token ids -> (V,) log-probabilities of the next token


@dataclass
class Scoring:
    """What every engine shares: where and how requests are batched and in which precision."""

    profile: Profile
    device: torch.device
    pad_id: int
    batch_size: int
    precision: Precision

    def run(self, requests: Sequence[Request], scorer: Scorer) -> dict[str, Scores]:
        with autocast(self.precision, self.device):
            return score_requests(requests, scorer, self.batch_size, self.pad_id, self.device)


def _next_token(model: torch.nn.Module) -> NextToken:
    return lambda ids: token_logprobs(model(input_ids=ids, use_cache=False).logits)[0, -1]


class ModelEngine:
    """One network (M_pub, a dense model, a soup, a MoE); `drop` masks MoE experts (router logit -inf), as serving
    does for `experts=`/`exclude=`."""

    def __init__(self, scoring: Scoring, model: torch.nn.Module, name: str, drop: Sequence[int] = ()) -> None:
        self.scoring, self.model, self.name, self.drop = scoring, model, name, list(drop)

    def _masked(self) -> AbstractContextManager:
        return masked_experts(self.model, self.drop) if self.drop else nullcontext(self.model)  # type: ignore[arg-type]

    def score(self, requests: Sequence[Request], contexts: Sequence[str]) -> Scores:
        with self._masked():
            return self.scoring.run(requests, model_scorer(self.model, self.name))[self.name]

    @contextmanager
    def next_token(self, prompt: Sequence[int], text: str) -> Iterator[NextToken]:
        with self._masked(), autocast(self.scoring.precision, self.scoring.device):
            yield _next_token(self.model)


class Members:
    """The dense members the combining baselines mix: M_pub first, then each dense model (the evaluation's order)."""

    def __init__(self, scoring: Scoring, names: list[str], models: list[PreTrainedModel]) -> None:
        self.scoring, self.names, self.models = scoring, names, models

    def ensemble(self, btm_name: str) -> EnsembleScorer:
        cfg = self.scoring.profile.eval
        return EnsembleScorer(
            list(zip(self.names, self.models, strict=True)), cfg.btm_temperature, cfg.btm_top_k, btm_name
        )

    def scores(self, requests: Sequence[Request]) -> list[Scores]:
        """Every member's scores from one ensemble pass (the evaluation's `M_pub + dense + BTM` pass)."""
        results = self.scoring.run(requests, self.ensemble("btm"))
        return [results[name] for name in self.names]

    def context_nll(self, prompt: Sequence[int]) -> torch.Tensor:
        """(members, 1) NLL of the prompt's tokens after its first, the per-example routing signal."""
        ids = torch.tensor([list(prompt)], device=self.scoring.device)
        out = []
        with autocast(self.scoring.precision, self.scoring.device):
            for model in self.models:
                logprobs = token_logprobs(model(input_ids=ids, use_cache=False).logits)[0, :-1]
                out.append(-logprobs.gather(-1, ids[0, 1:, None]).double().sum())
        return torch.stack(out)[:, None].cpu()


class BTMEngine:
    """BTM: the members' next-token logits mixed with weights softmax(-context NLL / T), top-k renormalised."""

    def __init__(self, members: Members, name: str) -> None:
        self.members, self.name = members, name

    def score(self, requests: Sequence[Request], contexts: Sequence[str]) -> Scores:
        return self.members.scoring.run(requests, self.members.ensemble(self.name))[self.name]

    @contextmanager
    def next_token(self, prompt: Sequence[int], text: str) -> Iterator[NextToken]:
        cfg = self.members.scoring.profile.eval
        weights = routing_weights(self.members.context_nll(prompt), cfg.btm_temperature, cfg.btm_top_k)[:, 0]

        def step(ids: torch.Tensor) -> torch.Tensor:
            logits = [model(input_ids=ids, use_cache=False).logits[0, -1].float() for model in self.members.models]
            mixed = torch.stack([float(w) * z for w, z in zip(weights, logits, strict=True)]).sum(dim=0)
            return token_logprobs(mixed)

        with autocast(self.members.scoring.precision, self.members.scoring.device):
            yield step


class WeightedSoupEngine:
    """Per request, a soup of the members weighted by softmax(-context NLL / T), rounded to `soup_weight_decimals` so
    requests with equal weights share one soup."""

    def __init__(self, members: Members, name: str) -> None:
        self.members, self.name = members, name

    def _rounded(self, context_nll: torch.Tensor) -> np.ndarray:
        cfg = self.members.scoring.profile.eval
        weights = routing_weights(context_nll, cfg.btm_temperature).numpy().T  # (requests, members)
        rounded = np.round(weights, cfg.soup_weight_decimals)
        return rounded / rounded.sum(axis=1, keepdims=True)

    def score(self, requests: Sequence[Request], contexts: Sequence[str]) -> Scores:
        member_scores = self.members.scores(requests)
        rounded = self._rounded(torch.from_numpy(np.stack([s.context_nll for s in member_scores])))
        groups: dict[tuple[float, ...], list[int]] = {}
        for index, row in enumerate(rounded):
            groups.setdefault(tuple(row.tolist()), []).append(index)
        out = Scores(np.zeros(len(requests)), np.zeros(len(requests), dtype=bool), np.zeros(len(requests)))
        for key, indices in groups.items():
            soup = weighted_soup(self.members.models, key)
            subset = [requests[i] for i in indices]
            scores = self.members.scoring.run(subset, model_scorer(soup, self.name))[self.name]
            out.loglik[indices], out.greedy[indices] = scores.loglik, scores.greedy
            out.context_nll[indices] = scores.context_nll
        return out

    @contextmanager
    def next_token(self, prompt: Sequence[int], text: str) -> Iterator[NextToken]:
        soup = weighted_soup(self.members.models, tuple(self._rounded(self.members.context_nll(prompt))[0].tolist()))
        with autocast(self.members.scoring.precision, self.members.scoring.device):
            yield _next_token(soup)


class PromptRoutingEngine:
    """A nearest-centroid classifier over all-MiniLM-L6-v2 embeddings of the request's context picks one member,
    whose scores the request takes."""

    def __init__(self, members: Members, centroids: torch.Tensor) -> None:
        self.members, self.centroids = members, centroids

    def picks(self, contexts: Sequence[str]) -> list[int]:
        """The member index for each context (each distinct context embedded once)."""
        from tasks.training.route import encode

        profile = self.members.scoring.profile
        distinct = list(dict.fromkeys(contexts))
        embeddings = encode(distinct, profile.router.embed_batch_size, profile.runtime.precision)
        chosen = nearest_centroid(torch.from_numpy(np.asarray(embeddings)), self.centroids).tolist()
        by_context = dict(zip(distinct, chosen, strict=True))
        return [int(by_context[c]) for c in contexts]

    def score(self, requests: Sequence[Request], contexts: Sequence[str]) -> Scores:
        member_scores = self.members.scores(requests)
        picks = np.asarray(self.picks(contexts))
        rows = np.arange(len(requests))
        stacked = [
            np.stack([getattr(s, field) for s in member_scores]) for field in ("loglik", "greedy", "context_nll")
        ]
        return Scores(*(values[picks, rows] for values in stacked))

    @contextmanager
    def next_token(self, prompt: Sequence[int], text: str) -> Iterator[NextToken]:
        model = self.members.models[self.picks([text])[0]]
        with autocast(self.members.scoring.precision, self.members.scoring.device):
            yield _next_token(model)


def uniform_soup_engine(scoring: Scoring, members: Members, name: str) -> ModelEngine:
    return ModelEngine(scoring, uniform_soup(members.models), name)
