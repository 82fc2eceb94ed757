"""Review language shared by the corpus documents and the sentiment set.

One grammar of opinion serves both, so what a model reads in pretraining (reviews whose words agree
with their rating, "not great", "the soup was good, but the service was awful", "because it was
terrible") is exactly the kind of evidence the sentiment task asks about. Labels follow fixed rules a
reader can apply: a "but"/"although" sentence takes the polarity of its main clause, "not" flips.
"""

from __future__ import annotations

import random

from lmbench.corpus import lexicon as lx

POS, NEG = 1, 0
_WORDS = {POS: lx.POSITIVE_WORDS, NEG: lx.NEGATIVE_WORDS}
_STRONG = {POS: lx.STRONG_POSITIVE, NEG: lx.STRONG_NEGATIVE}

OPENERS = {
    "film": ("I watched {title} last {weekday}.", "Last week we went to see {title}, {a_genre} film by {creator}.",
             "{title} is {a_genre} film from {year}.", "I finally saw {title} at a small cinema in {creator_city}."),
    "book": ("I finished {title} by {creator} over the weekend.", "{title} is {a_genre} book by {creator}.",
             "A friend lent me {title}, which {creator} wrote in {year}."),
    "album": ("I have been listening to {title} by {creator} all week.", "{title} is {a_genre} album from {year}.",
              "{creator} recorded {title} in {year}."),
    "restaurant": ("We had dinner at {venue} in {venue_city} last {weekday}.",
                   "I had lunch at {venue}, a {cuisine} place in {venue_city}.",
                   "{venue} is a {cuisine} restaurant in {venue_city}.",
                   "We booked a table at {venue} for a birthday."),
    "product": ("I bought the {product} in {month}.", "I have used the {product} from {maker} for {n} weeks.",
                "The {product} is a {category} made by {maker}.", "My old {category} broke, so I got the {product}."),
}
ASPECT = (
    "The {aspect} was {i}{w}.", "I found the {aspect} {i}{w}.", "Honestly, the {aspect} felt {i}{w}.",
    "The {aspect} is {i}{w}.", "To me the {aspect} seemed {i}{w}.",
    "The {aspect} was {i}{w} and the {aspect2} was {w2}.",
    "Both the {aspect} and the {aspect2} were {i}{w}.",
)
NEGATED = {
    POS: ("The {aspect} was not {o} at all.", "It was not bad, in fact it was {i}{w}.",
          "Nothing about the {aspect} was {o}.",
          "I expected the {aspect} to be {o}, but it was not.", "It was not {o} for a single moment."),
    NEG: ("The {aspect} was not {o}.", "It was not good at all.", "I cannot say the {aspect} was {o}.",
          "The {aspect} was not {o}, not even close.", "It was not great, and the {aspect} was not {o} either."),
}
MIXED = {  # the main clause carries the label
    POS: ("The {aspect} was {o}, but the {aspect2} was {i}{w}.",
          "Although the {aspect} was {o}, the {aspect2} was {i}{w}.",
          "The {aspect2} was {i}{w}, even if the {aspect} was a little {o}.",
          "Yes, the {aspect} was {o}, but overall it was {w}."),
    NEG: ("The {aspect} was {o}, but the {aspect2} was {i}{w}.",
          "Although the {aspect} was {o}, the {aspect2} was {i}{w}.",
          "The {aspect2} was {i}{w}, even if the {aspect} was {o}.",
          "Yes, the {aspect} was {o}, but overall it was {w}."),
}
VERDICT = {
    POS: ("Overall, it was {s}.", "I would happily go back, because it was {s}.",
          "Because it was {s}, I told all my friends.",
          "It was {s}.", "Highly recommended.", "In short, it was {s}.", "We loved it because it was {s}."),
    NEG: ("Overall, it was {s}.", "Because it was {s}, we left early.", "I would not recommend it.", "It was {s}.",
          "Avoid it.", "In short, it was {s}.", "We regretted it because it was {s}."),
}
SUBTLE = {  # opinions without sentiment words: generic ones, then per kind
    POS: ("Worth every penny.", "I was smiling the whole time.", "I have already recommended it to everyone I know."),
    NEG: ("I want my money back.", "Never again.", "What a waste of an evening."),
}
SUBTLE_KIND = {
    "film": {POS: "I would watch it again tomorrow.", NEG: "I fell asleep halfway through."},
    "book": {POS: "I could not put it down.", NEG: "I gave up after three chapters."},
    "album": {POS: "I have had it on repeat all week.", NEG: "I skipped most of the tracks."},
    "restaurant": {POS: "I would go back tomorrow.", NEG: "We left before dessert."},
    "product": {POS: "I use it every single day.", NEG: "It went straight back to the shop."},
}
RATING_LINE = ("I give it {rating} out of five.", "Rating: {rating} out of 5.", "{rating} stars out of five.")


