"""Information-gain step rewards: judge-free process rewards from the gold answer's likelihood (IGPO, IG-Search).

The value of a context c is how well a scoring model predicts the gold answer after it, as an answer forced at that
point would be written (``c + "<answer>" + " gold" + " </answer>"``, the episode's own format):

    V(c) = max over golden answers g of  mean_{tokens y of " g"} log p(y | c, "<answer>", y_<)     (measure=logprob)
    V(c) = exp of that                                                                           (measure=prob)

and a search step t, whose <information> block is I_t, is rewarded by how much its retrieval raised V:

    r_t = clip(scale · (V(before t, step t, I_t) − V(baseline)), −clip, +clip)
    baseline=before:      V(the trajectory before step t)                          IGPO (arXiv 2510.14967)
    baseline=random_docs: V(before t, step t, as many random passages as I_t held)  IG-Search (arXiv 2604.15148)

An answer step gets ``outcome_coef · EM`` (IGPO's outcome term; IGPO's code uses token F1 with a coefficient of 1,
the SLATE harness's outcome is EM everywhere), an invalid step −1, as ``ExactMatchStepReward`` does. An answer
forced at the budget is scored like any answer: it is the trajectory's outcome. Departures from the sources, both
deliberate: IGPO scores with the policy being trained and IG-Search with the policy too; the default here is the
frozen reference (``model: reference``; with LoRA the base model), so a step's reward does not drift as the policy
learns to predict answers (``model: policy`` is IGPO's choice). IGPO's default measure is the probability
difference (``measure: prob``); the issue that asked for this reward, IG-Search and IGPO's ``log_prob_diff`` use
log-likelihoods (``measure: logprob``, the default).

Cost: one scoring forward per value, batched. Siblings share their prefix (SLATE's k candidates of a step; the
boundaries of one trajectory nest), so each prefix runs once and every row continues from its KV cache
(``logprobs.grouped_token_logprobs``, the update's own shared-prefix pass). Counted as
``reward/infogain_forward_tokens`` (prefix and continuation tokens through the model); values that do not fit the
model's context are skipped and counted (``reward/infogain_skipped``): the step then has no reward (None), never 0.

When it cannot work: the gold answer must be a short span the scoring model can copy from a passage. On the
synthetic world only the search that retrieves the *last* hop's passage shows the answer, so the earlier hops of a
multi-hop chain get gains near 0, right or wrong (docs/infogain.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from slate.data.records import Passage, QARecord
from slate.errors import ConfigError, SlateError
from slate.eval.metrics import exact_match
from slate.logprobs import grouped_token_logprobs
from slate.retrieval.base import Hit
from slate.rollout.actions import ANSWER_CLOSE, ANSWER_OPEN
from slate.rollout.engine import information_ids
from slate.rollout.episode import Episode, Step, StepToScore
from slate.rollout.policy import Policy

logger = logging.getLogger(__name__)
INVALID_STEP_REWARD = -1.0


def information_gain(after: float, baseline: float, scale: float = 1.0, clip: float | None = None) -> float:
    """clip(scale · (after − baseline), −clip, +clip); ``clip`` None leaves it unclipped."""
    gain = scale * (after - baseline)
    return gain if clip is None else max(-clip, min(clip, gain))


@dataclass
class ValueRequest:
    """V of one context: the first ``prefix_len`` tokens of ``prefix`` (shared, by identity, among the requests
    that extend it), then ``extra`` (this request's own tokens: a candidate step and its information)."""

    prefix: list[int]
    prefix_len: int
    extra: list[int]
    golds: tuple[str, ...]


class GoldAnswerScorer:
    """V(context) for many contexts in batched no-grad forwards, one run per shared prefix."""

    def __init__(self, policy: Policy, model_context: Callable[[], contextlib.AbstractContextManager],
                 measure: str = "logprob", batch_tokens: int = 8192) -> None:
        self.policy = policy
        self.model_context = model_context  # yields the scoring model in eval mode (adapter off for the reference)
        self.measure = measure
        self.batch_tokens = batch_tokens
        self.open_ids = policy.encode(ANSWER_OPEN)
        self.close_ids = policy.encode(f" {ANSWER_CLOSE}")
        self._gold_ids: dict[str, list[int]] = {}
        self.counters: Counter[str] = Counter()

    def gold_ids(self, gold: str) -> list[int]:
        if gold not in self._gold_ids:
            self._gold_ids[gold] = self.policy.encode(f" {gold}")
        return self._gold_ids[gold]

    def values(self, requests: list[ValueRequest]) -> list[float | None]:
        """One V per request (None: no golden answer fits the context window; counted as skipped)."""
        rows: list[tuple[int, list[int], int, int]] = []  # (request, continuation, gold start, gold length)
        for index, request in enumerate(requests):
            room = self.policy.max_positions - request.prefix_len - len(request.extra)
            fitting = 0
            for gold in request.golds:
                ids = self.gold_ids(gold)
                continuation = request.extra + self.open_ids + ids + self.close_ids
                if ids and len(continuation) - len(request.extra) <= room:
                    rows.append((index, continuation, len(request.extra) + len(self.open_ids), len(ids)))
                    fitting += 1
            if not fitting:
                self.counters["reward/infogain_skipped"] += 1
        best: list[float | None] = [None] * len(requests)
        for index, value in self._score(requests, rows):
            best[index] = value if best[index] is None else max(best[index], value)
        return best

    def _score(self, requests: list[ValueRequest], rows: list[tuple[int, list[int], int, int]]
               ) -> Iterator[tuple[int, float]]:
        by_prefix: dict[int, list[tuple[int, list[int], int, int]]] = {}
        for row in rows:
            by_prefix.setdefault(id(requests[row[0]].prefix), []).append(row)
        batches: list[list[list[tuple[int, list[int], int, int]]]] = [[]]
        size = 0
        for group in by_prefix.values():
            prefix_len = max(requests[r[0]].prefix_len for r in group)
            cost = prefix_len + sum(len(r[1]) for r in group)
            if batches[-1] and size + cost > self.batch_tokens:
                batches.append([])
                size = 0
            batches[-1].append(group)
            size += cost
        with self.model_context() as model, torch.no_grad():
            device = next(model.parameters()).device
            for batch in batches:
                if batch:
                    yield from self._forward(model, device, requests, batch)

    def _forward(self, model: torch.nn.Module, device: torch.device, requests: list[ValueRequest],
                 groups: list[list[tuple[int, list[int], int, int]]]) -> Iterator[tuple[int, float]]:
        """One grouped pass: each prefix once (G, P), every continuation (N, C) from its own prefix length."""
        prefixes = [requests[group[0][0]].prefix[: max(requests[r[0]].prefix_len for r in group)] for group in groups]
        flat = [row for group in groups for row in group]
        pad = self.policy.pad_token_id
        prefix_ids = torch.full((len(groups), max(len(p) for p in prefixes)), pad, dtype=torch.long)
        for g, ids in enumerate(prefixes):
            prefix_ids[g, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        width = max(len(row[1]) for row in flat)
        input_ids = torch.full((len(flat), width), pad, dtype=torch.long)
        target_mask = torch.zeros((len(flat), width), dtype=torch.bool)
        for n, (_, continuation, start, length) in enumerate(flat):
            input_ids[n, : len(continuation)] = torch.tensor(continuation, dtype=torch.long)
            target_mask[n, start:start + length] = True
        group_of = torch.tensor([g for g, group in enumerate(groups) for _ in group], dtype=torch.long)
        row_prefix_lens = torch.tensor([requests[row[0]].prefix_len for row in flat], dtype=torch.long)
        prefix_lens = torch.tensor([len(p) for p in prefixes], dtype=torch.long)
        out = grouped_token_logprobs(model, prefix_ids.to(device), input_ids.to(device), target_mask.to(device),
                                     prefix_lens=prefix_lens.to(device), group_of=group_of.to(device),
                                     row_prefix_lens=row_prefix_lens.to(device))
        self.counters["reward/infogain_forward_tokens"] += int(prefix_lens.sum()) + sum(len(r[1]) for r in flat)
        sums = (out.logprobs * target_mask.to(device)).sum(1).cpu()
        for n, (index, _, _, length) in enumerate(flat):
            mean = float(sums[n]) / length
            yield index, mean if self.measure == "logprob" else math.exp(mean)


class InfoGainReward:
    """Search steps rewarded by the information gain of their retrieval, answers by EM (module docstring)."""

    name = "infogain"

    def __init__(self, scorer: GoldAnswerScorer, max_information_tokens: int,
                 baseline: str = "before", scale: float = 1.0, clip: float | None = None,
                 outcome_coef: float = 1.0, corpus: list[Passage] | None = None, top_k: int = 3,
                 seed: int = 0) -> None:
        if baseline == "random_docs" and not corpus:
            raise ConfigError("reward.infogain.baseline=random_docs draws random passages from the retrieval corpus, "
                              "and none was given; pass the corpus (retrieval.corpus or the world's) or use "
                              "baseline=before.")
        self.scorer = scorer
        self.max_information_tokens = max_information_tokens
        self.baseline = baseline
        self.scale = scale
        self.clip = clip
        self.outcome_coef = outcome_coef
        self.corpus = corpus or []
        self.top_k = top_k
        self.seed = seed
        self.counters: Counter[str] = Counter()

    def check_records(self, records: list[QARecord]) -> None:
        """Every question needs a non-empty golden answer: without one there is nothing to gain information on."""
        for record in records:
            if not any(answer.strip() for answer in record.golden_answers):
                raise ConfigError(f"question {record.id!r} of {record.dataset or 'the training data'} has no golden "
                                  "answer (or only empty ones); the information-gain reward scores the gold answer's "
                                  "likelihood. Fix or drop the row.")

    def metrics(self) -> dict[str, float]:
        """Scoring-forward tokens, steps scored and steps skipped since the last call (read and reset)."""
        counts = self.scorer.counters + self.counters
        self.scorer.counters.clear()
        self.counters.clear()
        return {key: float(counts[key]) for key in ("reward/infogain_forward_tokens", "reward/infogain_scored",
                                                     "reward/infogain_skipped")}

    # -- the two samplers' entry points -----------------------------------------------------------------------------
    def score_steps(self, targets: list[StepToScore]) -> list[float | None]:
        """SLATE's siblings, each search candidate already retrieved by the sampler (``retrieves_candidates`` in
        methods.py; the chosen one is not searched again), scored against its shared prefix; the "before" value is
        computed once per prefix."""
        unretrieved = [t for t in targets if self._is_search(t.step) and not t.step.feedback_ids]
        if unretrieved:
            raise SlateError(f"InfoGainReward: {len(unretrieved)} search candidate(s) reached the reward without their "
                             "retrieved passages; its sampler must retrieve them first (TruncatedStepSampler("
                             "retrieve_candidates=True), as methods.py builds it for slate_ig).")
        requests: list[ValueRequest] = []
        owners: list[tuple[int, str]] = []  # (target, "after" | "baseline")
        before: dict[int, int] = {}  # episode id -> index of its shared "before" request
        prefixes: dict[int, list[int]] = {}
        for index, target in enumerate(targets):
            step, episode = target.step, target.episode
            if not self._is_search(step):
                continue
            prefix = prefixes.setdefault(id(episode), episode.token_ids())
            golds = episode.record.golden_answers
            own = step.injected_ids + step.token_ids
            requests.append(ValueRequest(prefix, len(prefix), own + step.feedback_ids, golds))
            owners.append((index, "after"))
            if self.baseline == "before":
                if id(episode) not in before:
                    before[id(episode)] = len(requests)
                    requests.append(ValueRequest(prefix, len(prefix), [], golds))
                    owners.append((-1, "before"))
            else:
                requests.append(ValueRequest(prefix, len(prefix), own + self._random_information(target), golds))
                owners.append((index, "baseline"))
        values = self.scorer.values(requests)
        after: dict[int, float | None] = {}
        baseline: dict[int, float | None] = {}
        for (index, kind), value in zip(owners, values, strict=True):
            if kind == "after":
                after[index] = value
            elif kind == "baseline":
                baseline[index] = value
        rewards: list[float | None] = []
        for index, target in enumerate(targets):
            if self._is_search(target.step):
                base = baseline.get(index) if self.baseline == "random_docs" else \
                    values[before[id(target.episode)]]
                reward = self._gain(after[index], base)
            else:
                reward = self._other(target.step, target.episode.record)
            target.step.reward = reward
            rewards.append(reward)
        return rewards

    def score_episodes(self, episodes: list[Episode]) -> None:
        """k full trajectories (IGPO): the values at the boundaries of each trajectory, one pass per trajectory
        (every boundary is a prefix of the whole)."""
        requests: list[ValueRequest] = []
        wanted: list[tuple[Step, int, int]] = []  # (search step, after request, baseline request)
        for episode in episodes:
            tokens = episode.token_ids()
            golds = episode.record.golden_answers
            boundary = len(episode.prompt_ids)  # end of the trajectory before step j
            at: dict[int, int] = {}  # boundary -> request index (boundaries shared by consecutive searches)

            def value_at(end: int, tokens=tokens, golds=golds, at=at) -> int:
                if end not in at:
                    at[end] = len(requests)
                    requests.append(ValueRequest(tokens, end, [], golds))
                return at[end]

            for step_index, step in enumerate(episode.steps):
                own_end = boundary + len(step.injected_ids) + len(step.token_ids)
                end = own_end + len(step.feedback_ids)
                if self._is_search(step):
                    if self.baseline == "before":
                        base = value_at(boundary)
                    else:
                        base = len(requests)
                        target = StepToScore(episode, step, step_index + 1)
                        requests.append(ValueRequest(tokens, own_end, self._random_information(target), golds))
                    wanted.append((step, value_at(end), base))
                else:
                    step.reward = self._other(step, episode.record)
                boundary = end
        values = self.scorer.values(requests)
        for step, after, base in wanted:
            step.reward = self._gain(values[after], values[base])

    # -- pieces ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _is_search(step: Step) -> bool:
        return step.action == "search" and not step.is_forced

    def _gain(self, after: float | None, baseline: float | None) -> float | None:
        if after is None or baseline is None:
            return None  # did not fit the context: skipped (counted by the scorer), no reward rather than a 0
        self.counters["reward/infogain_scored"] += 1
        return information_gain(after, baseline, self.scale, self.clip)

    def _other(self, step: Step, record: QARecord) -> float:
        if step.action == "answer":
            return self.outcome_coef * exact_match(step.parsed.content, record.golden_answers)
        return INVALID_STEP_REWARD  # invalid, or a forced step that did not answer

    def _random_information(self, target: StepToScore) -> list[int]:
        """IG-Search's baseline: as many random corpus passages as the step retrieved (top_k if it retrieved none),
        rendered as its <information> block. Drawn from a seed and the step's own content, never the global RNG:
        the same step gets the same passages, on a resumed run too."""
        step = target.step
        count = len(step.hits) or self.top_k
        key = "\x1f".join([str(self.seed), target.episode.record.id, str(target.step_index), step.parsed.content])
        rng = random.Random(int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big"))
        passages = rng.sample(self.corpus, k=min(count, len(self.corpus)))
        hits = [Hit(p.id, p.title, p.text, 0.0) for p in passages]
        return information_ids(self.scorer.policy, hits, self.max_information_tokens)


def scoring_model(model: torch.nn.Module, base_only: bool) -> Callable[[], contextlib.AbstractContextManager]:
    """A context factory for ``GoldAnswerScorer``: ``model`` in eval mode, its LoRA adapter off when ``base_only``
    (the frozen reference of a LoRA run), its training mode restored afterwards."""
    @contextlib.contextmanager
    def context() -> Iterator[torch.nn.Module]:
        was_training = model.training
        model.eval()
        try:
            with model.disable_adapter() if base_only else contextlib.nullcontext():
                yield model
        finally:
            model.train(was_training)

    return context
