"""A scripted searcher that follows the gold chain, with configurable mistakes, for the SFT warm-start.

A perfect demonstrator taught to a small policy for long enough solves this world almost always, leaving RL
nothing to show. So some demonstrations go wrong the way weak searchers do, each at its own rate:
- vague query: the entity's first word or the bare relation; the next step repeats the search properly;
- wrong entity: a look-alike (same root or surname) is searched and its fact believed — the chain derails;
- skipped hop: a hop's answer is guessed instead of searched (an entity of the right type);
- early answer: the demonstrator answers with what it knows before the last hop;
- giving up on long chains: on a question of ``give_up_min_hops`` hops or more, the demonstrator answers at the last
  hop with the entity it has, instead of searching (off by default);
- a vague habit at every hop (``vague_habit``, off by default): a search for the bare relation first, then the
  proper one, whatever the budget left, so a tight budget (``rollout.budget_slack``) turns each habit into a lost
  step and several together into a wrong answer: success needs several right decisions in one trajectory.
The policy learns the format from all of them and the right behaviour from most. Mistakes drawn independently for
every demonstration leave the right step the most likely one, so greedy decoding of a policy trained long enough makes
almost none of them (dev EM 0.870 on the tiny preset). Giving up at a rate above one half is different: it is a
habit, the likelier step in its place, so imitation keeps it at any length of training, while sampling still tries
the last search often enough for a reward to find it — headroom that only a reward can win back.

Each think before a search ends with the hops still to go, counted down from the question's plan ("(2 hops to go)",
then "(last hop)"). Without it, whether to answer after a search is decided by re-reading the question across every
retrieved passage, and a small policy learnt that in some seeds and not in others (dev EM 0.46 vs 0.14, seeds 0 and 1 of
one recipe); with it, the count is read once from the question and then only copied down from the last think.

Demonstrations are ``Episode`` objects tokenised exactly as rollouts are (prompt, sampled-step tokens, environment
tokens), so SFT trains on the same token layout the policy later samples in.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from slate.data.records import ChainHop, QARecord
from slate.retrieval.base import Hit, Retriever
from slate.world.schema import RELATION_BY_NAME


@dataclass(frozen=True)
class MistakeRates:
    vague_query: float = 0.15
    wrong_entity: float = 0.1
    skip_hop: float = 0.1
    early_answer: float = 0.1
    give_up: float = 0.0
    give_up_min_hops: int = 3
    vague_habit: float = 0.0


@dataclass
class ScriptedStep:
    text: str  # "<think> … </think>\n<search> … </search>" or the answer form
    hits: list[Hit] | None = None  # retrieved for a search


def _noun_phrase(relation: str, subject: str) -> str:
    return RELATION_BY_NAME[relation].noun_phrases[0].format(s=subject)


def _question(relation: str, subject: str) -> str:
    return RELATION_BY_NAME[relation].canonical_question.format(s=subject)


def _mention(name: str, entity_type: str) -> str:
    return f"the {name}" if entity_type == "river" else name


def hops_to_go(remaining: int) -> str:
    """The countdown said at the end of a search step's think: how many hops are left, this one included."""
    return "(last hop)" if remaining == 1 else f"({remaining} hops to go)"


def _need(relation: str, mention: str, remaining: int) -> str:
    """What a search step's think asks for, ending with the countdown."""
    return f"I need {_noun_phrase(relation, mention)} {hops_to_go(remaining)}."


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


