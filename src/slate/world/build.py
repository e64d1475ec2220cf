"""Build the synthetic multi-hop world: entities, one passage each, and 1–N-hop questions with gold chains.

Chains are 1–4 hops by default; ``max_hops`` (``world.max_hops``, ``slate world build --max-hops 6``) asks for
longer ones, up to ``LONGEST_CHAIN`` = 6: every relation walk of that length through distinct entities exists in a
world of the default size (a 6-hop question names one entity and five relations; its answer is five passages away).

Determinism: one ``random.Random(seed)`` drives every choice, lists are iterated in order and JSON is written with
fixed key order, so the same seed and size give byte-identical files.

Difficulty comes from look-alike entities (name families share a root: ``Velmora Systems`` / ``Velmora Labs`` /
``Velmora University``; people share surnames; cities ``Dalvin`` / ``Port Dalvin``), from several phrasings per
relation and per question, and from the fact that a multi-hop question never names the entity whose passage
answers its last hop — pasting the whole question as the query rarely finds it.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from slate.data.records import write_jsonl
from slate.world.names import NameBank
from slate.world.schema import FILLERS, INTROS, RELATIONS_FROM, Relation

COUNTRY_FORMS = ("Republic", "Kingdom", "Federation", "Commonwealth")
CITY_AFFIXES = ("Port {r}", "East {r}", "{r} Springs", "Upper {r}", "New {r}", "{r} Falls")
COMPANY_SUFFIXES = ("Systems", "Holdings", "Labs", "Dynamics", "Works", "Group", "Industries", "Partners")
UNIVERSITY_FORMS = ("{r} University", "{r} Institute of Technology", "{r} College", "University of {r}")


@dataclass(frozen=True)
class WorldSize:
    countries: int
    cities: int
    people: int
    companies: int
    universities: int
    rivers: int
    questions_per_hop: tuple[int, int, int]  # (train, dev, test) questions for each hop count 1..max_hops
    max_hops: int = 4


WORLD_SIZES: dict[str, WorldSize] = {
    # `make demo-quick`: few names and 1-2 hops only, so that a small policy learns within its minute
    "micro": WorldSize(4, 12, 24, 10, 4, 4, (90, 20, 20), max_hops=2),
    "tiny": WorldSize(8, 40, 90, 40, 16, 10, (40, 10, 10)),
    "small": WorldSize(20, 160, 400, 160, 80, 30, (300, 50, 100)),
    "default": WorldSize(40, 400, 1100, 450, 220, 60, (750, 100, 200)),
}
MAX_HOPS = 4
LONGEST_CHAIN = 6  # the hardness dial's longest chain; longer walks get rare and their questions unreadable


@dataclass
class Entity:
    id: str
    type: str
    name: str
    aliases: list[str] = field(default_factory=list)
    relations: dict[str, str] = field(default_factory=dict)  # relation name -> object entity id
    intro: str = ""
    pronoun: str = "It"

    def mention(self) -> str:
        """How the entity is named inside a sentence (rivers take the article: "the Kesh River")."""
        return f"the {self.name}" if self.type == "river" else self.name


@dataclass
class World:
    entities: dict[str, Entity]
    passages: dict[str, str]  # entity id -> "Title\ntext"
    questions: dict[str, list[dict]]  # split -> FlashRAG rows


def _capitalise(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


class _Builder:
    def __init__(self, seed: int, size: WorldSize) -> None:
        self.rng = random.Random(seed)
        self.size = size
        self.names = NameBank(self.rng)
        self.entities: dict[str, Entity] = {}
        self.by_type: dict[str, list[str]] = {}

    def add(self, type_: str, name: str, aliases: list[str] | None = None) -> Entity:
        entity = Entity(id=f"doc-{len(self.entities):05d}", type=type_, name=name, aliases=aliases or [])
        entity.intro = self.rng.choice(INTROS[type_])
        if type_ == "person":
            entity.pronoun = self.rng.choice(("He", "She"))
        self.entities[entity.id] = entity
        self.by_type.setdefault(type_, []).append(entity.id)
        return entity

    def family_names(self, count: int, forms: tuple[str, ...], bare_share: float, max_family: int = 3) -> list[str]:
        """Names in families that share a root: the look-alike distractors."""
        names: list[str] = []
        while len(names) < count:
            root = self.names.root()
            family = self.rng.randint(1, max_family)
            variants = self.rng.sample(forms, k=min(family, len(forms)))
            if self.rng.random() < bare_share:
                variants[0] = "{r}"
            names.extend(form.format(r=root) for form in variants)
        return names[:count]

    def entities_of_all_types(self) -> None:
        size = self.size
        for name in self.family_names(size.countries, ("North {r}", "South {r}", "{r}ia"), bare_share=1.0,
                                      max_family=2):
            self.add("country", name, aliases=[f"{self.rng.choice(COUNTRY_FORMS)} of {name}"])
        for name in self.family_names(size.cities, CITY_AFFIXES, bare_share=0.7):
            self.add("city", name)
        first_names = [self.names.root(2, 2) for _ in range(max(20, size.people // 6))]
        surnames: list[str] = []
        while len(surnames) < size.people:
            surnames.extend([self.names.root(2, 3)] * self.rng.randint(1, 3))
        for surname in surnames[: size.people]:
            self.add("person", f"{self.rng.choice(first_names)} {surname}")
        company_roots: list[str] = []
        for name in self.family_names(size.companies, tuple(f"{{r}} {s}" for s in COMPANY_SUFFIXES), bare_share=0.0):
            self.add("company", name)
            company_roots.append(name.split()[0])
        for index in range(size.universities):
            # Half the universities borrow a company root: a cross-type look-alike ("Velmora Labs", "Velmora College").
            root = self.rng.choice(company_roots) if index % 2 == 0 else self.names.root()
            name = self.rng.choice(UNIVERSITY_FORMS).format(r=root)
            if any(self.entities[other].name == name for other in self.by_type.get("university", [])):
                name = f"{self.names.root()} {self.rng.choice(('University', 'College'))}"
            self.add("university", name)
        for name in self.family_names(size.rivers, ("{r} River", "Little {r} River", "Great {r} River"),
                                      bare_share=0.0, max_family=2):
            self.add("river", name)

    def relations(self) -> None:
        rng, ids = self.rng, self.by_type
        pick = rng.choice
        countries, cities = ids["country"], ids["city"]
        for index, city in enumerate(cities):
            # every country gets at least one city, so every country has a capital
            country = countries[index] if index < len(countries) else pick(countries)
            self.entities[city].relations["located_in"] = country
        for country in countries:
            own = [c for c in cities if self.entities[c].relations["located_in"] == country]
            self.entities[country].relations["capital"] = pick(own)
        people = list(ids["person"])
        rng.shuffle(people)
        office_holders = iter(people)  # mayors and presidents are distinct people
        for city in cities:
            self.entities[city].relations["mayor"] = next(office_holders)
        for country in countries:
            self.entities[country].relations["president"] = next(office_holders)
            self.entities[country].relations["longest_river"] = pick(ids["river"])
        for river in ids["river"]:
            self.entities[river].relations["rises_in"] = pick(countries)
        for person in ids["person"]:
            relations = self.entities[person].relations
            relations["born_in"] = pick(cities)
            relations["studied_at"] = pick(ids["university"])
            relations["works_for"] = pick(ids["company"])
        for company in ids["company"]:
            self.entities[company].relations["founded_by"] = pick(ids["person"])
            self.entities[company].relations["headquartered_in"] = pick(cities)
        for university in ids["university"]:
            self.entities[university].relations["campus_in"] = pick(cities)
            self.entities[university].relations["university_founder"] = pick(ids["person"])

    def passage(self, entity: Entity) -> str:
        sentences = [entity.intro.format(s=entity.mention())]
        if entity.aliases:
            sentences.append(f"It is officially called the {entity.aliases[0]}.")
        for relation in RELATIONS_FROM[entity.type]:
            obj = self.entities[entity.relations[relation.name]]
            template = self.rng.choice(relation.facts)
            # Every fact names its subject (no pronouns): the sentence that answers a hop can be found by the name.
            sentences.append(template.format(s=entity.mention(), o=obj.mention()))
        # At most one filler sentence: passages stay short, because every retrieved token is context the policy reads.
        fillers = [f.format(p=entity.pronoun) for f in self.rng.sample(FILLERS[entity.type], k=self.rng.randint(0, 1))]
        body = sentences[:1] + self.rng.sample(sentences[1:], k=len(sentences) - 1) + fillers
        return f"{entity.name}\n" + " ".join(_capitalise(s) for s in body)

    def chain(self, hops: int) -> list[tuple[Entity, Relation]] | None:
        """A random walk of ``hops`` relations through distinct entities: [(subject, relation), ...]."""
        start_type = self.rng.choice(("person", "company", "university", "city", "country", "river"))
        current = self.entities[self.rng.choice(self.by_type[start_type])]
        seen = {current.id}
        walk: list[tuple[Entity, Relation]] = []
        for _ in range(hops):
            relation = self.rng.choice(RELATIONS_FROM[current.type])
            nxt = self.entities[current.relations[relation.name]]
            if nxt.id in seen:
                return None
            walk.append((current, relation))
            seen.add(nxt.id)
            current = nxt
        return walk

    def question(self, walk: list[tuple[Entity, Relation]]) -> dict:
        description = walk[0][0].mention()
        for _, relation in walk[:-1]:
            description = self.rng.choice(relation.noun_phrases).format(s=description)
        question = _capitalise(self.rng.choice(walk[-1][1].questions).format(s=description))
        chain = []
        for subject, relation in walk:
            obj = self.entities[subject.relations[relation.name]]
            chain.append({"sub_question": _capitalise(relation.canonical_question.format(s=subject.mention())),
                          "entity": subject.name, "relation": relation.name, "answer": obj.name,
                          "doc_id": subject.id})
        answer = self.entities[walk[-1][0].relations[walk[-1][1].name]]
        return {"question": question, "golden_answers": [answer.name, *answer.aliases],
                "metadata": {"hops": len(walk), "chain": chain}}

    def questions(self) -> dict[str, list[dict]]:
        splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
        seen_questions: set[str] = set()
        seen_walks: set[tuple[str, ...]] = set()
        for hops in range(1, self.size.max_hops + 1):
            wanted = sum(self.size.questions_per_hop)
            pool: list[dict] = []
            for _ in range(wanted * 200):
                if len(pool) == wanted:
                    break
                walk = self.chain(hops)
                if walk is None:
                    continue
                key = tuple(f"{s.id}:{r.name}" for s, r in walk)
                row = self.question(walk)
                if key in seen_walks or row["question"] in seen_questions:
                    continue
                seen_walks.add(key)
                seen_questions.add(row["question"])
                pool.append(row)
            if len(pool) < wanted:
                raise RuntimeError(f"only {len(pool)} distinct {hops}-hop questions; choose a larger world size")
            n_train, n_dev, _ = self.size.questions_per_hop
            splits["train"] += pool[:n_train]
            splits["dev"] += pool[n_train:n_train + n_dev]
            splits["test"] += pool[n_train + n_dev:]
        for split, rows in splits.items():
            self.rng.shuffle(rows)
            for index, row in enumerate(rows):
                rows[index] = {"id": f"{split}-{index:05d}", **row}
        return splits


def build_world(seed: int = 0, size: str = "default", max_hops: int | None = None) -> World:
    """The world of ``seed`` and ``size``; ``max_hops`` replaces the size's longest chain (default: 4, micro: 2).
    Hop counts 1..max_hops get the size's questions per hop each."""
    from slate.errors import ConfigError

    if size not in WORLD_SIZES:
        raise ConfigError(f"unknown world size {size!r}; choose one of {sorted(WORLD_SIZES)}.")
    world_size = WORLD_SIZES[size]
    if max_hops is not None:
        if not 1 <= max_hops <= LONGEST_CHAIN:
            raise ConfigError(f"max_hops={max_hops}: chains of 1 to {LONGEST_CHAIN} hops are supported. "
                              "Fix world.max_hops (or --max-hops).")
        world_size = replace(world_size, max_hops=max_hops)
    builder = _Builder(seed, world_size)
    builder.entities_of_all_types()
    builder.relations()
    passages = {eid: builder.passage(entity) for eid, entity in builder.entities.items()}
    return World(entities=builder.entities, passages=passages, questions=builder.questions())


def write_world(world: World, out_dir: str | Path, seed: int, size: str, max_hops: int | None = None) -> dict:
    """Write corpus.jsonl, train/dev/test.jsonl, entities.jsonl and world.json; returns the summary in world.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "corpus.jsonl", [{"id": eid, "contents": text} for eid, text in world.passages.items()])
    write_jsonl(out / "entities.jsonl", [{"id": e.id, "type": e.type, "name": e.name, "aliases": e.aliases,
                                          "relations": e.relations} for e in world.entities.values()])
    for split, rows in world.questions.items():
        write_jsonl(out / f"{split}.jsonl", rows)
    summary = {
        "seed": seed, "size": size, **({"max_hops": max_hops} if max_hops is not None else {}),
        "passages": len(world.passages),
        "entity_types": dict(sorted(Counter(e.type for e in world.entities.values()).items())),
        "questions": {split: dict(sorted(Counter(str(r["metadata"]["hops"]) for r in rows).items()))
                      for split, rows in world.questions.items()},
    }
    (out / "world.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
