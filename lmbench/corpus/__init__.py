"""The built-in corpus: a procedurally generated English-like world with labelled downstream sets.

Everything is generated offline from a seed: `world(seed)` builds the entities once, `generate_documents`
streams pretraining text about them, and the labelled sets (sentiment, topic, NER) reuse the same world.
"""

from lmbench.corpus.documents import GENERATOR_VERSION, corpus_fingerprint, generate_documents
from lmbench.corpus.labelled import (
    NER_TYPES,
    SENTIMENT_LABELS,
    TOPIC_LABELS,
    NerExample,
    SentimentExample,
    ner_examples,
    sentiment_examples,
    topic_examples,
)
from lmbench.corpus.world import World, world

__all__ = [
    "GENERATOR_VERSION", "NER_TYPES", "SENTIMENT_LABELS", "TOPIC_LABELS", "NerExample", "SentimentExample", "World",
    "corpus_fingerprint", "generate_documents", "ner_examples", "sentiment_examples", "topic_examples", "world",
]