def target_facts(kind: str, entity) -> tuple[dict, tuple[str, ...]]:
    """Slot values and aspect words for reviewing `entity` (a Work, Venue or Product)."""
    if kind == "restaurant":
        return entity.facts, lx.ASPECTS["restaurant"]
    if kind == "product":
        return entity.facts, lx.PRODUCT_KINDS[entity.category][1]
    return entity.facts, lx.ASPECTS[kind]


def _slots(rng: random.Random, label: int, aspects: tuple[str, ...], facts: dict) -> dict:
    a, a2 = rng.sample(aspects, 2)
    w = rng.choice(_WORDS[label])
    i = "" if w in _STRONG[label] else rng.choice(lx.INTENSIFIERS)  # no "very excellent"
    return {**facts, "aspect": a, "aspect2": a2, "i": i, "w": w,
            "w2": rng.choice(_WORDS[label]), "o": rng.choice(_WORDS[1 - label]), "s": rng.choice(_STRONG[label]),
            "weekday": rng.choice(lx.WEEKDAYS), "month": rng.choice(lx.MONTHS), "n": str(rng.randint(2, 12))}


def _say(template: str, slots: dict) -> str:
    s = template.format_map(slots)
    return s[0].upper() + s[1:]


def opinion(rng: random.Random, label: int, aspects: tuple[str, ...], facts: dict, style: str,
            kind: str = "") -> str:
    """One opinion sentence of `style` ("aspect", "negated", "mixed", "verdict", "subtle") with polarity `label`."""
    if style == "subtle":
        own = SUBTLE_KIND.get(kind)
        return own[label] if own and rng.random() < 0.5 else rng.choice(SUBTLE[label])
    pool = {"aspect": ASPECT, "negated": NEGATED[label], "mixed": MIXED[label], "verdict": VERDICT[label]}[style]
    return _say(rng.choice(pool), _slots(rng, label, aspects, facts))


def review_sentences(rng: random.Random, kind: str, entity, rating: int) -> list[str]:
    """A review of `entity` as a list of sentences whose opinion agrees with `rating` (1..5)."""
    facts, aspects = target_facts(kind, entity)
    out = [_say(rng.choice(OPENERS[kind]), _slots(rng, POS, aspects, facts))]
    if rating == 3:
        out.append(opinion(rng, POS, aspects, facts, "aspect"))
        out.append(opinion(rng, NEG, aspects, facts, "aspect"))
        out.append(rng.choice(("It was fine, nothing more.", "Neither good nor bad.",
                               "An average experience overall.")))
    else:
        label = POS if rating >= 4 else NEG
        for _ in range(rng.randint(1, 3)):
            out.append(opinion(rng, label, aspects, facts, rng.choice(("aspect", "aspect", "aspect", "negated",
                                                                       "mixed"))))
        out.append(opinion(rng, label, aspects, facts, rng.choice(("verdict", "verdict", "subtle")), kind))
    if rng.random() < 0.5:
        out.append(rng.choice(RATING_LINE).format(rating=rating))
    return out


def rating_for(rng: random.Random, quality: float) -> int:
    """A reviewer's star rating: the entity's quality plus personal taste, clipped to 1..5."""
    return max(1, min(5, round(quality + rng.gauss(0.0, 0.7))))


def sentiment_text(rng: random.Random, label: int, kind: str, entity) -> str:
    """A short labelled review (1-3 sentences) for the sentiment set; no star ratings in the text."""
    facts, aspects = target_facts(kind, entity)
    r = rng.random()
    style = "aspect" if r < 0.40 else "negated" if r < 0.60 else "mixed" if r < 0.87 else "subtle"
    parts = []
    if rng.random() < 0.4:
        parts.append(_say(rng.choice(OPENERS[kind]), _slots(rng, POS, aspects, facts)))
    parts.append(opinion(rng, label, aspects, facts, style, kind))
    if style != "aspect" and rng.random() < 0.25:
        parts.append(opinion(rng, label, aspects, facts, rng.choice(("verdict", "subtle")), kind))
    elif style == "aspect" and rng.random() < 0.4:
        parts.append(opinion(rng, label, aspects, facts, "verdict"))
    return " ".join(parts)
