"""The entities of the built-in corpus: one fixed, seeded world that every document talks about.

A language model can only learn facts if the same facts recur, so each entity is built once from the
seed and keeps its attributes (a person's home city, profession and employer; a company's industry and
headquarters; a film's director and quality) in every document that mentions it. Each entity carries
`facts`, the slot values its sentence templates are filled with.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache

from lmbench.corpus import lexicon as lx

CURRENT_YEAR = 2024


@dataclass(frozen=True)
class Country:
    name: str
    nationality: str  # also the name of the language spoken there
    capital: str
    facts: dict = field(compare=False, repr=False)


@dataclass(frozen=True)
class City:
    name: str
    country: str
    population: int
    founded: int
    river: str
    facts: dict = field(compare=False, repr=False)


@dataclass(frozen=True)
class Organisation:
    name: str
    kind: str  # "company", "university" or "club"
    industry: str
    city: str
    founded: int
    ceo: str  # "" when nobody in the world leads it
    facts: dict = field(compare=False, repr=False)


@dataclass(frozen=True)
class Person:
    name: str
    gender: str  # "f" or "m": drives pronoun agreement
    birth_year: int
    birth_city: str
    city: str  # home city
    profession: str
    employer: str
    spouse: str  # "" when unmarried
    facts: dict = field(compare=False, repr=False)


@dataclass(frozen=True)
class Event:
    name: str  # without the article: "Velmora Jazz Festival"
    domain: str  # sports, business, science, arts or travel
    city: str
    month: str
    founded: int
    facts: dict = field(compare=False, repr=False)


@dataclass(frozen=True)
class Work:
    title: str
    kind: str  # film, book or album
    genre: str
    creator: str
    year: int
    quality: float  # mean review rating, 1..5
    facts: dict = field(compare=False, repr=False)


@dataclass(frozen=True)
class Venue:
    """A restaurant (reviewed like works; tagged ORG)."""
    name: str
    city: str
    cuisine: str
    quality: float
    facts: dict = field(compare=False, repr=False)


@dataclass(frozen=True)
class Product:
    name: str
    category: str
    maker: str
    year: int
    quality: float
    facts: dict = field(compare=False, repr=False)


@dataclass(frozen=True)
class World:
    seed: int
    countries: tuple[Country, ...]
    cities: tuple[City, ...]
    orgs: tuple[Organisation, ...]
    people: tuple[Person, ...]
    events: tuple[Event, ...]
    works: tuple[Work, ...]
    venues: tuple[Venue, ...]
    products: tuple[Product, ...]
    by_name: dict = field(compare=False, repr=False)  # name -> entity, for every named entity

    def pool(self, kind: str, domain: str | None = None) -> tuple:
        """Entities of one kind ("people", "orgs", "events", ...), optionally of one domain."""
        if domain is None:
            return getattr(self, kind)
        return self.by_name[f"__{kind}:{domain}"]


def article(word: str) -> str:
    """'a' or 'an' before `word`."""
    return "an" if word[0].lower() in "aeiou" and not word.startswith("uni") else "a"


def _plural(word: str) -> str:
    return word + "es" if word.endswith(("ch", "sh", "s")) else word + "s"


class _Namer:
    """Composes unique pronounceable names from syllables; never repeats a name across the world."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set(w.lower() for w in lx.TITLE_NOUNS + lx.TITLE_ADJECTIVES + lx.MODEL_WORDS)

    def stem(self, syllables: int = 1) -> str:
        r = self.rng
        return "".join(r.choice(lx.ONSETS) + r.choice(lx.VOWELS) + r.choice(lx.CODAS) for _ in range(syllables))

    def make(self, endings: tuple[str, ...], syllables: tuple[int, ...] = (1, 1, 1, 1, 2)) -> str:
        while True:
            word = self.stem(self.rng.choice(syllables)) + self.rng.choice(endings)
            word = word.replace("yy", "y").replace("aa", "a").replace("ii", "i").replace("uu", "u")
            if 3 <= len(word) <= 11 and word not in self.used:
                self.used.add(word)
                return word.capitalize()


def _nationality(country: str) -> str:
    if country.endswith("ia"):
        return country + "n"
    if country.endswith("land"):
        return country[:-4] + "ish"
    if country.endswith(("a", "e")):
        return country[:-1] + "ese"
    return country + "ian"


