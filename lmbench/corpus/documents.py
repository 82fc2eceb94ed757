"""The document stream of the built-in corpus: biographies, city guides, company news, match and event
reports, science news, reviews and indexes, all about one seeded world.

Document i is drawn from its own generator seeded with the string f"{seed}:{i}", so the stream is deterministic,
prefix-stable (the first k of n documents are the k-document corpus) and lazy (memory flat in n).
Paragraphs are separated by a single newline; documents carry no trailing newline.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from collections.abc import Callable, Iterator
from functools import lru_cache

from lmbench.corpus import lexicon as lx
from lmbench.corpus import templates as T
from lmbench.corpus.reviews import NEG, POS, opinion, rating_for, review_sentences
from lmbench.corpus.world import CURRENT_YEAR, World, world

GENERATOR_VERSION = "1.0"
MIN_WORDS, MAX_WORDS = 50, 400

Paragraphs = Iterator[list[str]]


class _Index:
    """Lookups the generators need beyond the world tables (who works where, what is in which city)."""

    def __init__(self, w: World) -> None:
        self.w = w
        self.staff: dict[str, list] = {}
        for p in w.people:
            self.staff.setdefault(p.employer, []).append(p)
        self.venues_in: dict[str, list] = {}
        for v in w.venues:
            self.venues_in.setdefault(v.city, []).append(v)
        self.events_in: dict[str, list] = {}
        for e in w.events:
            self.events_in.setdefault(e.city, []).append(e)
        self.residents: dict[str, list] = {}
        for p in w.people:
            self.residents.setdefault(p.city, []).append(p)
        self.products_of: dict[str, list] = {}
        for pr in w.products:
            self.products_of.setdefault(pr.maker, []).append(pr)
        self.cities_of = {c.name: [x for x in w.cities if x.country == c.name] for c in w.countries}
        self.companies = [o for o in w.orgs if o.kind == "company"]
        self.clubs = [o for o in w.orgs if o.kind == "club"]
        self.works = {k: [x for x in w.works if x.kind == k] for k in lx.WORK_KINDS}
        self.by_domain = {d: w.pool("people", d) for d in ("sports", "business", "science", "arts", "travel")}
        self.journalists = [p for p in w.people if p.profession in ("journalist", "editor", "novelist")]


@lru_cache(maxsize=4)
def _index(seed: int) -> _Index:
    return _Index(world(seed))


def _stable(text: str) -> int:
    return zlib.crc32(text.encode())


# ----------------------------------------------------------------------------- paragraph builders
def person_par(rng: random.Random, p, n_facts: int = 3, intro: bool = True) -> list[str]:
    keys = [k for k in T.PERSON_FACTS if k != "spouse" or p.spouse]
    rng.shuffle(keys)
    out = [T.fill(rng.choice(T.PERSON_INTRO), p.facts)] if intro else []
    return out + [T.fill(rng.choice(T.PERSON_FACTS[k]), T.with_ref(rng, p.facts, "person")) for k in keys[:n_facts]]


def city_par(rng: random.Random, c, n_facts: int = 3) -> list[str]:
    keys = list(T.CITY_FACTS)
    rng.shuffle(keys)
    out = [T.fill(rng.choice(T.CITY_INTRO), c.facts)]
    for k in keys[:n_facts]:
        if k == "capital" and c.facts["capital"] == c.name:
            out.append(T.fill(rng.choice(("{city} is the capital of {country}.",
                                          "{city} has been the capital of {country} for centuries.")), c.facts))
        else:
            out.append(T.fill(rng.choice(T.CITY_FACTS[k]), T.with_ref(rng, c.facts, "city")))
    return out


def org_par(rng: random.Random, o, n_facts: int = 3) -> list[str]:
    keys = [k for k in T.ORG_FACTS if (k != "ceo" or o.ceo) and (k != "makes" or o.kind == "company")]
    rng.shuffle(keys)
    out = [T.fill(rng.choice(T.ORG_INTRO[o.kind]), o.facts)]
    return out + [T.fill(rng.choice(T.ORG_FACTS[k]), T.with_ref(rng, o.facts, o.kind)) for k in keys[:n_facts]]


def event_par(rng: random.Random, e, n_facts: int = 2) -> list[str]:
    facts = [T.fill(t, e.facts) for t in rng.sample(T.EVENT_FACTS, n_facts)]
    return [T.fill(rng.choice(T.EVENT_INTRO), e.facts)] + facts


def _short_mention(rng: random.Random, p) -> str:
    return rng.choice(("{name}, {a_job} from {city}", "{name}, who works for {employer}",
                       "the {job} {name}")).format_map(p.facts)


# ----------------------------------------------------------------------------- document kinds
def doc_bio(rng: random.Random, ix: _Index, domain: str | None = None) -> Paragraphs:
    p = rng.choice(ix.by_domain[domain] if domain else ix.w.people)
    yield person_par(rng, p, rng.randint(3, 5))
    org = ix.w.by_name[p.employer]
    yield org_par(rng, org, 2)
    mates = [q for q in ix.staff[p.employer] if q is not p]
    if mates:
        q = rng.choice(mates)
        yield [T.fill(rng.choice(("At {employer}, {first} works alongside {colleague}.",
                                  "One of {his} colleagues is {colleague}.")),
                      {**p.facts, "colleague": q.name})] + person_par(rng, q, 2, intro=False)
    if p.spouse:
        yield person_par(rng, ix.w.by_name[p.spouse], 3)
    yield city_par(rng, ix.w.by_name[p.city], 3)


def doc_city(rng: random.Random, ix: _Index, domain: str | None = None) -> Paragraphs:
    c = rng.choice(ix.w.cities)
    yield city_par(rng, c, rng.randint(3, 6))
    venues = ix.venues_in.get(c.name, [])
    if venues:
        v = rng.choice(venues)
        review = review_sentences(rng, "restaurant", v, rating_for(rng, v.quality))
        yield [T.fill(rng.choice(T.VENUE_INTRO), v.facts)] + review[1:3]
    for e in ix.events_in.get(c.name, [])[:2]:
        yield event_par(rng, e, 1)
    people = ix.residents.get(c.name, [])
    if len(people) >= 2:
        a, b = rng.sample(people, 2)
        yield [f"Well-known residents include {_short_mention(rng, a)}, and {_short_mention(rng, b)}."]
    tips = rng.sample(lx.TRAVEL_TIPS, 3)
    yield [f"Visitors are advised to {tips[0]}.", f"Local guides also suggest that you {tips[1]} and {tips[2]}."]


def doc_company(rng: random.Random, ix: _Index, domain: str | None = None) -> Paragraphs:
    o = rng.choice(ix.companies)
    yield org_par(rng, o, rng.randint(3, 5))
    if o.ceo:
        yield person_par(rng, ix.w.by_name[o.ceo], 3)
    for pr in ix.products_of.get(o.name, [])[:2]:
        yield [T.fill(rng.choice(T.PRODUCT_INTRO), pr.facts)]
    staff = [p for p in ix.staff.get(o.name, []) if p.name != o.ceo]
    yield [T.fill(rng.choice(("Among its staff is {name}, {a_job} who {duty}.", "{name} works there as {a_job}.",
                              "{name}, {a_job}, joined the company in {join_year}.")), p.facts)
           for p in rng.sample(staff, min(2, len(staff)))]
    yield city_par(rng, ix.w.by_name[o.city], 2)


_QUOTES = ("We are proud of our staff", "This has been a difficult year for everyone",
           "Our customers want better {makes}", "We expect the next quarter to be good",
           "The market for {makes} is changing fast", "We made some bad decisions")


def doc_business_news(rng: random.Random, ix: _Index, domain: str | None = None) -> Paragraphs:
    o = rng.choice(ix.companies)
    f = o.facts
    year, pct = rng.randint(2005, 2023), rng.randint(2, 40)
    up = rng.random() < 0.5
    yield [T.fill("{org} " + rng.choice(lx.BUSINESS_EVENTS) + " on {day}.", {**f, "day": rng.choice(lx.WEEKDAYS)}),
           f"{rng.choice(lx.BUSINESS_WORDS).capitalize()} {'rose' if up else 'fell'} by {pct} percent in the "
           f"{rng.choice(('first', 'second', 'third', 'fourth'))} quarter of {year}.",
           T.fill('"' + rng.choice(_QUOTES) + '," said {ceo}, who runs the company.', f) if o.ceo else
           T.fill("The company, founded by {founder}, did not comment.", f)]
    analysts = [p for p in ix.by_domain["business"] if p.profession in ("analyst", "economist", "banker")]
    a = rng.choice(analysts or ix.w.people)
    yield [T.fill("{name}, {a_job} at {employer}, said the news was " + ("good" if up else "bad") + " for {place}.",
                  {**a.facts, "place": o.city})]
    yield org_par(rng, o, 3)


def doc_event(rng: random.Random, ix: _Index, domain: str | None = None) -> Paragraphs:
    e = rng.choice(ix.w.pool("events", domain) if domain else ix.w.events)
    year = rng.randint(max(e.founded + 1, 1995), CURRENT_YEAR - 1)
    key = _stable(f"{e.name}:{year}")
    pool = [p for p in ix.by_domain[e.domain] if p.birth_year + 18 <= year
            and (e.domain != "sports" or p.profession in ("runner", "cyclist", "swimmer"))]
    pool = pool or [p for p in ix.w.people if p.birth_year + 18 <= year]
    winner = pool[key % len(pool)]  # the same edition has the same winner in every document
    good = key % 3 != 0  # the same edition is remembered the same way in every document
    f = {**e.facts, "year": str(year), "winner": winner.name}
    out = [T.fill(rng.choice(("The {year} {event} took place in {event_city} in {month}.",
                              "In {month} {year}, the {event} returned to {event_city}.")), f)]
    prize = "won the main prize" if e.domain in ("arts", "science", "business", "travel") else "won the race"
    out.append(T.fill("{winner} " + prize + " at the {year} {event}.", f))
    out.append(opinion(rng, POS if good else NEG, ("weather", "programme", "organisation", "crowd"), f, "verdict"))
    yield out
    guests = rng.sample(pool, min(2, len(pool)))
    yield [rng.choice(("Among the guests was {}.", "{} was also there.", "The crowd included {}.")).format(
        _short_mention(rng, g)) for g in guests]
    yield person_par(rng, winner, 2)
    yield event_par(rng, e, 2)
    yield city_par(rng, ix.w.by_name[e.city], 2)


def doc_match(rng: random.Random, ix: _Index, domain: str | None = None) -> Paragraphs:
    home, away = rng.sample(ix.clubs, 2)
    g1, g2 = rng.randint(0, 4), rng.randint(0, 4)
    f = {**home.facts, "team": home.name, "rival": away.name, "away_city": away.city, "day": rng.choice(lx.WEEKDAYS)}
    if g1 == g2:
        out = [T.fill(f"{{team}} and {{rival}} drew {g1}-{g2} in {{org_city}} on {{day}}.", f)]
    else:
        win, lose = (home, away) if g1 > g2 else (away, home)
        f.update(team=win.name, rival=lose.name)
        verb = rng.choice(lx.MATCH_VERBS_WIN)
        out = [T.fill(f"{{team}} {verb} {{rival}} {max(g1, g2)}-{min(g1, g2)} in {{org_city}} on {{day}}.", f)]
        players = [p for p in ix.staff.get(win.name, []) if p.profession != "coach"]
        if players:
            f["scorer"] = rng.choice(players).name
            moment = rng.choice(lx.MATCH_MOMENTS)
            out.append(T.fill("The decisive goal came from {scorer}, who scored with " + moment + ".", f))
    coaches = [p for p in ix.staff.get(home.name, []) if p.profession == "coach"]
    if coaches:
        f["coach"] = coaches[0].name
        quote = rng.choice(("It was a great night for the fans", "We played badly and we know it",
                            "The boys worked hard", "It was an awful first half"))
        out.append(T.fill('"' + quote + '," said {coach}.', f))
    yield out
    yield org_par(rng, home, 2)
    yield org_par(rng, away, 2)


def doc_science(rng: random.Random, ix: _Index, domain: str | None = None) -> Paragraphs:
    p = rng.choice(ix.by_domain["science"])
    subject = lx.SCIENCE_SUBJECTS[_stable(p.name) % len(lx.SCIENCE_SUBJECTS)]  # each researcher keeps a subject
    f = {**p.facts, "subject": subject, "year": str(rng.randint(2010, 2023)), "month": rng.choice(lx.MONTHS)}
    yield [T.fill("Researchers at {employer} in {org_city} report that {subject} " + rng.choice(lx.SCIENCE_CHANGES)
                  + " " + rng.choice(lx.SCIENCE_CONDITIONS) + ".", f),
           T.fill("The team, led by {name}, " + rng.choice(lx.SCIENCE_METHODS) + ".", f),
           T.fill("The study appeared in {month} {year}.", f),
           T.fill('"' + rng.choice(("We were surprised by the results", "The data tell a clear story",
                                    "There is much more work to do")) + '," said {first}.', f)]
    field = lx.SCIENCE_FIELDS[_stable(p.name + "field") % len(lx.SCIENCE_FIELDS)]
    yield ([T.fill("{name} has studied {subject} for many years.", f), f"{p.facts['His']} field is {field}."]
           + person_par(rng, p, 2, intro=False))
    yield org_par(rng, ix.w.by_name[p.employer], 2)


def doc_work(rng: random.Random, ix: _Index, domain: str | None = None) -> Paragraphs:
    wk = rng.choice(ix.w.works)
    verdict = "praised it" if wk.quality >= 3.5 else "were divided" if wk.quality >= 2.5 else "disliked it"
    yield [T.fill(rng.choice(T.WORK_INTRO), wk.facts), f"Critics {verdict}."]
    critic = rng.choice(ix.journalists)
    yield [T.fill("{name}, {a_job} from {city}, wrote a review.", critic.facts)] + review_sentences(
        rng, wk.kind, wk, rating_for(rng, wk.quality))[1:]
    yield person_par(rng, ix.w.by_name[wk.creator], 3)


def doc_review(rng: random.Random, ix: _Index, domain: str | None = None) -> Paragraphs:
    kinds = ("film", "book", "album") if domain == "arts" else ("restaurant",) if domain == "travel" else (
        "film", "book", "album", "restaurant", "product")
    kind = rng.choice(kinds)
    ent = (rng.choice(ix.w.venues) if kind == "restaurant" else rng.choice(ix.w.products) if kind == "product"
           else rng.choice(ix.works[kind]))
    yield review_sentences(rng, kind, ent, rating_for(rng, ent.quality))
    if rng.random() < 0.5:  # a second reader, without repeating the opener
        yield [rng.choice(("Another reader wrote:", "A second review:"))] + review_sentences(
            rng, kind, ent, rating_for(rng, ent.quality))[1:]
    if kind == "restaurant":
        yield [T.fill(rng.choice(T.VENUE_INTRO), ent.facts)] + city_par(rng, ix.w.by_name[ent.city], 2)
    elif kind == "product":
        yield [T.fill(rng.choice(T.PRODUCT_INTRO), ent.facts)] + org_par(rng, ix.w.by_name[ent.maker], 2)
    else:
        yield [T.fill(rng.choice(T.WORK_INTRO), ent.facts)] + person_par(rng, ix.w.by_name[ent.creator], 2)


def doc_country(rng: random.Random, ix: _Index, domain: str | None = None) -> Paragraphs:
    c = rng.choice(ix.w.countries)
    cities = ix.cities_of[c.name]
    others = rng.sample(cities[1:], min(3, len(cities) - 1))
    yield [T.fill("{country} is a country with {n_cities} large towns and cities.", c.facts),
           T.fill("Its capital is {capital}, and people there speak {language}.", c.facts),
           "Other cities include " + ", ".join(x.name for x in others[:-1]) + f" and {others[-1].name}."]
    yield city_par(rng, ix.w.by_name[c.capital], 3)
    for x in others[:2]:
        yield city_par(rng, x, 2)


def doc_index(rng: random.Random, ix: _Index, domain: str | None = None) -> Paragraphs:
    w = ix.w
    p, c, o, e = rng.choice(w.people), rng.choice(w.cities), rng.choice(w.orgs), rng.choice(w.events)
    yield ["Index of names in this issue.",
           T.fill("{name} is a person, {a_job} in {city}.", p.facts),
           T.fill("{city} is a location in {country}.", c.facts),
           T.fill("{org} is an organization based in {org_city}.", o.facts),
           T.fill("The {event} is an event, listed under miscellaneous.", e.facts),
           T.fill("In these records, {name} is a type of person, {city} a type of location, and {org} a type of "
                  "organization.", {**p.facts, "city": c.name, "org": o.name})]
    yield person_par(rng, p, 2)
    yield city_par(rng, c, 2)
    yield org_par(rng, o, 2)


DOC_KINDS: tuple[tuple[Callable[..., Paragraphs], float], ...] = (
    (doc_bio, 16), (doc_city, 12), (doc_company, 9), (doc_business_news, 8), (doc_event, 10), (doc_match, 8),
    (doc_science, 8), (doc_work, 7), (doc_review, 16), (doc_country, 3), (doc_index, 3))
_FUNCS = tuple(k for k, _ in DOC_KINDS)
_WEIGHTS = tuple(wt for _, wt in DOC_KINDS)


def _filler(rng: random.Random, ix: _Index) -> Paragraphs:
    while True:
        r = rng.random()
        yield (person_par(rng, rng.choice(ix.w.people), 3) if r < 0.4 else city_par(rng, rng.choice(ix.w.cities), 3)
               if r < 0.7 else org_par(rng, rng.choice(ix.w.orgs), 3))


def assemble(rng: random.Random, ix: _Index, paragraphs: Paragraphs, target: int) -> str:
    """Join paragraphs until about `target` words, never past MAX_WORDS; pads short kinds with related facts."""
    out, words = [], 0
    for par in _chain(paragraphs, _filler(rng, ix)):
        kept = []
        for s in par:
            n = s.count(" ") + 1
            if words + n > MAX_WORDS:
                break
            kept.append(s)
            words += n
        if kept:
            out.append(" ".join(kept))
        if words >= target or len(kept) < len(par):
            break
    return "\n".join(out)


def _chain(a: Paragraphs, b: Paragraphs) -> Paragraphs:
    yield from a
    yield from b


_SECTION = {doc_city: "travel", doc_company: "business", doc_business_news: "business", doc_match: "sports",
            doc_science: "science", doc_work: "arts"}
_SECTION_LINES = ("From our {} section.", "This story is about {}.", "More {} news.", "A report on {}.")


def document(seed: int, index: int) -> str:
    """Document number `index` of the corpus for `seed` (independent of how many are generated)."""
    rng = T.Rng(f"{seed}:{index}")
    ix = _index(seed)
    kind = rng.choices(_FUNCS, _WEIGHTS)[0]
    target = int(rng.triangular(MIN_WORDS + 10, 380, 140))
    paragraphs = kind(rng, ix)
    if kind in _SECTION and rng.random() < 0.2:  # topic words in context, for zero-shot topic prompts
        paragraphs = _chain(iter([[rng.choice(_SECTION_LINES).format(_SECTION[kind])]]), paragraphs)
    return assemble(rng, ix, paragraphs, max(target, MIN_WORDS))


def generate_documents(n_documents: int, seed: int = 0) -> Iterator[str]:
    """Deterministic, prefix-stable, lazy stream of `n_documents` documents (50-400 words each)."""
    if n_documents < 0:
        raise ValueError(f"n_documents must be >= 0, got {n_documents}")
    return (document(seed, i) for i in range(n_documents))


def corpus_fingerprint(n_documents: int, seed: int) -> str:
    """Stable hash of (GENERATOR_VERSION, n_documents, seed): names a cached tokenized corpus."""
    return hashlib.sha256(f"lmbench-corpus|{GENERATOR_VERSION}|{n_documents}|{seed}".encode()).hexdigest()[:16]
