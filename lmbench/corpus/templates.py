"""Sentence templates for the built-in corpus, one pool per fact, and the two ways to fill them.

Templates are `str.format` strings over an entity's `facts`. The same template feeds running text
(`fill`) and the NER set (`fill_tagged`), where each slot's entity type comes from `SLOT_TYPES`; so
every fact sentence in the corpus can become a tagged example without a second grammar.
Slots `Ref`/`ref` (subject) and `Refs`/`refs` (possessive) refer back to the topic entity: a pronoun,
a descriptive noun phrase or its name, chosen per sentence by `with_ref`.
"""

from __future__ import annotations

import random
import re
from string import Formatter

SLOT_TYPES = {
    **dict.fromkeys(("name", "first", "last", "spouse", "founder", "ceo", "creator", "winner", "scorer",
                     "colleague", "analyst", "lead", "person", "coach"), "PER"),
    **dict.fromkeys(("city", "country", "birth_city", "org_city", "capital", "river", "event_city", "venue_city",
                     "maker_city", "creator_city", "city2", "city3", "away_city"), "LOC"),
    **dict.fromkeys(("org", "employer", "venue", "maker", "team", "rival", "org2"), "ORG"),
    **dict.fromkeys(("event", "title", "product", "nationality", "language"), "MISC"),
}
REF_SLOTS = ("Ref", "ref", "Refs", "refs")

PERSON_INTRO = (
    "{name} is {a_job} who lives in {city}.",
    "{name} is a person who works as {a_job} in {org_city}.",
    "{name} works as {a_job} at {employer}.",
    "{name}, {a_job} from {city}, has worked at {employer} since {join_year}.",
    "Born in {birth_city} in {birth_year}, {name} now lives in {city}, where {he} works as {a_job}.",
    "Many people in {city} know {name}, {a_job} at {employer}.",
    "Among the {jobs} of {city}, {name} is one of the best known.",
    "{name} is {a_nationality} {job} based in {city}.",
    "{name} is {a_job}. {He} lives in {city} and works for {employer}.",
    "If you ask around {city} for a good {job}, people will mention {name}.",
)
PERSON_FACTS = {
    "home": ("{Ref} lives in {city}.", "{Ref} lives in {city}, a city in {country}.",
             "These days {ref} lives in {city}.",
             "{Ref} moved to {city} {years_in_city} years ago.", "{Refs} home is in {city}.",
             "{Ref} has lived in {city} for {years_in_city} years.", "{Ref} is based in {city}, in {country}."),
    "birth": ("{Ref} was born in {birth_city} in {birth_year}.", "{Ref} grew up in {birth_city}.",
              "{Ref} was born in {birth_year}, which makes {him} {age} this year.",
              "{Refs} childhood was spent in {birth_city}.", "{Ref} is {age} years old."),
    "work": ("{Ref} works for {employer}.", "{Refs} employer is {employer}, {a_org_kind} in {org_city}.",
             "At {employer}, {ref} {duty}.", "{Ref} {duty}.", "{Ref} joined {employer} in {join_year}.",
             "In {his} job, {ref} {duty2}.", "{Ref} has been with {employer} since {join_year}.",
             "{Ref} works as {a_job}, and {he} {duty2}."),
    "hobby": ("In {his} spare time, {ref} enjoys {hobby}.", "{Ref} is fond of {hobby}.",
              "When {he} is not working, {ref} likes {hobby}.", "{Refs} favourite pastime is {hobby}."),
    "spouse": ("{Ref} is married to {spouse}.", "{Refs} spouse is {spouse}.", "{Ref} and {spouse} are married."),
    "language": ("{Ref} speaks {nationality}.", "Like most people in {city}, {ref} speaks {nationality}."),
}

