"""The multi-turn environment: generate a step, parse it, retrieve on a search, inject the reply, repeat.

Two entry points, both batched over many episodes:
- ``propose(episodes, k)``: k candidate next steps for each episode's current prefix (prefix branching). Nothing is
  executed; SLATE scores the candidates first and executes only the one it keeps.
- ``execute(candidates)``: append each candidate's step and the environment's reply (an ``<information>`` block for
  a search, a corrective note for an invalid step, nothing for an answer).
``rollout(records, k)`` composes them into k complete trajectories per question (Search-R1, StepSearch, eval).

Budget: at most B = ``max_steps`` steps (with ``budget_slack``, B = min(max_steps, hops + 1 + slack) for a question
of known hop count: ``step_budget``); then, if ``force_answer``, one more step is forced by injecting ``<answer>``
(mask 0) so the policy only writes the answer. A retriever error is retried, then answered with an empty
``<information>`` block and counted — one dead request never crashes the batch. ``metrics()`` reports the counts
(tokens, invalid and forced steps, searches, retries, failures) and times since the last call, its retriever's too.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

import torch

from slate.config import RolloutConfig
from slate.data.records import QARecord
from slate.errors import SlateError
from slate.retrieval.base import Hit, Retriever
from slate.rollout.actions import ANSWER_OPEN, INFO_CLOSE, STOP_STRINGS, parse_step, render_information
from slate.rollout.episode import Episode, Step
from slate.rollout.generate import CarriedCache, Continuation, Generator, SamplingParams, StopCondition, sample_branches
from slate.rollout.kv_cache import growing_cache_for
from slate.rollout.policy import Policy

logger = logging.getLogger(__name__)


def information_ids(policy: Policy, hits: list[Hit], max_tokens: int) -> list[int]:
    """The ``<information>`` block's ids, cut to ``max_tokens`` with the closing tag kept so the format holds."""
    ids = policy.encode(render_information(hits))
    if len(ids) > max_tokens:
        close = policy.encode(INFO_CLOSE + "\n")
        ids = ids[: max_tokens - len(close)] + close
    return ids


def step_budget(record: QARecord, max_steps: int, budget_slack: int | None) -> int:
    """B for one question: ``max_steps``, or with a slack its hop count + 1 (the answer) + slack, at most
    ``max_steps``. A 3-hop question with slack 1: min(max_steps, 5)."""
    if budget_slack is None or record.hops is None:
        return max_steps
    return min(max_steps, record.hops + 1 + budget_slack)


@dataclass(frozen=True)
class Candidate:
    """A proposed next step for ``episode`` (not yet appended)."""

    episode: Episode
    step: Step
    carry: CarriedCache | None = None  # the KV cache of the prefix and this step's tokens (in-process backend)


