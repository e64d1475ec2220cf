"""The oracle judge: what a perfect judge would say on the synthetic world, computed from the gold chain.

This is not an LLM. It reads ``item.chain`` (one ``ChainHop`` per hop; hop i's fact is written in passage
``doc_id``, and hop i's entity is hop i-1's answer) and ``item.retrieved_ids`` (passages retrieved before the step),
and applies fixed rules. It gives the reward signal an ideal judge would give, for debugging training without a
judge server and for auditing a real judge (``audit.py``).

State of the search: ``solved`` = the longest prefix of the chain whose doc_ids were all retrieved; the next hop is
``chain[solved]``, or "answer now" when every hop is solved. Known entities: the first hop's entity (it is in the
question) and the answers of solved hops. "Names X" means every normalised token of X (``normalize_answer``)
occurs in the text; "partly names X" means some but not all of them do.

- think: -1 if it names the answer of an unsolved hop (a guess ahead of the evidence); else +1 if it names the next
  hop's entity (when all hops are solved: the final answer); else -1 if it names only entities of solved hops
  (re-targets settled work); else 0 (vague).
- query: when all hops are solved, any query is -1 (time to answer). Else -1 if it repeats an earlier query of the
  trajectory (the ``<search>`` blocks in ``item.context``, compared normalised); +1 if it names the next hop's
  entity; -1 if it names an unsolved hop's answer (a guess) or only solved hops' entities; 0 if it partly names the
  next hop's entity (e.g. a look-alike sharing a root word); -1 otherwise (a lone generic word, no chain entity).
- answer: +1 on exact match with a golden answer, 0 if token F1 > 0 (partly right), -1 otherwise.

``noise``: with probability ``noise`` a score is replaced by one drawn uniformly from {-1, 0, 1} (so about
``noise * 2/3`` of the scores change). The draw is seeded by ``seed`` and a hash of the item's content — never
the global RNG — so the same item always gets the same score.

Items whose kind needs the chain (think, query) but carry none get a failed verdict.
"""

from __future__ import annotations

import hashlib
import random
import re

from slate.data.records import ChainHop
from slate.errors import ConfigError
from slate.eval.metrics import exact_match, normalize_answer, token_f1
from slate.judge.types import SCORES, JudgeItem, JudgeStats, JudgeVerdict
from slate.rollout.actions import SEARCH_CLOSE, SEARCH_OPEN

_EARLIER_QUERY = re.compile(re.escape(SEARCH_OPEN) + r"(.*?)" + re.escape(SEARCH_CLOSE), re.DOTALL)


def _tokens(text: str) -> set[str]:
    return set(normalize_answer(text).split())


def names(text_tokens: set[str], phrase: str) -> bool:
    """Every normalised token of ``phrase`` is in ``text_tokens`` (an empty phrase is never named)."""
    phrase_tokens = _tokens(phrase)
    return bool(phrase_tokens) and phrase_tokens <= text_tokens


def partly_names(text_tokens: set[str], phrase: str) -> bool:
    """Some, but not all, normalised tokens of ``phrase`` are in ``text_tokens``."""
    phrase_tokens = _tokens(phrase)
    return bool(phrase_tokens & text_tokens) and not phrase_tokens <= text_tokens


def solved_hops(chain: tuple[ChainHop, ...], retrieved_ids: tuple[str, ...]) -> int:
    """Length of the longest prefix of ``chain`` whose passages were all retrieved."""
    retrieved = set(retrieved_ids)
    solved = 0
    for hop in chain:
        if hop.doc_id not in retrieved:
            break
        solved += 1
    return solved