CITY_INTRO = (
    "{city} is a city in {country}.", "{city} is {a_size} city in the {direction} of {country}.",
    "{city} is a place in {country} known for {known_for}.", "{city} is a location in the {direction} of {country}.",
    "The city of {city} lies in the {direction} of {country}.", "{city} is {a_size} city on the {river}.",
    "{city}, a city in {country}, is known for {known_for}.",
)
CITY_FACTS = {
    "population": ("{Ref} has a population of about {population}.", "About {population} people live in {city}.",
                   "Around {population} people call {city} home."),
    "founded": ("{Ref} was founded in {founded}.", "{Ref} dates back to {founded}.",
                "The first houses of {city} were built in {founded}."),
    "river": ("{Ref} lies on the {river}.", "The {river} flows through {city}.",
              "{Ref} grew up along the banks of the {river}."),
    "known": ("{Ref} is known for {known_for}.", "{Ref} is famous for {known_for}.",
              "Most visitors come to {city} for {known_for}."),
    "sights": ("The main sights of {city} include {landmark} and {landmark2}.",
               "Visitors should not miss {landmark}.",
               "{Ref} has {landmark}, which draws crowds in {season}."),
    "climate": ("{Ref} has {climate}.", "The best time to visit {city} is {season}.", "Expect {climate} in {city}."),
    "language": ("People in {city} speak {language}.", "The local language is {language}."),
    "capital": ("The capital of {country} is {capital}.", "{capital} is the capital of {country}."),
}

ORG_INTRO = {
    "company": ("{org} is {a_org_kind} based in {org_city}.", "{org} is a company based in {org_city}, {country}.",
                "{org} is an organization in the business of {makes}.",
                "{org} is an organisation based in {org_city}.",
                "{org}, {a_org_kind} from {org_city}, is known for {makes}.",
                "{org} is a company that deals in {makes}."),
    "university": ("{org} is a university in {org_city}.",
                   "{org} is an organization for research and teaching in {org_city}.",
                   "{org} is the largest university in {org_city}."),
    "club": ("{org} is a {makes} club based in {org_city}.", "{org} is a sports organization from {org_city}.",
             "{org} is a {makes} club that plays its home games in {org_city}."),
}
ORG_FACTS = {
    "founded": ("{Ref} was founded in {founded} by {founder}.", "{founder} founded {org} in {founded}.",
                "{Ref} was set up in {founded}."),
    "hq": ("{Refs} headquarters are in {org_city}.", "{Ref} has its headquarters in {org_city}, {country}.",
           "{Ref} is based in {org_city}."),
    "size": ("{Ref} employs about {employees} people.", "About {employees} people work for {org}.",
             "{Ref} has a staff of roughly {employees}."),
    "ceo": ("{ceo} is the head of {org}.", "{Ref} is led by {ceo}.", "{ceo} runs {org}.",
            "Today {org} is run by {ceo}."),
    "makes": ("{Ref} is best known for its {makes}.", "{Refs} main business is {makes}.",
              "Most of its money comes from {makes}."),
}

EVENT_INTRO = (
    "The {event} is an event held every {month} in {event_city}.",
    "The {event} takes place in {event_city} each {month}.",
    "Every {month}, {event_city} hosts the {event}.", "The {event} is an annual event in {event_city}, {country}.",
)
EVENT_FACTS = (
    "The {event} was first held in {founded}.", "It draws around {attendance} visitors each year.",
    "The {event} is one of the best known events in {country}.",
    "Since {founded}, the {event} has been held in {event_city}.",
    "The event is held in {month}, when the city is at its busiest.",
)
WORK_INTRO = (
    "{title} is {a_genre} {work_kind} {verb} {creator}.", "{title} is a {year} {work_kind} {verb} {creator}.",
    "In {year}, {creator} released {title}, {a_genre} {work_kind}.",
    "{creator}'s {work_kind} {title} came out in {year}.",
    "{title}, {a_genre} {work_kind} from {year}, was {verb} {creator}.",
)
PRODUCT_INTRO = (
    "The {product} is a {category} made by {maker}.", "{maker} released the {product}, a {category}, in {year}.",
    "The {product} is a {category} from {maker} that sells for {price} dollars.",
)
VENUE_INTRO = (
    "{venue} is a {cuisine} restaurant in {venue_city}.", "{venue} serves {cuisine} food in {venue_city}.",
    "In {venue_city}, {venue} is known for its {dish}.",
)

