"""Entity types, relations and the sentence templates that phrase them.

A relation is a directed edge ``subject --relation--> object``; its fact is written in the *subject's* passage,
so answering a hop means retrieving the subject's passage. Each relation has several fact templates (how a passage
states it), several question templates (asking for the object, given the subject's name or a description) and
several noun-phrase templates (describing the object in terms of the subject, for composing multi-hop questions).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Relation:
    name: str
    subject_type: str
    object_type: str
    facts: tuple[str, ...]
    questions: tuple[str, ...]
    noun_phrases: tuple[str, ...]

    @property
    def canonical_question(self) -> str:
        return self.questions[0]


RELATIONS: tuple[Relation, ...] = (
    Relation(
        "born_in", "person", "city",
        facts=("{s} was born in {o}.", "{s} was born in the city of {o}.", "The birthplace of {s} is {o}."),
        questions=("Where was {s} born?", "In which city was {s} born?", "What is the birthplace of {s}?"),
        noun_phrases=("the birthplace of {s}", "the city where {s} was born"),
    ),
    Relation(
        "studied_at", "person", "university",
        facts=("{s} studied at {o}.", "{s} is a graduate of {o}.", "{s} attended {o}."),
        questions=("Where did {s} study?", "Which university did {s} attend?",
                   "Which university is {s} a graduate of?"),
        noun_phrases=("the university where {s} studied", "the alma mater of {s}"),
    ),
    Relation(
        "works_for", "person", "company",
        facts=("{s} works for {o}.", "{s} is employed by {o}.", "{s} has a job at {o}."),
        questions=("Which company does {s} work for?", "Who employs {s}?", "What company is {s} employed by?"),
        noun_phrases=("the employer of {s}", "the company that employs {s}"),
    ),
    Relation(
        "located_in", "city", "country",
        facts=("{s} is a city in {o}.", "{s} is located in {o}.", "{s} lies in {o}."),
        questions=("In which country is {s} located?", "Which country is {s} in?", "In what country does {s} lie?"),
        noun_phrases=("the country where {s} is located", "the country that contains {s}"),
    ),
    Relation(
        "mayor", "city", "person",
        facts=("The mayor of {s} is {o}.", "{o} serves as the mayor of {s}.", "{s} is governed by mayor {o}."),
        questions=("Who is the mayor of {s}?", "Who serves as mayor of {s}?", "Who governs {s} as its mayor?"),
        noun_phrases=("the mayor of {s}", "the person who serves as mayor of {s}"),
    ),
    Relation(
        "capital", "country", "city",
        facts=("The capital of {s} is {o}.", "{o} is the capital of {s}.", "{s} has its capital in {o}."),
        questions=("What is the capital of {s}?", "Which city is the capital of {s}?", "Where is the capital of {s}?"),
        noun_phrases=("the capital of {s}", "the capital city of {s}"),
    ),
    Relation(
        "president", "country", "person",
        facts=("The president of {s} is {o}.", "{o} is the president of {s}.", "{s} is led by president {o}."),
        questions=("Who is the president of {s}?", "Who leads {s} as president?", "Who is president of {s}?"),
        noun_phrases=("the president of {s}", "the leader of {s}"),
    ),
    Relation(
        "longest_river", "country", "river",
        facts=("The longest river of {s} is {o}.", "{o} is the longest river in {s}.",
               "{s} is crossed by {o}, its longest river."),
        questions=("What is the longest river of {s}?", "Which river is the longest in {s}?",
                   "What is the longest river in {s}?"),
        noun_phrases=("the longest river of {s}", "the longest river in {s}"),
    ),
    Relation(
        "founded_by", "company", "person",
        facts=("{s} was founded by {o}.", "{o} founded {s}.", "{s} was established by {o}."),
        questions=("Who founded {s}?", "Who established {s}?", "Who is the founder of {s}?"),
        noun_phrases=("the founder of {s}", "the person who founded {s}"),
    ),
    Relation(
        "headquartered_in", "company", "city",
        facts=("{s} is headquartered in {o}.", "The headquarters of {s} are in {o}.",
               "{s} has its head office in {o}."),
        questions=("Where is {s} headquartered?", "In which city is {s} headquartered?",
                   "Where are the headquarters of {s}?"),
        noun_phrases=("the city where {s} is headquartered", "the headquarters city of {s}"),
    ),
    Relation(
        "campus_in", "university", "city",
        facts=("{s} is located in the city of {o}.", "The campus of {s} is in {o}.", "{s} has its campus in {o}."),
        questions=("In which city is {s} located?", "Where is the campus of {s}?", "In what city is {s}?"),
        noun_phrases=("the city where {s} is located", "the campus city of {s}"),
    ),
    Relation(
        "university_founder", "university", "person",
        facts=("{s} was founded by {o}.", "{o} founded {s}.", "{s} was established by {o}."),
        questions=("Who founded {s}?", "Who established {s}?", "Who is the founder of {s}?"),
        noun_phrases=("the founder of {s}", "the person who established {s}"),
    ),
    Relation(
        "rises_in", "river", "country",
        facts=("{s} rises in {o}.", "The source of {s} is in {o}.", "{s} has its source in {o}."),
        questions=("In which country does {s} rise?", "Where is the source of {s}?",
                   "In what country is the source of {s}?"),
        noun_phrases=("the country where {s} rises", "the country of the source of {s}"),
    ),
)

RELATION_BY_NAME = {relation.name: relation for relation in RELATIONS}
RELATIONS_FROM: dict[str, list[Relation]] = {}
for _relation in RELATIONS:
    RELATIONS_FROM.setdefault(_relation.subject_type, []).append(_relation)

ENTITY_TYPES = ("country", "city", "person", "company", "university", "river")

INTROS: dict[str, tuple[str, ...]] = {
    "country": ("{s} is a country.", "{s} is a sovereign state.", "{s} is a nation with a long coastline."),
    "city": ("{s} is a city.", "{s} is a town known for its markets.", "{s} is a port city."),
    "person": ("{s} is an engineer.", "{s} is a writer.", "{s} is a painter.", "{s} is a physician.",
               "{s} is an architect.", "{s} is a composer."),
    "company": ("{s} is a company.", "{s} is a shipping firm.", "{s} is a software company.",
                "{s} is a textile maker."),
    "university": ("{s} is a university.", "{s} is a public research university.", "{s} is a private college."),
    "river": ("{s} is a river.", "{s} is a long river.", "{s} is a river used for trade."),
}

FILLERS: dict[str, tuple[str, ...]] = {
    "country": ("Its economy relies on farming and fishing.", "It holds elections every five years.",
                "Its flag shows three stripes.", "It is known for mountain villages."),
    "city": ("It has an old harbour and a stone bridge.", "Its main square hosts a spring fair.",
             "The city is known for its tram network.", "Many visitors come for its gardens."),
    "person": ("{p} is known for careful work.", "{p} gave many public lectures.",
               "{p} received several national awards.", "{p} wrote two books on the craft."),
    "company": ("It employs several thousand people.", "Its products are sold abroad.",
                "It was listed on the stock exchange.", "It has grown quickly in recent years."),
    "university": ("It has faculties of law and medicine.", "Its library holds rare manuscripts.",
                   "It enrols students from many countries.", "It is known for its rowing team."),
    "river": ("It floods in spring.", "Barges carry grain along it.", "Its valley is rich in vineyards.",
              "Several dams control its flow."),
}
