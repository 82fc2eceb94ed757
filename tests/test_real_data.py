"""The readers on the real SST-2 and CoNLL-2003 files give the published counts (see each SOURCE.md).

Skipped with a reason when ../shared/data is absent (a fresh clone elsewhere).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from seqeval.metrics.sequence_labeling import get_entities

from lmbench.tasks import TaskDataError, check_labels, read_conll, read_table

pytestmark = pytest.mark.shared_data

IOB2_TAGS = {"O", *(f"{p}-{t}" for p in "BI" for t in ("PER", "LOC", "ORG", "MISC"))}
# split: (file, sentences, tokens, B- counts PER/LOC/ORG/MISC) from data/conll2003/SOURCE.md
CONLL = {"train": ("train.txt", 14_041, 203_621, (6_600, 7_140, 6_321, 3_438)),
         "dev": ("valid.txt", 3_250, 51_362, (1_842, 1_837, 1_341, 922)),
         "test": ("test.txt", 3_453, 46_435, (1_617, 1_668, 1_661, 702))}


def test_sst2_train_dev_counts(shared_data: Path) -> None:
    train = read_table(shared_data / "sst2" / "train.tsv", "sentence", "label")
    dev = read_table(shared_data / "sst2" / "dev.tsv", "sentence", "label")
    assert len(train) == 67_349 and len(dev) == 872  # GLUE / HF glue/sst2
    assert Counter(e.label for e in train) == {"1": 37_569, "0": 29_780}
    assert Counter(e.label for e in dev) == {"1": 444, "0": 428}
    assert train[0].text.startswith("hide new secretions")  # the header row is not data
    check_labels([e.label for e in train], [e.label for e in dev], "dev", shared_data / "sst2" / "dev.tsv")
    with pytest.raises(TaskDataError, match=r"columns present: \['index', 'sentence'\]"):
        read_table(shared_data / "sst2" / "test.tsv", "sentence", "label")  # GLUE hides test labels
    assert len(read_table(shared_data / "sst2" / "test.tsv", "sentence", "index")) == 1_821


def test_conll2003_counts_and_tag_set(shared_data: Path) -> None:
    folder = shared_data / "conll2003"
    splits = {}
    for split, (name, n_sent, n_tok, b_counts) in CONLL.items():
        sents = read_conll(folder / name)  # no final newline: the last sentence must still count
        splits[split] = sents
        assert len(sents) == n_sent, split
        assert sum(len(s.tokens) for s in sents) == n_tok, split
        assert {t for s in sents for t in s.tags} == IOB2_TAGS, split
        b = Counter(t[2:] for s in sents for t in s.tags if t.startswith("B-"))
        assert (b["PER"], b["LOC"], b["ORG"], b["MISC"]) == b_counts, split
        assert not any("-DOCSTART-" in s.tokens for s in sents)
    # IOB2 files read as IOB1 come back unchanged (no I- opens an entity), so the entities agree too
    dev_iob1 = read_conll(folder / "valid.txt", scheme="IOB1")
    assert dev_iob1 == splits["dev"]
    assert sum(len(get_entities(list(s.tags))) for s in dev_iob1) == sum(CONLL["dev"][3])
    train_tags = [t for s in splits["train"] for t in s.tags]
    for split in ("dev", "test"):
        check_labels(train_tags, [t for s in splits[split] for t in s.tags], split, folder / CONLL[split][0])
