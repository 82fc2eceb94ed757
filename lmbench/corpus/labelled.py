"""Labelled downstream sets drawn from the same world as the corpus: sentiment, topic and NER.

Because the entities, templates and review language are those of pretraining, a model that learned the
corpus has something to transfer. Splits are disjoint by construction: every candidate text is assigned
to train/dev/test by a hash of its own content (80/10/10), so the same text can never land in two
splits, and duplicates inside a split are dropped. `seed` selects the world (use the corpus seed) and
the sampling stream; `split` selects the hash bucket.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

from lmbench.corpus import documents as D
from lmbench.corpus import templates as T
from lmbench.corpus.reviews import sentiment_text
from lmbench.corpus.world import world

SENTIMENT_LABELS = ("negative", "positive")
TOPIC_LABELS = ("sports", "business", "science", "arts", "travel")
NER_TYPES = ("PER", "LOC", "ORG", "MISC")
SPLITS = ("train", "dev", "test")
_BUCKETS = {"train": range(0, 8), "dev": range(8, 9), "test": range(9, 10)}


@dataclass(frozen=True)
class SentimentExample:
    """A text and its class index (into SENTIMENT_LABELS, or TOPIC_LABELS for topic examples)."""
    text: str
    label: int


@dataclass(frozen=True)
class NerExample:
    """Tokens (punctuation split off) and their IOB2 tags over NER_TYPES."""
    tokens: tuple[str, ...]
    tags: tuple[str, ...]


def _check(n: int, split: str) -> None:
    if split not in _BUCKETS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")


def _in_split(text: str, split: str) -> bool:
    return zlib.crc32(text.encode()) % 10 in _BUCKETS[split]


def _balanced(n: int, n_labels: int, seed: int, task: str, split: str,
              make: Callable[[T.Rng, int], str]) -> list[SentimentExample]:
    """n examples, labels as equal as possible, each text unique and hashed into `split`."""
    _check(n, split)
    rng = T.Rng(f"{task}:{seed}:{split}")
    seen: set[str] = set()
    out = []
    for i in range(n):
        label = i % n_labels
        for _ in range(10_000):
            text = make(rng, label)
            if text not in seen and _in_split(text, split):
                break
        else:
            raise RuntimeError(f"{task}: could not draw {n} distinct {split} examples; ask for fewer")
        seen.add(text)
        out.append(SentimentExample(text, label))
    rng.shuffle(out)
    return out


def sentiment_examples(n: int, seed: int = 0, split: str = "train") -> list[SentimentExample]:
    """`n` short reviews of world entities labelled 0=negative / 1=positive, balanced.

    Styles mix plain opinions, negation ("not great"), contrast ("the soup was good, but the service was
    awful": the main clause decides) and opinions without sentiment words, so a bag of words helps but
    does not solve it.
    """
    w = world(seed)
    works = {k: [x for x in w.works if x.kind == k] for k in ("film", "book", "album")}

    def make(rng: T.Rng, label: int) -> str:
        kind = rng.choice(("film", "book", "album", "restaurant", "product"))
        ent = rng.choice(w.venues if kind == "restaurant" else w.products if kind == "product" else works[kind])
        return sentiment_text(rng, label, kind, ent)

    return _balanced(n, 2, seed, "sentiment", split, make)


_TOPIC_SOURCES = {
    "sports": (D.doc_match, D.doc_match, D.doc_event, D.doc_bio),
    "business": (D.doc_business_news, D.doc_company, D.doc_event, D.doc_bio),
    "science": (D.doc_science, D.doc_science, D.doc_event, D.doc_bio),
    "arts": (D.doc_work, D.doc_review, D.doc_event, D.doc_bio),
    "travel": (D.doc_city, D.doc_review, D.doc_event, D.doc_bio),
}


def topic_examples(n: int, seed: int = 0, split: str = "train") -> list[SentimentExample]:
    """`n` short passages (2-4 sentences) labelled with their topic (index into TOPIC_LABELS), balanced."""
    ix = D._index(seed)

    def make(rng: T.Rng, label: int) -> str:
        topic = TOPIC_LABELS[label]
        par = next(rng.choice(_TOPIC_SOURCES[topic])(rng, ix, topic))
        return " ".join(par[: rng.randint(2, 4)])

    return _balanced(n, len(TOPIC_LABELS), seed, "topic", split, make)


def _ner_sentence(rng: T.Rng, seed: int) -> tuple[list[str], list[str]]:
    w = world(seed)
    r = rng.random()
    if r < 0.3:
        p = rng.choice(w.people)
        if rng.random() < 0.35:
            return T.fill_tagged(rng.choice(T.PERSON_INTRO), p.facts)
        keys = [k for k in T.PERSON_FACTS if k != "spouse" or p.spouse]
        return T.fill_tagged(rng.choice(T.PERSON_FACTS[rng.choice(keys)]), T.with_ref(rng, p.facts, "person"), "PER")
    if r < 0.5:
        c = rng.choice(w.cities)
        if rng.random() < 0.35:
            return T.fill_tagged(rng.choice(T.CITY_INTRO), c.facts)
        return T.fill_tagged(rng.choice(T.CITY_FACTS[rng.choice(tuple(T.CITY_FACTS))]), T.with_ref(rng, c.facts,
                                                                                                   "city"), "LOC")
    if r < 0.68:
        o = rng.choice(w.orgs)
        if rng.random() < 0.35:
            return T.fill_tagged(rng.choice(T.ORG_INTRO[o.kind]), o.facts)
        keys = [k for k in T.ORG_FACTS if (k != "ceo" or o.ceo) and (k != "makes" or o.kind == "company")]
        return T.fill_tagged(rng.choice(T.ORG_FACTS[rng.choice(keys)]), T.with_ref(rng, o.facts, o.kind), "ORG")
    if r < 0.78:
        e = rng.choice(w.events)
        return T.fill_tagged(rng.choice(T.EVENT_INTRO + T.EVENT_FACTS), e.facts)
    if r < 0.88:
        return T.fill_tagged(rng.choice(T.WORK_INTRO), rng.choice(w.works).facts)
    if r < 0.94:
        return T.fill_tagged(rng.choice(T.PRODUCT_INTRO), rng.choice(w.products).facts)
    return T.fill_tagged(rng.choice(T.VENUE_INTRO), rng.choice(w.venues).facts)


def ner_examples(n: int, seed: int = 0, split: str = "train") -> list[NerExample]:
    """`n` distinct tagged sentences about world entities (IOB2 over PER, LOC, ORG, MISC)."""
    _check(n, split)
    rng = T.Rng(f"ner:{seed}:{split}")
    seen: set[str] = set()
    out: list[NerExample] = []
    misses = 0
    while len(out) < n:
        tokens, tags = _ner_sentence(rng, seed)
        key = " ".join(tokens)
        if key in seen or not _in_split(key, split):
            misses += 1
            if misses > 50 * n + 10_000:
                raise RuntimeError(f"ner: could not draw {n} distinct {split} sentences; ask for fewer")
            continue
        seen.add(key)
        out.append(NerExample(tuple(tokens), tuple(tags)))
    return out
