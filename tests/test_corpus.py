"""Tests for the built-in corpus: determinism, prefix stability, richness, fact consistency, label words,
and the labelled sets (balance, disjoint splits, learnable-but-not-trivial sentiment, valid IOB2 NER)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from seqeval.metrics.sequence_labeling import get_entities

from lmbench.corpus import (
    GENERATOR_VERSION,
    NER_TYPES,
    SENTIMENT_LABELS,
    TOPIC_LABELS,
    corpus_fingerprint,
    generate_documents,
    ner_examples,
    sentiment_examples,
    topic_examples,
    world,
)
from lmbench.corpus import documents as D
from lmbench.corpus.templates import tokenize

WORD_RE = re.compile(r"[A-Za-z]+(?:'[a-z]+)?|\d+")


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return list(generate_documents(4000, seed=0))


@pytest.fixture(scope="module")
def text(docs: list[str]) -> str:
    return "\n".join(docs)


# ----------------------------------------------------------------------------- documents
def test_same_seed_same_text_other_seed_other_text() -> None:
    a, b = list(generate_documents(60, 0)), list(generate_documents(60, 0))
    c = list(generate_documents(60, 1))
    assert a == b
    assert sum(x != y for x, y in zip(a, c)) >= 58


def test_deterministic_across_processes_and_hash_seeds() -> None:
    code = ("import hashlib; from lmbench.corpus import generate_documents as g; "
            "print(hashlib.sha256('\\x00'.join(g(40, 7)).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": h}).stdout.strip() for h in ("1", "2")}
    here = hashlib.sha256("\x00".join(generate_documents(40, 7)).encode()).hexdigest()
    assert digests == {here}


def test_prefix_stable_and_lazy() -> None:
    big = list(generate_documents(150, 3))
    assert list(generate_documents(40, 3)) == big[:40]
    stream = generate_documents(10**12, 3)  # lazy: nothing is generated up front
    assert [next(stream) for _ in range(5)] == big[:5]
    with pytest.raises(ValueError, match="n_documents"):
        generate_documents(-1)


def test_word_counts_and_plain_text(docs: list[str]) -> None:
    counts = np.array([len(d.split()) for d in docs])
    assert counts.min() >= D.MIN_WORDS and counts.max() <= D.MAX_WORDS
    assert 120 <= counts.mean() <= 300
    assert counts.std() > 40  # lengths vary, not one template size
    for d in docs:
        assert "{" not in d and "}" not in d and "  " not in d and d.isascii()
        assert d[0].isupper() and d.rstrip()[-1] in '.!"'
        assert not re.search(r"\s[,.!?]", d)


def test_vocabulary_is_rich(text: str) -> None:
    tokens = WORD_RE.findall(text)
    types = set(tokens)
    assert len(types) >= 3000
    assert 0.001 < len(types) / len(tokens) < 0.05
    w = world(0)
    assert len({p.name.split()[0] for p in w.people}) >= 300 and len({p.name.split()[1] for p in w.people}) >= 300
    assert len(w.cities) >= 100 and len(w.orgs) >= 200
    # Many sentence shapes: the first four words of sentences are diverse.
    openings = Counter(" ".join(WORD_RE.findall(s)[:4]) for s in re.split(r"(?<=[.!?]) ", text) if s)
    assert len(openings) > 5000


def test_fingerprint() -> None:
    fp = corpus_fingerprint(1000, 0)
    assert fp == corpus_fingerprint(1000, 0) and re.fullmatch(r"[0-9a-f]{16}", fp)
    assert len({fp, corpus_fingerprint(1001, 0), corpus_fingerprint(1000, 1)}) == 3
    assert GENERATOR_VERSION and isinstance(GENERATOR_VERSION, str)


def test_entity_facts_consistent_across_documents(docs: list[str]) -> None:
    w = world(0)
    people = {p.name: p for p in w.people}
    lives = re.compile(r"([A-Z]\w+ [A-Z]\w+) (?:is an? [a-z]+ who )?lives in ([A-Z]\w+)")
    works = re.compile(r"([A-Z]\w+ [A-Z]\w+) works for ([A-Z][\w ]+?)\.")
    married = re.compile(r"([A-Z]\w+ [A-Z]\w+) is married to ([A-Z]\w+ [A-Z]\w+)")
    hq = re.compile(r"([A-Z][\w ]+?) is a company based in ([A-Z]\w+)")
    seen_in: dict[str, set[int]] = {}
    n_checked = 0
    for i, d in enumerate(docs):
        for name, city in lives.findall(d):
            if name in people:
                assert people[name].city == city, (name, city)
                seen_in.setdefault(name, set()).add(i)
                n_checked += 1
        for name, org in works.findall(d):
            if name in people:
                assert people[name].employer == org
                n_checked += 1
        for a, b in married.findall(d):
            assert people[a].spouse == b and people[b].spouse == a
            n_checked += 1
        for org, city in hq.findall(d):
            assert w.by_name[org].city == city
            n_checked += 1
    assert n_checked > 1000
    assert sum(len(v) >= 2 for v in seen_in.values()) > 100  # the same fact recurs in different documents
    # World tables agree with themselves: employers exist, CEOs work where they lead, spouses are mutual.
    for p in w.people:
        assert w.by_name[p.employer].name == p.employer and w.by_name[p.city].name == p.city
        assert not p.spouse or people[p.spouse].spouse == p.name
    for o in w.orgs:
        assert not o.ceo or people[o.ceo].employer == o.name


def test_label_and_type_words_occur(text: str) -> None:
    for word in ("good", "great", "excellent", "wonderful", "bad", "awful", "terrible", "boring"):
        assert len(re.findall(rf"\bit was {word}\b", text, re.I)) >= 3, word
    assert re.search(r"\bBecause it was (great|awful|terrible|excellent)\b", text)
    assert re.search(r"\bnot (great|good)\b", text) and re.search(r"\bnot (bad|boring)\b", text)
    for phrase in ("is a person", "is a city", "is a company", "is an organization", "is an event", "is a place",
                   "is a location", "is a type of person"):
        assert phrase in text, phrase


# ----------------------------------------------------------------------------- labelled sets
def _bow_accuracy(train, dev, n_labels: int) -> float:
    """Bernoulli naive Bayes on bag-of-words presence features (numpy counting, Laplace smoothing)."""
    tok = lambda t: re.findall(r"[a-z']+", t.lower())  # noqa: E731
    vocab = {w: i for i, w in enumerate(sorted({w for e in train for w in tok(e.text)}))}

    def features(examples):
        x = np.zeros((len(examples), len(vocab)), dtype=np.float32)
        for i, e in enumerate(examples):
            x[i, [vocab[w] for w in tok(e.text) if w in vocab]] = 1.0
        return x

    xt, xd = features(train), features(dev)
    yt = np.eye(n_labels, dtype=np.float32)[[e.label for e in train]]  # (N, C)
    per_class = yt.sum(0)  # (C,)
    p_word = (yt.T @ xt + 1.0) / (per_class[:, None] + 2.0)  # (C, V): P(word present | class)
    log_on, log_off = np.log(p_word), np.log1p(-p_word)
    scores = xd @ (log_on - log_off).T + log_off.sum(1) + np.log(per_class / per_class.sum())  # (M, C)
    return float((scores.argmax(1) == np.array([e.label for e in dev])).mean())


def test_sentiment_sets_balanced_disjoint_learnable_not_trivial() -> None:
    splits = {s: sentiment_examples(n, 0, s) for s, n in (("train", 3000), ("dev", 800), ("test", 800))}
    assert sentiment_examples(50, 0, "dev") == sentiment_examples(50, 0, "dev")
    for s, ex in splits.items():
        c = Counter(e.label for e in ex)
        assert set(c) == {0, 1} == set(range(len(SENTIMENT_LABELS))) and abs(c[0] - c[1]) <= 1, s
        assert len({e.text for e in ex}) == len(ex)
    texts = {s: {e.text for e in ex} for s, ex in splits.items()}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not (texts[a] & texts[b]), (a, b)
    dev = splits["dev"]
    assert sum(" not " in e.text for e in dev) > 0.1 * len(dev)  # negation is common
    assert sum(" but " in e.text or "Although" in e.text for e in dev) > 0.1 * len(dev)  # so are mixed clauses
    acc = _bow_accuracy(splits["train"], dev, 2)
    majority = max(Counter(e.label for e in dev).values()) / len(dev)
    assert majority + 0.2 < acc < 0.98, acc  # learnable, yet a bag of words cannot solve it


def test_topic_sets_balanced_disjoint_learnable() -> None:
    train, dev = topic_examples(1500, 0, "train"), topic_examples(400, 0, "dev")
    assert Counter(e.label for e in train) == Counter({i: 300 for i in range(len(TOPIC_LABELS))})
    assert not ({e.text for e in train} & {e.text for e in dev})
    assert all(8 <= len(e.text.split()) <= 150 for e in train)
    assert _bow_accuracy(train, dev, len(TOPIC_LABELS)) > 0.6


def test_ner_examples_valid_iob2_and_spans_are_world_entities() -> None:
    w = world(0)
    names = lambda xs: {" ".join(tokenize(x)) for x in xs}  # noqa: E731
    known = {
        "PER": names([p.name for p in w.people] + [p.name.split()[0] for p in w.people]
                     + [p.name.split()[1] for p in w.people] + [o.facts["founder"] for o in w.orgs]),
        "LOC": names([c.name for c in w.cities] + [c.name for c in w.countries] + [c.river for c in w.cities]),
        "ORG": names([o.name for o in w.orgs] + [v.name for v in w.venues]),
        "MISC": names([e.name for e in w.events] + [x.title for x in w.works] + [x.name for x in w.products]
                      + [c.nationality for c in w.countries]),
    }
    train, test = ner_examples(2000, 0, "train"), ner_examples(300, 0, "test")
    assert not ({e.tokens for e in train} & {e.tokens for e in test})
    types, multi = Counter(), Counter()
    for ex in train:
        assert len(ex.tokens) == len(ex.tags) > 2
        assert all(t and not re.search(r"\s", t) for t in ex.tokens)
        assert all(len(t) == 1 or not re.search(r"[.,!?;:\"]$", t) for t in ex.tokens)  # punctuation split off
        prev = "O"
        for tag in ex.tags:
            assert tag == "O" or re.fullmatch(r"[BI]-(PER|LOC|ORG|MISC)", tag), tag
            if tag.startswith("I-"):
                assert prev != "O" and prev[2:] == tag[2:], ex  # IOB2: I- continues a span of its type
            prev = tag
        for etype, start, end in get_entities(list(ex.tags)):
            span = " ".join(ex.tokens[start:end + 1])
            assert span in known[etype], (etype, span)
            types[etype] += 1
            multi[etype] += end > start
    assert set(types) == set(NER_TYPES)
    assert all(multi[t] > 0 for t in NER_TYPES)  # multi-word names get I- tags
    assert ner_examples(20, 0, "dev") == ner_examples(20, 0, "dev")
    with pytest.raises(ValueError, match="train"):
        ner_examples(5, 0, "validation")