class RolloutEngine:
    def __init__(self, policy: Policy, retriever: Retriever, config: RolloutConfig, top_k: int = 3,
                 max_retries: int = 2, seed: int = 0, generator: Generator | None = None) -> None:
        self.policy = policy
        self.retriever = retriever
        self.config = config
        self.top_k = top_k
        self.max_retries = max_retries
        # on the model's device, so sampling on a GPU does not need a CPU round trip
        self.generator = torch.Generator(device=next(policy.model.parameters()).device).manual_seed(seed)
        # The sampling backend: in-process transformers by default; any ``Generator`` (a server client, a scripted
        # policy in tests) can stand in, since it only maps prefixes to token ids and log-probs.
        self.generate: Generator = generator or self._sample_in_process
        self.stop = StopCondition(STOP_STRINGS, policy.encode, policy.decode, policy.eos_token_id)
        self._cache_can_carry = growing_cache_for(policy.model) is not None  # full attention in every layer
        self.answer_open_ids = policy.encode(ANSWER_OPEN)
        self.invalid_note_ids = policy.encode(config.invalid_note)
        self.counters: Counter[str] = Counter()

    def metrics(self) -> dict[str, float]:
        """What the engine counted since the last call (its retriever's counts included), reset on read."""
        counts, self.counters = self.counters, Counter()
        retriever = dict(self.retriever.metrics())
        return {"rollout/step_generated_tokens": float(counts["rollout/generated_tokens"]),
                "rollout/invalid_actions": float(counts["rollout/invalid_actions"]),
                "rollout/forced_answers": float(counts["rollout/forced_answers"]),
                "rollout/context_overflow": float(counts["rollout/context_overflow"]),
                "rollout/carried_tokens": float(counts["rollout/carried_tokens"]),
                "retrieval/searches": float(counts["rollout/retrieval_queries"]),
                "retrieval/failed_searches": float(counts["rollout/retrieval_failures"]),
                # the engine's own retries of a failed batch, and the retriever's of its requests (HTTP)
                "retrieval/retries": float(counts["rollout/retrieval_retries"] + retriever.pop("retrieval/retries", 0)),
                # the same keys whichever the backend: an in-process index drops nothing
                "retrieval/dropped_hits": float(retriever.pop("retrieval/dropped_hits", 0)),
                **retriever,
                "time/generate_s": counts["time/generate_ms"] / 1000,
                "time/retrieve_s": counts["time/retrieval_ms"] / 1000}

    # -- episodes -------------------------------------------------------------------------------------------------
    def new_episodes(self, records: list[QARecord], copies: int = 1) -> list[Episode]:
        episodes = []
        for record in records:
            prompt = self.policy.prompt_ids(record.question, self.config.prompt_template,
                                            self.config.use_chat_template)
            budget = step_budget(record, self.config.max_steps, self.config.budget_slack)
            episodes += [Episode(record=record, prompt_ids=list(prompt), budget=budget) for _ in range(copies)]
        return episodes

    def budget(self, episode: Episode) -> int:
        return episode.budget if episode.budget is not None else self.config.max_steps

    def is_done(self, episode: Episode) -> bool:
        if episode.final_answer is not None or episode.is_truncated:
            return True
        return len(episode.steps) >= self.budget(episode) + (1 if self.config.force_answer else 0)

    def must_force(self, episode: Episode) -> bool:
        return self.config.force_answer and len(episode.steps) == self.budget(episode)

    @property
    def carries_kv_cache(self) -> bool:
        """Carrying KV caches across steps needs the in-process sampler (a server backend may be swapped in after
        construction) and a cache it can fill."""
        return self.config.carry_kv_cache and self._cache_can_carry and self.generate == self._sample_in_process

    # -- proposing steps ------------------------------------------------------------------------------------------
    def propose(self, episodes: list[Episode], num_candidates: int, greedy: bool = False,
                carried: list[CarriedCache | None] | None = None) -> list[list[Candidate]]:
        """``num_candidates`` next steps for each episode, sampled from its prefix with one shared prefill.

        ``carried`` (one per episode, from the candidates of the previous call) lets the in-process backend skip the
        prefill of what the model has already seen; each candidate then carries its own cache on."""
        carrying = carried is not None and self.carries_kv_cache
        params = SamplingParams(max_new_tokens=self.config.max_step_tokens, temperature=self.config.temperature,
                                top_p=self.config.top_p, greedy=greedy)
        prefixes, injected = [], []
        for episode in episodes:
            forced = self.answer_open_ids if self.must_force(episode) else []
            prefix = episode.token_ids() + forced
            if len(prefix) + self.config.max_step_tokens > self.policy.max_positions:
                raise SlateError(f"episode {episode.record.id}: prefix of {len(prefix)} tokens leaves no room for a "
                                 f"step in the {self.policy.max_positions}-token context.")
            prefixes.append(prefix)
            injected.append(forced)
        per_batch = max(1, self.config.batch_size // num_candidates)
        candidates: list[list[Candidate]] = []
        start = time.perf_counter()
        for begin in range(0, len(prefixes), per_batch):
            chunk = slice(begin, begin + per_batch)
            if carrying:
                branches = sample_branches(self.policy.model, prefixes[chunk], num_candidates, params, self.stop,
                                           self.policy.pad_token_id, self.generator, carried=carried[chunk],
                                           return_carry=True)
                self.counters["rollout/carried_tokens"] += sum(len(c.ids) for c in carried[chunk] if c is not None)
            else:
                branches = self.generate(prefixes[chunk], num_candidates, params, self.stop)
            for episode, forced, continuations in zip(episodes[chunk], injected[chunk], branches, strict=True):
                candidates.append([Candidate(episode, self._make_step(c.token_ids, c.logprobs, forced,
                                                                      c.policy_version), c.carry)
                                   for c in continuations])
        self.counters["time/generate_ms"] += int(1000 * (time.perf_counter() - start))
        return candidates

    def _sample_in_process(self, prefixes: list[list[int]], num_branches: int, params: SamplingParams,
                           stop: StopCondition) -> list[list[Continuation]]:
        return sample_branches(self.policy.model, prefixes, num_branches, params, stop, self.policy.pad_token_id,
                               self.generator)

    def _make_step(self, token_ids: list[int], logprobs: list[float], forced: list[int],
                   policy_version: int | None = None) -> Step:
        text = self.policy.decode(token_ids)
        self.counters["rollout/generated_tokens"] += len(token_ids)
        parsed = parse_step((ANSWER_OPEN if forced else "") + text)
        return Step(text=text, parsed=parsed, token_ids=list(token_ids), logprobs=list(logprobs),
                    injected_ids=list(forced), is_forced=bool(forced), policy_version=policy_version)

    # -- executing steps ------------------------------------------------------------------------------------------
    def retrieve(self, steps: list[Step]) -> None:
        """Run the searches of ``steps`` that have not run yet, as one batch: each gets its hits and <information>
        ids. A reward that must see a candidate's results before the sampler chooses (the information gain) calls
        it first; ``execute`` then finds them there and does not search again."""
        searches = [s for s in steps if s.action == "search" and not s.is_forced and not s.feedback_ids]
        hits = self._retrieve([s.parsed.content for s in searches]) if searches else []
        for step, step_hits in zip(searches, hits, strict=True):
            if step_hits is None:
                step.retrieval_failed = True
                step_hits = []
            step.hits = step_hits
            step.feedback_ids = information_ids(self.policy, step_hits, self.config.max_information_tokens)

    def execute(self, candidates: list[Candidate]) -> None:
        """Append each candidate's step to its episode with the environment's reply; searches run as one batch."""
        self.retrieve([c.step for c in candidates])
        for candidate in candidates:
            step, episode = candidate.step, candidate.episode
            if step.action == "invalid" or (step.is_forced and step.action != "answer"):
                self.counters["rollout/invalid_actions"] += 1
                if not step.is_forced:
                    step.feedback_ids = list(self.invalid_note_ids)
            episode.steps.append(step)
            if step.is_forced:
                self.counters["rollout/forced_answers"] += 1
            if len(episode.token_ids()) + self.config.max_step_tokens + len(self.answer_open_ids) \
                    > self.policy.max_positions and not self.is_done(episode):
                episode.is_truncated = True
                self.counters["rollout/context_overflow"] += 1

    def _retrieve(self, queries: list[str]) -> list[list[Hit] | None]:
        """Batched search with retries; None marks a query whose search failed for good."""
        start = time.perf_counter()
        self.counters["rollout/retrieval_queries"] += len(queries)
        for attempt in range(self.max_retries + 1):
            try:
                results: list[list[Hit] | None] = list(self.retriever.search(queries, self.top_k))
                break
            except Exception as error:  # any backend failure: retried, then counted, never fatal to the batch
                logger.warning("retrieval failed (attempt %d/%d): %s", attempt + 1, self.max_retries + 1, error)
                self.counters["rollout/retrieval_retries"] += 1
        else:
            self.counters["rollout/retrieval_failures"] += len(queries)
            results = [None] * len(queries)
        self.counters["time/retrieval_ms"] += int(1000 * (time.perf_counter() - start))
        return results

    # -- whole trajectories ---------------------------------------------------------------------------------------
    def rollout(self, records: list[QARecord], copies: int = 1, greedy: bool = False) -> list[Episode]:
        """``copies`` complete trajectories per record; the first step of each group shares one prefill."""
        episodes = self.new_episodes(records, copies)
        firsts = self.propose(episodes[::copies], copies, greedy=greedy)
        # the copies of a question share their prompt: candidate i of the group becomes copy i's first step
        steps = [Candidate(episodes[g * copies + i], candidate.step, candidate.carry)
                 for g, group in enumerate(firsts) for i, candidate in enumerate(group)]
        while True:
            self.execute(steps)
            carried = {id(c.episode): c.carry for c in steps}  # an episode's cache lives until its next step
            active = [e for e in episodes if not self.is_done(e)]
            if not active:
                return episodes
            steps = [group[0] for group in self.propose(active, 1, greedy=greedy,
                                                        carried=[carried[id(e)] for e in active])]
