"""StepSearch's reward: a step reward on every search (information gain − redundancy) and an outcome on the answer.

StepSearch (Wang et al. 2025, "StepSearch: Igniting LLMs Search Ability via Step-Wise Proximal Policy Optimization")
scores k complete trajectories per question with heuristic, reference-based rewards:

- search step t:  r_t = step_reward_scale · (G_t − P_t)                                   (step_reward_scale = 0.6)
    G_t = (1/D) Σ_i max(0, c_t^i − max_{s<t} c_s^i)   information gain; max over an empty set is 0
    c_t^i = max over this step's retrieved passages of the TF-IDF cosine with gold passage i   (D gold passages)
    P_t = share of this step's retrieved passages already retrieved at an earlier step (by id)  redundancy
- answer step:    r = token_F1(answer, golden answers) + search_key_weight · K           (search_key_weight = 0.618)
    K = (1/H) Σ_h max over issued queries q and phrasings p of hop h of token_F1(q, p)         (H gold sub-questions)
- format gate:    an episode whose last step is not a well-formed answer (``episode.final_answer is None``) gets
    ``format_penalty`` (−1) on its last step and None on every earlier step, so every step's return-to-go is −1.
    Invalid steps in the middle of an episode that does end with an answer are not gated: they carry None (no
    reward of their own), as the released code, which only checks that the response ends with an answer block.

Gold passages and sub-questions come from ``record.metadata``: ``gold_doc_ids`` / ``sub_questions`` when present
(a real dataset's supporting facts: 2WikiMultiHopQA, MuSiQue, HotpotQA converted to that form; each sub-question
is one string or a list of phrasings), else the synthetic world's ``chain`` (each hop's ``doc_id`` and
``sub_question``). ``check_records`` refuses, at start-up, a dataset without them or a gold id missing from the corpus.

Departures from the original (see docs/stepsearch.md for the full comparison):
- Advantage: StepSearch trains PPO with a critic and GAE, the step reward on the ``</search>`` token and the final
  score on the last token. Our trainer has no critic, so these step rewards feed process-supervised GRPO
  (``algorithms.advantages``: normalise all step rewards of the question's k trajectories, advantage of step j =
  sum of normalised rewards of steps ≥ j). This module only writes the step rewards.
- TF-IDF is fitted once on the corpus (``TfidfVectorizer``, default settings); the released code fits a fresh
  vectoriser on each (retrieved passage, gold passages) set after SQuAD normalisation, so its IDF is local.
- Redundancy counts passage ids retrieved at earlier steps; the released code compares passage text and also counts
  a repeat inside one step (a top-k list has none, so this changes nothing in practice).
- Search-key score: the paper's form, best F1 per sub-question over all queries, averaged. One released version maps
  each query to its single best sub-question and keeps the latest query's score there; another leaves the term off.
- No format bonus: the released code adds up to 0.1 for well-formed tags to the final score; we add nothing.
- The original's search keys are keyword phrasings mined per sub-question; by default ours are the sub-question text
  itself, so a terse keyword query scores a lower F1 than it would there. Pass phrasings in ``sub_questions``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from slate.data.records import Passage, QARecord, read_corpus
from slate.errors import DataError
from slate.eval.metrics import token_f1
from slate.retrieval.base import Hit
from slate.rollout.episode import Episode

logger = logging.getLogger(__name__)

_HOW_TO_FIX = ("StepSearch needs gold passages and sub-questions per question: metadata.chain (a built synthetic "
               "world has it) or metadata.gold_doc_ids + metadata.sub_questions (convert a dataset's supporting "
               "facts, e.g. 2WikiMultiHopQA, MuSiQue, HotpotQA, to that form), or train this dataset with a method "
               "that needs no gold chain (Search-R1).")


# ---------------------------------------------------------------------------------------------------------------
# Pure math: plain lists / arrays in, floats out. T = search steps, D = gold passages, H = retrieved passages.
# ---------------------------------------------------------------------------------------------------------------

def best_cosines(retrieved_vectors: np.ndarray | sparse.spmatrix, gold_vectors: np.ndarray | sparse.spmatrix,
                 ) -> np.ndarray:
    """c^i = max over retrieved passages h of cos(retrieved h, gold i), for one search step.

    retrieved_vectors: (H, V), gold_vectors: (D, V), rows L2-normalised (as ``TfidfVectorizer`` returns them), so a
    dot product is the cosine. Returns (D,). A step that retrieved nothing (H = 0) has c = 0 for every gold passage.
    """
    num_gold = gold_vectors.shape[0]
    if retrieved_vectors.shape[0] == 0:
        return np.zeros(num_gold)
    products = retrieved_vectors @ gold_vectors.T  # (H, D)
    dense = products.toarray() if sparse.issparse(products) else np.asarray(products)
    return dense.max(axis=0)


def information_gain(cosine_history: Sequence[Sequence[float]] | np.ndarray) -> list[float]:
    """G_t = (1/D) Σ_i max(0, c_t^i − max_{s<t} c_s^i), with max over no earlier step = 0.

    cosine_history: (T, D), row t = c_t, the best cosine of each gold passage among step t's retrieved passages.
    Returns T gains. Only the first time a gold passage is matched better than before earns reward; finding it again
    earns nothing. D must be ≥ 1 (a question without gold passages is refused by ``check_records``).
    """
    cosines = np.asarray(cosine_history, dtype=float)
    if cosines.shape[0] == 0:  # no search step
        return []
    if cosines.ndim != 2 or cosines.shape[1] == 0:
        raise ValueError(f"information_gain: cosine_history must be (search steps, gold passages >= 1), got shape "
                         f"{cosines.shape}.")
    best_so_far = np.zeros(cosines.shape[1])
    gains = []
    for row in cosines:
        gains.append(float(np.maximum(row - best_so_far, 0.0).mean()))
        best_so_far = np.maximum(best_so_far, row)
    return gains


def redundancy(retrieved_ids: Sequence[Sequence[str]]) -> list[float]:
    """P_t = (number of step t's retrieved passages whose id was retrieved at a step s < t) / (number at step t).

    retrieved_ids: one list of passage ids per search step, in step order. A step that retrieved nothing has P = 0.
    A repeat inside the same step is not redundant (only earlier steps count).
    """
    seen: set[str] = set()
    shares = []
    for ids in retrieved_ids:
        shares.append(sum(doc_id in seen for doc_id in ids) / len(ids) if ids else 0.0)
        seen.update(ids)
    return shares


def search_key_score(queries: Sequence[str], sub_questions: Sequence[Sequence[str]]) -> float:
    """K = (1/H) Σ_h max over queries q and phrasings p of sub-question h of token_F1(q, p).

    queries: every query the episode issued. sub_questions: per gold hop, its accepted phrasings (at least one).
    No query scores 0. Token F1 is the SQuAD one of ``slate.eval.metrics`` (articles and punctuation dropped).
    """
    if not sub_questions or any(not phrasings for phrasings in sub_questions):
        raise ValueError(f"search_key_score: every gold hop needs at least one phrasing, got {list(sub_questions)!r}.")
    per_hop = [max((token_f1(query, list(phrasings)) for query in queries), default=0.0)
               for phrasings in sub_questions]
    return sum(per_hop) / len(per_hop)


# ---------------------------------------------------------------------------------------------------------------
# Gold evidence from record metadata
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GoldEvidence:
    """What StepSearch scores against: gold passage ids (deduplicated, in order) and phrasings per sub-question."""

    doc_ids: tuple[str, ...]
    sub_questions: tuple[tuple[str, ...], ...]


def _dataset_name(record: QARecord) -> str:
    return record.dataset or "<unnamed dataset>"


def _phrasings(item: Any, where: str) -> tuple[str, ...]:
    values = [item] if isinstance(item, str) else item
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise DataError(f"{where}: each entry of metadata.sub_questions must be a string or a list of strings, got "
                        f"{item!r}. Fix the dataset.")
    kept = tuple(v.strip() for v in values if v.strip())
    if not kept:
        raise DataError(f"{where}: an entry of metadata.sub_questions is empty. Fix the dataset.")
    return kept


def gold_evidence(record: QARecord) -> GoldEvidence:
    """Gold passages and sub-questions of one record; DataError (dataset, record id, fix) when it has none.

    Explicit ``metadata.gold_doc_ids`` / ``metadata.sub_questions`` take precedence over ``metadata.chain``; the
    chain is read as raw dicts so that extra keys on a hop do not matter here.
    """
    where = f"dataset {_dataset_name(record)!r}, record {record.id!r}"
    metadata = record.metadata
    chain = metadata.get("chain") or []
    doc_ids = metadata.get("gold_doc_ids")
    if doc_ids is None:
        doc_ids = [hop.get("doc_id") for hop in chain if isinstance(hop, dict)]
    raw_sub_questions = metadata.get("sub_questions")
    if raw_sub_questions is None:
        raw_sub_questions = [hop.get("sub_question") for hop in chain if isinstance(hop, dict)]
    if not isinstance(doc_ids, list) or not isinstance(raw_sub_questions, list):
        raise DataError(f"{where}: metadata.gold_doc_ids and metadata.sub_questions must be lists. Fix the dataset.")
    if not doc_ids or not raw_sub_questions:
        lacking = [name for name, value in (("gold passages", doc_ids), ("sub-questions", raw_sub_questions))
                   if not value]
        raise DataError(f"{where}: no {' and no '.join(lacking)} (metadata.chain or metadata.gold_doc_ids + "
                        f"metadata.sub_questions). {_HOW_TO_FIX}")
    if not all(isinstance(doc_id, (str, int)) and str(doc_id) for doc_id in doc_ids):
        raise DataError(f"{where}: gold passage ids must be non-empty strings, got {doc_ids!r}. Fix the dataset.")
    unique_ids = tuple(dict.fromkeys(str(doc_id) for doc_id in doc_ids))
    return GoldEvidence(doc_ids=unique_ids,
                        sub_questions=tuple(_phrasings(item, where) for item in raw_sub_questions))


# ---------------------------------------------------------------------------------------------------------------
# The reward strategy
# ---------------------------------------------------------------------------------------------------------------

class StepSearchReward:
    """StepSearch's step rewards (searches) and outcome (answer), behind the ``RewardStrategy`` protocol.

    passages: the retrieval corpus; the TF-IDF vectoriser is fitted on their contents once, here, and gold passages
    are looked up in it by id. step_reward_scale: weight of G_t − P_t on each search step (0.6, the released
    code's ``step_reward_scale``). search_key_weight: weight of the search-key score in the final reward (0.618, the
    released code's ``search_keys_score``). format_penalty: the whole reward of an episode that does not end with a
    well-formed answer (−1).
    """

    def __init__(self, passages: Sequence[Passage], step_reward_scale: float = 0.6, search_key_weight: float = 0.618,
                 format_penalty: float = -1.0) -> None:
        if not passages:
            raise DataError("StepSearchReward: the corpus is empty. Pass the retrieval corpus (read_corpus(path) or "
                            "StepSearchReward.from_corpus(path)); TF-IDF is fitted on it.")
        self.step_reward_scale = step_reward_scale
        self.search_key_weight = search_key_weight
        self.format_penalty = format_penalty
        self._vectorizer = TfidfVectorizer()
        try:
            self._corpus_vectors = self._vectorizer.fit_transform([p.contents for p in passages]).tocsr()
        except ValueError as exc:  # every passage empty or made of one-letter tokens only
            raise DataError(f"StepSearchReward: cannot fit TF-IDF on the corpus ({exc}). Check that the corpus "
                            "passages have text in their contents.") from None
        self._row_of_id = {p.id: row for row, p in enumerate(passages)}
        self._hit_vectors: dict[str, sparse.csr_matrix] = {}  # retrieved passage id -> (1, V), cached
        self._gated = 0  # episodes given the format penalty since the last metrics()
        logger.info("StepSearch reward: TF-IDF fitted on %d passages, %d terms", len(passages),
                    len(self._vectorizer.vocabulary_))

    @classmethod
    def from_corpus(cls, path: str | Path, **kwargs: float) -> StepSearchReward:
        """Build from a ``{id, contents}`` corpus jsonl (a built world's corpus.jsonl, a FlashRAG corpus)."""
        return cls(read_corpus(path), **kwargs)

    def check_records(self, records: Sequence[QARecord]) -> None:
        """Refuse, before training, a record without gold passages / sub-questions or with a gold id not in the corpus.

        Raises DataError on the first bad record, naming its dataset and id and what to do.
        """
        for record in records:
            evidence = gold_evidence(record)
            missing = [doc_id for doc_id in evidence.doc_ids if doc_id not in self._row_of_id]
            if missing:
                raise DataError(f"dataset {_dataset_name(record)!r}, record {record.id!r}: gold passage ids "
                                f"{missing} are not in the corpus ({len(self._row_of_id)} passages). The information "
                                "gain needs their text: use the corpus the questions were built with (a world's "
                                "corpus.jsonl), or add those passages to it.")

    def score_episodes(self, episodes: list[Episode]) -> None:
        """Write ``Step.reward`` on every step (None where a step has no reward) and diagnostics in ``Step.scores``."""
        self._cache_hit_vectors([hit for episode in episodes for step in episode.steps for hit in step.hits])
        gated = 0
        for episode in episodes:
            for step in episode.steps:
                step.reward = None
            if not episode.steps:
                continue
            if episode.final_answer is None:
                # Return-to-go of every step is the penalty: it sits on the last step, earlier steps add nothing.
                episode.steps[-1].reward = self.format_penalty
                gated += 1
                continue
            self._score_answered(episode)
        logger.debug("StepSearch reward: scored %d episodes, %d gated for not ending with an answer", len(episodes),
                      gated)
        self._gated += gated

    def metrics(self) -> dict[str, float]:
        """``stepsearch/format_gated``: episodes that did not end with an answer and got the format penalty."""
        gated, self._gated = self._gated, 0
        return {"stepsearch/format_gated": float(gated)}

    def _score_answered(self, episode: Episode) -> None:
        evidence = gold_evidence(episode.record)
        gold_vectors = self._gold_vectors(evidence, episode.record)
        search_steps = [step for step in episode.steps if step.action == "search"]
        cosines = [best_cosines(self._stack([hit.id for hit in step.hits], gold_vectors.shape[1]), gold_vectors)
                   for step in search_steps]
        gains = information_gain(np.vstack(cosines)) if cosines else []
        shares = redundancy([[hit.id for hit in step.hits] for step in search_steps])
        for step, gain, share in zip(search_steps, gains, shares, strict=True):
            step.reward = self.step_reward_scale * (gain - share)
            step.scores.update({"information_gain": gain, "redundancy": share})
        answer_f1 = token_f1(episode.final_answer, episode.record.golden_answers)
        key_score = search_key_score(episode.queries, evidence.sub_questions)
        last = episode.steps[-1]
        last.reward = answer_f1 + self.search_key_weight * key_score
        last.scores.update({"answer_f1": answer_f1, "search_key_score": key_score})

    def _gold_vectors(self, evidence: GoldEvidence, record: QARecord) -> sparse.csr_matrix:
        rows = []
        for doc_id in evidence.doc_ids:
            if doc_id not in self._row_of_id:
                raise DataError(f"dataset {_dataset_name(record)!r}, record {record.id!r}: gold passage id {doc_id!r} "
                                "is not in the corpus. Call check_records on the dataset at start-up and use the "
                                "corpus the questions were built with.")
            rows.append(self._row_of_id[doc_id])
        return self._corpus_vectors[rows]  # (D, V)

    def _cache_hit_vectors(self, hits: list[Hit]) -> None:
        """Vectorise, in one batch, the retrieved passages not seen before (from the text the policy was shown)."""
        new: dict[str, str] = {}
        for hit in hits:
            if hit.id not in self._hit_vectors:
                new.setdefault(hit.id, hit.contents)
        if not new:
            return
        vectors = self._vectorizer.transform(list(new.values())).tocsr()
        for row, doc_id in enumerate(new):
            self._hit_vectors[doc_id] = vectors[row]

    def _stack(self, doc_ids: list[str], vocabulary_size: int) -> sparse.csr_matrix:
        if not doc_ids:
            return sparse.csr_matrix((0, vocabulary_size))
        return sparse.vstack([self._hit_vectors[doc_id] for doc_id in doc_ids], format="csr")  # (H, V)