_REF_NOUN = {"city": "the city", "company": "the company", "university": "the university", "club": "the club",
             "event": "the event"}
_TOKEN_RE = re.compile(r"\d+(?:[.,]\d+)+|'s\b|\w+(?:-\w+)*|[^\w\s]")
_PARSED: dict[str, list[tuple[str, str | None]]] = {}


class Rng(random.Random):
    """random.Random with a cheaper `choice` (one float draw, no rejection loop): generation is hot."""

    def choice(self, seq):
        return seq[int(self.random() * len(seq))]


def with_ref(rng: random.Random, facts: dict, kind: str) -> dict:
    """`facts` plus the back-reference slots, chosen at random for one sentence.

    kind: "person" (pronoun, first name, full name or surname) or one of city/company/university/club/event.
    """
    r = rng.random()
    if kind == "person":
        if r < 0.55:
            return {**facts, "Ref": facts["He"], "ref": facts["he"], "Refs": facts["His"], "refs": facts["his"],
                    "_ref_name": False}
        name = facts["first"] if r < 0.75 else facts["name"] if r < 0.92 else facts["last"]
    else:
        if r < 0.4:
            return {**facts, "Ref": "It", "ref": "it", "Refs": "Its", "refs": "its", "_ref_name": False}
        if r < 0.7:
            noun = _REF_NOUN[kind]
            return {**facts, "Ref": noun.capitalize(), "ref": noun, "Refs": noun.capitalize() + "'s",
                    "refs": noun + "'s", "_ref_name": False}
        name = facts.get("city") if kind == "city" else facts.get("org") or facts.get("event")
    return {**facts, "Ref": name, "ref": name, "Refs": name + "'s", "refs": name + "'s", "_ref_name": True}


def fill(template: str, slots: dict) -> str:
    """Render one template to a sentence (first letter capitalised)."""
    s = template.format_map(slots)
    return s[0].upper() + s[1:]


def tokenize(text: str) -> list[str]:
    """Whitespace tokens with punctuation (and possessive 's) split off as their own tokens."""
    return _TOKEN_RE.findall(text)


def _parse(template: str) -> list[tuple[str, str | None]]:
    if template not in _PARSED:
        _PARSED[template] = [(lit, fld) for lit, fld, _, _ in Formatter().parse(template)]
    return _PARSED[template]


def fill_tagged(template: str, slots: dict, ref_type: str = "O") -> tuple[list[str], list[str]]:
    """Render a template to (tokens, IOB2 tags): slot values typed by SLOT_TYPES, literals tagged O.

    ref_type is the entity type of the Ref slots when they hold a name rather than a pronoun.
    """
    tokens: list[str] = []
    tags: list[str] = []
    for literal, fld in _parse(template):
        lit_tokens = tokenize(literal)
        tokens += lit_tokens
        tags += ["O"] * len(lit_tokens)
        if fld is None:
            continue
        value_tokens = tokenize(slots[fld])
        etype = SLOT_TYPES.get(fld)
        if fld in REF_SLOTS:
            etype = ref_type if slots.get("_ref_name") and ref_type != "O" else None
        if etype is None:
            tags += ["O"] * len(value_tokens)
        else:
            last = len(value_tokens) - 1
            tags += ["O" if t == "'s" and i == last and fld in REF_SLOTS else ("B-" if i == 0 else "I-") + etype
                     for i, t in enumerate(value_tokens)]
        tokens += value_tokens
    if tokens:
        tokens[0] = tokens[0][0].upper() + tokens[0][1:]
    return tokens, tags