def oracle_think_score(text: str, chain: tuple[ChainHop, ...], retrieved_ids: tuple[str, ...]) -> tuple[int, str]:
    solved = solved_hops(chain, retrieved_ids)
    tokens = _tokens(text)
    guessed = [hop.answer for hop in chain[solved:] if names(tokens, hop.answer)]
    if guessed:
        return -1, f"names {guessed[0]!r}, the answer of a hop not yet retrieved (a guess)"
    if solved == len(chain):
        if names(tokens, chain[-1].answer):
            return 1, f"all hops solved and it names the final answer {chain[-1].answer!r}"
        if any(names(tokens, hop.entity) for hop in chain):
            return -1, "all hops solved but it re-targets a solved hop instead of the final answer"
        return 0, "all hops solved; it names neither the final answer nor a chain entity (vague)"
    target = chain[solved].entity
    if names(tokens, target):
        return 1, f"targets the next hop's entity {target!r}"
    if any(names(tokens, hop.entity) for hop in chain[:solved]):
        return -1, "re-targets only solved hops"
    return 0, f"does not name the next hop's entity {target!r} (vague)"


def earlier_queries(context: str) -> list[str]:
    """Normalised ``<search>`` contents found in the trajectory text."""
    return [normalize_answer(q) for q in _EARLIER_QUERY.findall(context)]


def oracle_query_score(text: str, chain: tuple[ChainHop, ...], retrieved_ids: tuple[str, ...],
                       context: str = "") -> tuple[int, str]:
    solved = solved_hops(chain, retrieved_ids)
    if solved == len(chain):
        return -1, "every hop is already retrieved; the step should answer, not search"
    if normalize_answer(text) in earlier_queries(context):
        return -1, "repeats an earlier query"
    tokens = _tokens(text)
    target = chain[solved].entity
    if names(tokens, target):
        return 1, f"names the next hop's entity {target!r}"
    guessed = [hop.answer for hop in chain[solved:] if names(tokens, hop.answer)]
    if guessed:
        return -1, f"names {guessed[0]!r}, the answer of a hop not yet retrieved (a guess)"
    if any(names(tokens, hop.entity) for hop in chain[:solved]):
        return -1, "targets only an already solved hop"
    if partly_names(tokens, target):
        return 0, f"names part of the next hop's entity {target!r}"
    return -1, "names no chain entity (generic or off target)"


def oracle_answer_score(text: str, golden_answers: tuple[str, ...]) -> tuple[int, str]:
    if exact_match(text, golden_answers):
        return 1, "exact match with a golden answer"
    f1 = token_f1(text, golden_answers)
    if f1 > 0:
        return 0, f"partly right (token F1 {f1:.2f})"
    return -1, "no overlap with any golden answer"


def _item_digest(item: JudgeItem, seed: int) -> int:
    parts = [str(seed), item.kind, item.question, item.text, item.context, item.think, *item.golden_answers, "|",
             *item.retrieved_ids]
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()[:8], "big")


class OracleJudge:
    """What a perfect judge would say, from the gold chain (see the module docstring). Not an LLM."""

    def __init__(self, noise: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= noise <= 1.0:
            raise ConfigError(f"OracleJudge: noise={noise} must be in [0, 1] (the share of scores replaced by a "
                              "random one). Fix judge.noise.")
        self.name = "oracle" if noise == 0 else f"oracle(noise={noise:g})"
        self.noise = noise
        self.seed = seed
        self._stats = JudgeStats()

    def metrics(self) -> dict[str, float]:
        return self._stats.metrics()

    def score(self, items: list[JudgeItem]) -> list[JudgeVerdict]:
        verdicts = [self._score_one(item) for item in items]
        self._stats.add(calls=len(items), failures=sum(v.failed for v in verdicts))
        return verdicts

    def _score_one(self, item: JudgeItem) -> JudgeVerdict:
        if item.kind == "answer":
            score, why = oracle_answer_score(item.text, item.golden_answers)
        elif not item.chain:
            return JudgeVerdict.failure(f"oracle: a {item.kind} item needs a gold chain (item.chain is empty); the "
                                        "oracle works on the synthetic world only")
        elif item.kind == "think":
            score, why = oracle_think_score(item.text, item.chain, item.retrieved_ids)
        else:
            score, why = oracle_query_score(item.text, item.chain, item.retrieved_ids, item.context)
        if self.noise > 0:
            rng = random.Random(_item_digest(item, self.seed))
            if rng.random() < self.noise:
                noisy = rng.choice(SCORES)
                why = f"{why}; noise replaced {score} by {noisy}"
                score = noisy
        return JudgeVerdict(score=score, explanation=why, failed=False)
