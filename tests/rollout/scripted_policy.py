"""A scripted policy for engine and sampler tests: a generator that writes scripted step text instead of sampling,
so masks, step boundaries and rewards are known exactly, and a retriever with fixed answers (or failures)."""

from __future__ import annotations

from collections.abc import Callable

from slate.retrieval.base import Hit
from slate.rollout.generate import Continuation, SamplingParams, StopCondition
from slate.rollout.policy import Policy


class ScriptedGenerator:
    """``script(prefix_text, branch) -> step text``; each token gets log-prob -0.5."""

    def __init__(self, policy: Policy, script: Callable[[str, int], str]) -> None:
        self.policy = policy
        self.script = script
        self.calls: list[tuple[int, int]] = []  # (number of prefixes, branches) per call

    def __call__(self, prefixes: list[list[int]], num_branches: int, params: SamplingParams,
                 stop: StopCondition) -> list[list[Continuation]]:
        self.calls.append((len(prefixes), num_branches))
        out = []
        for prefix in prefixes:
            text = self.policy.decode(prefix)
            group = []
            for branch in range(num_branches):
                ids = self.policy.encode(self.script(text, branch))[: params.max_new_tokens]
                group.append(Continuation(token_ids=ids, logprobs=[-0.5] * len(ids), finish_reason="stop"))
            out.append(group)
        return out


class FixedRetriever:
    def __init__(self, fail_times: int = 0) -> None:
        self.fail_times = fail_times
        self.queries: list[str] = []

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise ConnectionError("retrieval server down")
        self.queries += queries
        return [[Hit("d1", "Dalvin", "Dalvin is a city in Orvania.", 3.0)][:k] for _ in queries]

    def metrics(self) -> dict[str, float]:
        return {}