class ScriptedSearcher:
    def __init__(self, world_dir: str | Path, retriever: Retriever, rates: MistakeRates, max_steps: int,
                 top_k: int = 3, seed: int = 0) -> None:
        self.retriever = retriever
        self.rates = rates
        self.max_steps = max_steps
        self.top_k = top_k
        self.rng = random.Random(seed)
        self.entities: dict[str, dict] = {}
        self.by_name: dict[str, dict] = {}
        self.by_type: dict[str, list[dict]] = {}
        self.by_word: dict[str, list[dict]] = {}
        for line in (Path(world_dir) / "entities.jsonl").read_text(encoding="utf-8").splitlines():
            entity = json.loads(line)
            self.entities[entity["id"]] = entity
            self.by_name[entity["name"]] = entity
            self.by_type.setdefault(entity["type"], []).append(entity)
            for word in entity["name"].split():
                self.by_word.setdefault(word, []).append(entity)

    def _type_of(self, name: str) -> str:
        entity = self.by_name.get(name)
        return entity["type"] if entity else "person"

    def _look_alike(self, name: str) -> dict | None:
        entity = self.by_name.get(name)
        if entity is None:
            return None
        twins = {e["id"]: e for word in name.split() for e in self.by_word.get(word, [])
                 if e["type"] == entity["type"] and e["id"] != entity["id"] and len(word) > 3}
        return self.rng.choice(sorted(twins.values(), key=lambda e: e["id"])) if twins else None

    def _search(self, think: str, query: str) -> ScriptedStep:
        hits = self.retriever.search([query], self.top_k)[0]
        return ScriptedStep(text=f"<think> {think} </think>\n<search> {query} </search>", hits=hits)

    @staticmethod
    def _answer(think: str, answer: str) -> ScriptedStep:
        return ScriptedStep(text=f"<think> {think} </think>\n<answer> {answer} </answer>")

    def demonstrate(self, record: QARecord) -> list[ScriptedStep]:
        """Steps for one question: the gold chain, possibly with one kind of mistake."""
        chain: list[ChainHop] = record.chain
        steps: list[ScriptedStep] = []
        subject = chain[0].entity  # the entity the current hop starts from, as far as the searcher knows
        known = ""  # what the last step learned, said at the start of the next think
        for index, hop in enumerate(chain):
            spare = self.max_steps - (len(chain) - index) - len(steps)  # steps left beyond the plan
            entity_type = self._type_of(subject)
            mention = _mention(subject, entity_type)
            remaining = len(chain) - index
            need = f"{known}{_need(hop.relation, mention, remaining)}"
            if (self.rates.give_up > 0 and index == len(chain) - 1 and len(chain) >= self.rates.give_up_min_hops
                    and self.rng.random() < self.rates.give_up):  # drawn only here: other presets keep their draws
                steps.append(self._answer(f"{known}So the answer is {subject}.", subject))
                return steps
            roll = self.rng.random()
            if index > 0 and roll < self.rates.early_answer / max(1, len(chain) - 1):
                steps.append(self._answer(f"{known}So the answer is {subject}.", subject))
                return steps
            roll = self.rng.random()
            if roll < self.rates.skip_hop / len(chain) and index < len(chain) - 1:
                answer_type = self._type_of(hop.answer)
                guess = self.rng.choice(self.by_type.get(answer_type, [{"name": hop.answer}]))["name"]
                known = f"{_sentence(_noun_phrase(hop.relation, mention))} is probably {guess}. "
                subject = guess
                continue
            roll = self.rng.random()
            # the habit ignores the budget (that is what makes it costly); a random vague query needs a spare step
            vague = roll < self.rates.vague_habit if self.rates.vague_habit > 0 else \
                spare > 0 and roll < self.rates.vague_query
            if vague:
                # the habit has one form, the bare relation: split between two forms, each would be less likely
                # than the proper query at the query's first token, and greedy decoding would drop the habit
                # (seen: two forms at 0.3 each against 0.4, dev EM 0.35 on 6 hops with 2 spare steps)
                bare = self.rates.vague_habit > 0 or self.rng.random() >= 0.5
                steps.append(self._search(need, hop.relation.replace("_", " ") if bare else subject.split()[0]))
                need = f"That did not help. {_need(hop.relation, mention, remaining)}"
            roll = self.rng.random()
            twin = self._look_alike(subject) if roll < self.rates.wrong_entity else None
            if twin is not None and hop.relation in twin["relations"]:
                twin_mention = _mention(twin["name"], twin["type"])
                steps.append(self._search(f"{known}{_need(hop.relation, twin_mention, remaining)}",
                                          _question(hop.relation, twin_mention)))
                found = self.entities[twin["relations"][hop.relation]]["name"]
                known = f"{_sentence(_noun_phrase(hop.relation, twin_mention))} is {found}. "
                subject = found
                continue
            steps.append(self._search(need, _question(hop.relation, mention)))
            found = self.entities[self.by_name[subject]["relations"][hop.relation]]["name"] \
                if subject in self.by_name and hop.relation in self.by_name[subject]["relations"] else hop.answer
            known = f"{_sentence(_noun_phrase(hop.relation, mention))} is {found}. "
            subject = found
        answer = self._answer(f"{known}So the answer is {subject}.", subject)
        return [*steps[: self.max_steps - 1], answer]  # the budget always leaves room for the answer