def _a_kind_word(org: dict) -> str:
    word = {"company": f"{org['industry']} company", "university": "university",
            "club": f"{org['makes']} club"}[org["kind"]]
    return f"{article(word)} {word}"


def _person_facts(p: dict, org: dict, cities: dict[str, City]) -> dict:
    f = p["gender"] == "f"
    job = p["profession"]
    duties = lx.PROFESSION_TABLE[job][2]
    nat = cities[p["city"]].facts["nationality"]
    return {
        "name": p["name"], "first": p["first"], "last": p["last"],
        "He": "She" if f else "He", "he": "she" if f else "he", "His": "Her" if f else "His",
        "his": "her" if f else "his", "him": "her" if f else "him",
        "job": job, "a_job": f"{article(job)} {job}", "jobs": _plural(job), "duty": duties[0], "duty2": duties[1],
        "city": p["city"], "country": cities[p["city"]].country,
        "nationality": nat, "a_nationality": f"{article(nat)} {nat}",
        "birth_city": p["birth_city"], "birth_year": str(p["birth_year"]), "age": str(CURRENT_YEAR - p["birth_year"]),
        "years_in_city": str(p["years_in_city"]), "join_year": str(p["join_year"]),
        "employer": org["name"], "industry": org["industry"], "org_city": org["city"],
        "a_org_kind": _a_kind_word(org),
        "hobby": p["hobby"], "spouse": p["spouse"],
    }


def _build(seed: int) -> World:
    rng = random.Random(f"lmbench-world:{seed}")
    namer = _Namer(rng)
    by_name: dict = {}

    # Countries and cities.
    countries, cities = [], []
    for _ in range(16):
        cname = namer.make(lx.COUNTRY_ENDINGS, (1,))
        nat = _nationality(cname)
        members = []
        for j in range(rng.randint(6, 11)):
            size = rng.choice(lx.SIZE_WORDS)
            pop = rng.choice((2, 5, 8, 12, 20, 35, 60, 90, 150, 400, 900)) * 1000 + rng.randrange(0, 1000, 50)
            if j == 0:
                pop = rng.randint(400, 2500) * 1000
            name = namer.make(lx.CITY_ENDINGS)
            river = namer.make(lx.RIVER_ENDINGS, (1,)) + " River"
            landmarks = rng.sample(lx.LANDMARKS, 2)
            facts = {
                "city": name, "country": cname, "nationality": nat, "language": nat,
                "a_size": f"{article(size)} {size}", "population": f"{pop:,}",
                "founded": str(rng.randint(900, 1850)), "river": river,
                "direction": rng.choice(lx.DIRECTIONS), "known_for": rng.choice(lx.KNOWN_FOR),
                "landmark": landmarks[0], "landmark2": landmarks[1], "climate": rng.choice(lx.CLIMATES),
                "season": rng.choice(lx.SEASONS), "capital": "",
            }
            members.append(City(name, cname, pop, int(facts["founded"]), river, facts))
        for c in members:
            c.facts["capital"] = members[0].name
        cfacts = {"country": cname, "nationality": nat, "language": nat, "capital": members[0].name,
                  "n_cities": str(len(members)), "city": members[0].name}
        countries.append(Country(cname, nat, members[0].name, cfacts))
        cities.extend(members)
    city_by_name = {c.name: c for c in cities}
    big_cities = sorted(cities, key=lambda c: -c.population)[:40]

    # Organisations (mutable specs first: the CEO is picked among employees later).
    orgs: list[dict] = []
    for industry, (suffixes, makes) in lx.INDUSTRIES.items():
        for _ in range(9):
            city = rng.choice(big_cities if rng.random() < 0.6 else cities).name
            if rng.random() < 0.25:
                name = f"{city} {rng.choice(suffixes)}"
            else:
                name = f"{namer.make(lx.BRAND_ENDINGS, (1,))} {rng.choice(suffixes)}"
            if name in by_name:
                continue
            orgs.append({"name": name, "kind": "company", "industry": industry, "city": city,
                         "makes": rng.choice(makes)})
            by_name[name] = None
    for c in big_cities[:24]:
        name = rng.choice((f"{c.name} Institute of Technology", f"{c.name} University", f"{c.name} University"))
        orgs.append({"name": name, "kind": "university", "industry": "university", "city": c.name,
                     "makes": "research"})
    for c in rng.sample(big_cities, 30):
        name = f"{c.name} {rng.choice(lx.CLUB_SUFFIXES)}"
        orgs.append({"name": name, "kind": "club", "industry": "club", "city": c.name,
                     "makes": rng.choice(lx.SPORTS)})
    for o in orgs:
        o["founded"] = rng.randint(1965 if o["industry"] in ("software", "telecom", "electronics") else 1850, 2015)
        o["founder"] = f"{namer.make(lx.MALE_ENDINGS + lx.FEMALE_ENDINGS)} {namer.make(lx.SURNAME_ENDINGS)}"
        sizes = (40, 120, 300, 850, 2400, 6000, 15000) if o["kind"] == "company" else (60, 150, 400, 1200)
        o["employees"] = rng.choice(sizes)
        o["staff"] = []
    orgs_by_industry: dict[str, list[dict]] = {}
    for o in orgs:
        orgs_by_industry.setdefault(o["industry"], []).append(o)

    # People: unique first+last combinations, employed where their profession fits.
    firsts_f = [namer.make(lx.FEMALE_ENDINGS, (1,)) for _ in range(180)]
    firsts_m = [namer.make(lx.MALE_ENDINGS, (1,)) for _ in range(180)]
    lasts = [namer.make(lx.SURNAME_ENDINGS) for _ in range(420)]
    specs, seen = [], set()
    while len(specs) < 900:
        gender = rng.choice("fm")
        first = rng.choice(firsts_f if gender == "f" else firsts_m)
        last = rng.choice(lasts)
        if (first, last) in seen:
            continue
        seen.add((first, last))
        job, domain, industries, _ = rng.choice(lx.PROFESSIONS)
        org = rng.choice(orgs_by_industry[rng.choice(industries)])
        home = org["city"] if rng.random() < 0.75 else rng.choice(cities).name
        birth_year = rng.randint(1945, 2002)
        p = {"first": first, "last": last, "name": f"{first} {last}", "gender": gender, "profession": job,
             "domain": domain, "employer": org["name"], "city": home, "birth_year": birth_year,
             "birth_city": home if rng.random() < 0.3 else rng.choice(cities).name,
             "years_in_city": rng.randint(2, 30),
             "join_year": rng.randint(max(org["founded"], birth_year + 20), CURRENT_YEAR),
             "hobby": rng.choice(lx.HOBBIES), "spouse": ""}
        org["staff"].append(p)
        specs.append(p)
    for a, b in zip(specs[0:300:2], specs[1:300:2]):  # marriage is symmetric
        a["spouse"], b["spouse"] = b["name"], a["name"]
    org_by_name = {o["name"]: o for o in orgs}
    people = tuple(Person(p["name"], p["gender"], p["birth_year"], p["birth_city"], p["city"], p["profession"],
                          p["employer"], p["spouse"], _person_facts(p, org_by_name[p["employer"]], city_by_name))
                   for p in specs)

    final_orgs = []
    for o in orgs:
        leaders = [p for p in o["staff"] if p["domain"] == "business"] or o["staff"]
        ceo = leaders[0]["name"] if leaders else ""
        facts = {"org": o["name"], "kind": o["kind"], "a_org_kind": _a_kind_word(o),
                 "industry": o["industry"], "org_city": o["city"], "country": city_by_name[o["city"]].country,
                 "founded": str(o["founded"]), "founder": o["founder"], "ceo": ceo,
                 "employees": f"{o['employees']:,}", "makes": o["makes"], "n_staff": str(len(o["staff"]))}
        final_orgs.append(Organisation(o["name"], o["kind"], o["industry"], o["city"], o["founded"], ceo, facts))
    orgs_t = tuple(final_orgs)

    # Events, each held in one city in one month since one year.
    themes = {"arts": ("Jazz Festival", "Film Festival", "Book Fair", "Lantern Festival", "Folk Music Festival",
                       "Theatre Festival", "Poetry Festival"),
              "sports": ("Marathon", "Cup", "Cycling Race", "Open", "Regatta"),
              "science": ("Science Week", "Conference on Ecology", "Symposium on Physics", "Congress of Medicine"),
              "business": ("Trade Fair", "Business Summit", "Investment Forum", "Harvest Market"),
              "travel": ("Food Festival", "Spring Fair", "Wine Festival", "Flower Show")}
    events = []
    for domain, names in themes.items():
        for _ in range(20):
            c = rng.choice(cities)
            name = f"{c.name} {rng.choice(names)}"
            if name in by_name:
                continue
            founded = rng.randint(1900, 2015)
            facts = {"event": name, "event_city": c.name, "country": c.country, "month": rng.choice(lx.MONTHS),
                     "founded": str(founded), "attendance": f"{rng.choice((2, 5, 10, 25, 60, 120)) * 1000:,}",
                     "domain": domain}
            events.append(Event(name, domain, c.name, facts["month"], founded, facts))
            by_name[name] = None

    # Works, venues and products: reviewable, each with a fixed quality that reviews agree with.
    people_by_job: dict[str, list[Person]] = {}
    for p in people:
        people_by_job.setdefault(p.profession, []).append(p)
    works, titles = [], set()
    for kind, (jobs, genres, verb) in lx.WORK_KINDS.items():
        for _ in range(110):
            form = rng.random()
            a, n, n2 = rng.choice(lx.TITLE_ADJECTIVES), rng.choice(lx.TITLE_NOUNS), rng.choice(lx.TITLE_NOUNS)
            place, person = rng.choice(cities).name, rng.choice(firsts_f + firsts_m)
            title = (f"The {a} {n}" if form < 0.45 else f"{a} {n}" if form < 0.6 else f"The {n} of {place}"
                     if form < 0.75 else f"A {n} for {person}" if form < 0.88 else f"{n} and {n2}")
            if title in titles or n == n2:
                continue
            titles.add(title)
            creator = rng.choice(people_by_job[rng.choice(jobs)])
            year = rng.randint(max(1960, creator.birth_year + 18), 2023)
            quality = round(rng.uniform(1.0, 5.0), 2)
            genre = rng.choice(genres)
            facts = {"title": title, "work_kind": kind, "genre": genre, "a_genre": f"{article(genre)} {genre}",
                     "creator": creator.name, "creator_city": creator.city, "year": str(year), "verb": verb,
                     "cHe": creator.facts["He"], "chis": creator.facts["his"]}
            works.append(Work(title, kind, genre, creator.name, year, quality, facts))
    venues = []
    for _ in range(120):
        c = rng.choice(cities)
        form = rng.random()
        adj = rng.choice(lx.TITLE_ADJECTIVES)
        noun = rng.choice(("Spoon", "Table", "Kettle", "Oven", "Fork", "Lantern"))
        name = (f"The {adj} {noun}" if form < 0.4 else f"{rng.choice(firsts_f + firsts_m)}'s Kitchen" if form < 0.7
                else f"Cafe {namer.make(lx.BRAND_ENDINGS)}")
        if name in by_name:
            continue
        by_name[name] = None
        cuisine = rng.choice(lx.CUISINES)
        facts = {"venue": name, "venue_city": c.name, "country": c.country, "cuisine": cuisine,
                 "dish": rng.choice(lx.DISHES), "quality": ""}
        venues.append(Venue(name, c.name, cuisine, round(rng.uniform(1.0, 5.0), 2), facts))
    products = []
    for _ in range(100):
        category = rng.choice(tuple(lx.PRODUCT_KINDS))
        maker = rng.choice([o for o in orgs_t if o.industry in lx.PRODUCT_KINDS[category][0]])
        name = f"{maker.name.split()[0]} {rng.choice(lx.MODEL_WORDS)} {rng.randint(2, 9)}"
        if name in by_name:
            continue
        by_name[name] = None
        year = rng.randint(2012, 2024)
        facts = {"product": name, "category": category, "maker": maker.name, "maker_city": maker.city,
                 "year": str(year), "price": str(rng.choice((19, 39, 49, 89, 129, 249, 499, 899)))}
        products.append(Product(name, category, maker.name, year, round(rng.uniform(1.0, 5.0), 2), facts))

    for table in (countries, cities, orgs_t, people, events, works, venues, products):
        for e in table:
            by_name[getattr(e, "name", None) or e.title] = e
    for domain in themes:
        by_name[f"__people:{domain}"] = tuple(p for p in people if lx.PROFESSION_TABLE[p.profession][0] == domain)
        by_name[f"__events:{domain}"] = tuple(e for e in events if e.domain == domain)
    return World(seed, tuple(countries), tuple(cities), orgs_t, people, tuple(events), tuple(works),
                 tuple(venues), tuple(products), by_name)


@lru_cache(maxsize=4)
def world(seed: int = 0) -> World:
    """The entity tables for `seed` (built once, then cached). Same seed -> same world."""
    return _build(seed)
