"""SpanF1 gives seqeval's numbers exactly (default conlleval mode and strict IOB2), per type too, on
hand-made edge cases, seeded random tag sequences and a corrupted CoNLL-2003 dev set; its summed
state batches, resets and merges (DDP) exactly; classification_metrics matches hand-computed values.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest
import torch
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2

from lmbench.eval.metrics import SpanF1, classification_metrics
from lmbench.tasks import read_conll

CONLL_TYPES = ("PER", "LOC", "ORG", "MISC")
TAGS = ("O", *(f"{p}-{t}" for t in CONLL_TYPES for p in "BI"))  # id -> tag, O first
SEQEVAL_KW = {"conlleval": {}, "strict": {"mode": "strict", "scheme": IOB2}}


def seqeval_scores(gold: list[list[str]], pred: list[list[str]], mode: str) -> dict[str, float]:
    """The reference: seqeval's micro P/R/F1 and per-type report, keyed like SpanF1.compute()."""
    kw = SEQEVAL_KW[mode]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-division warnings
        out = {"precision": precision_score(gold, pred, **kw), "recall": recall_score(gold, pred, **kw),
               "f1": f1_score(gold, pred, **kw)}
        report = classification_report(gold, pred, output_dict=True, **kw)
    for name, row in report.items():
        if name.endswith(" avg"):
            continue
        out.update({f"precision/{name}": row["precision"], f"recall/{name}": row["recall"],
                    f"f1/{name}": row["f1-score"], f"support/{name}": row["support"]})
    return out


def floats(scores: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: v.item() for k, v in scores.items()}


def ours(gold: list[list[str]], pred: list[list[str]], mode: str, types=CONLL_TYPES) -> dict[str, float]:
    metric = SpanF1(types, mode=mode)
    metric.update(pred, gold)
    out = floats(metric.compute())
    out.update({f"support/{t}": metric.gold_count[k].item() for k, t in enumerate(types)})
    return out


def assert_matches_seqeval(gold: list[list[str]], pred: list[list[str]], mode: str, types=CONLL_TYPES) -> None:
    ref, got = seqeval_scores(gold, pred, mode), ours(gold, pred, mode, types)
    for key in ("precision", "recall", "f1"):
        assert got[key] == pytest.approx(ref[key], abs=1e-12), (key, mode)
    for key, value in ref.items():  # seqeval reports only types that occur in gold or predictions
        if "/" in key:
            assert got[key] == pytest.approx(value, abs=1e-12), (key, mode)
    for key, value in got.items():  # declared types that occur nowhere score 0 with no support
        if "/" in key and key not in ref:
            assert value == 0, key


# (name, gold, pred): one sentence each unless nested deeper
EDGE_CASES = [
    ("perfect", [["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-LOC"]]),
    ("empty predictions", [["B-PER", "I-PER", "O", "B-LOC"]], [["O", "O", "O", "O"]]),
    ("no gold entities", [["O", "O", "O"]], [["B-ORG", "O", "I-MISC"]]),
    ("all O", [["O", "O"], ["O"]], [["O", "O"], ["O"]]),
    ("I- after O", [["O", "I-PER", "I-PER", "O"]], [["O", "B-PER", "I-PER", "O"]]),
    ("I- after O in pred", [["O", "B-PER", "I-PER", "O"]], [["O", "I-PER", "I-PER", "O"]]),
    ("I- after O both", [["I-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]),
    ("I- of another type", [["B-PER", "I-LOC", "I-LOC"]], [["B-PER", "B-LOC", "I-LOC"]]),
    ("I- of another type pred", [["B-PER", "I-PER", "I-PER"]], [["B-PER", "I-LOC", "I-PER"]]),
    ("entity at sentence end", [["O", "B-ORG", "I-ORG"], ["B-MISC"]], [["O", "B-ORG", "I-ORG"], ["B-MISC"]]),
    ("truncated at end", [["O", "B-ORG", "I-ORG"]], [["O", "B-ORG", "O"]]),
    ("adjacent B-PER B-PER", [["B-PER", "B-PER", "O"]], [["B-PER", "I-PER", "O"]]),
    ("adjacent both", [["B-PER", "B-PER", "I-PER"]], [["B-PER", "B-PER", "I-PER"]]),
    ("single-token entities", [["B-LOC", "O", "B-PER", "B-ORG"]], [["B-LOC", "O", "B-ORG", "B-PER"]]),
    ("wrong type right span", [["B-PER", "I-PER"]], [["B-ORG", "I-ORG"]]),
    ("longer span", [["B-PER", "O"]], [["B-PER", "I-PER"]]),
    ("sentence boundary splits", [["B-PER"], ["I-PER", "O"]], [["B-PER"], ["I-PER", "O"]]),
    ("empty sentence", [[], ["B-LOC"]], [[], ["B-LOC"]]),
]


@pytest.mark.parametrize("mode", ["conlleval", "strict"])
@pytest.mark.parametrize("name,gold,pred", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_edge_cases_match_seqeval(name: str, gold: list[list[str]], pred: list[list[str]], mode: str) -> None:
    assert_matches_seqeval(gold, pred, mode)


def test_edge_case_numbers_by_hand() -> None:
    # conlleval opens an entity at an I- after O; strict IOB2 ignores the stray I- run entirely
    gold, pred = [["O", "B-PER", "I-PER", "O"]], [["O", "I-PER", "I-PER", "O"]]
    assert ours(gold, pred, "conlleval")["f1"] == 1.0
    strict = ours(gold, pred, "strict")
    assert (strict["precision"], strict["recall"], strict["f1"]) == (0.0, 0.0, 0.0)
    # I-LOC after B-PER: conlleval ends PER at 0 and opens LOC 1..2; strict keeps only PER 0..0
    gold, pred = [["B-PER", "B-LOC", "I-LOC"]], [["B-PER", "I-LOC", "I-LOC"]]
    assert ours(gold, pred, "conlleval")["f1"] == 1.0
    strict = ours(gold, pred, "strict")
    assert (strict["precision"], strict["recall"]) == (1.0, 0.5)
    # B-PER B-PER are two entities; one predicted exact match out of two gold, one of one predicted
    got = ours([["B-PER", "B-PER"]], [["B-PER", "O"]], "conlleval")
    assert (got["precision"], got["recall"], got["f1"]) == (1.0, 0.5, pytest.approx(2 / 3, abs=1e-15))
    # nothing anywhere: every ratio is 0, as seqeval returns
    assert ours([["O"]], [["O"]], "strict")["f1"] == 0.0 == ours([["O"]], [["O"]], "conlleval")["f1"]


def random_tags(gen: torch.Generator, n: int, types: tuple[str, ...]) -> list[str]:
    tags = ("O", *(f"{p}-{t}" for t in types for p in "BI"))
    return [tags[i] for i in torch.randint(len(tags), (n,), generator=gen).tolist()]


@pytest.mark.parametrize("mode", ["conlleval", "strict"])
def test_random_sequences_match_seqeval(mode: str) -> None:
    """200 seeded batches of uniformly random tags hit every transition (I- after O, type changes...)."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        lengths = torch.randint(0, 9, (int(torch.randint(1, 6, (1,), generator=gen)),), generator=gen).tolist()
        if not sum(lengths):
            continue
        gold = [random_tags(gen, n, ("A", "B")) for n in lengths]
        pred = [random_tags(gen, n, ("A", "B")) for n in lengths]
        assert_matches_seqeval(gold, pred, mode, types=("A", "B"))


def test_entity_counts_equal_seqeval_entities() -> None:
    gen = torch.Generator().manual_seed(1)
    gold = [random_tags(gen, 12, CONLL_TYPES) for _ in range(50)]
    metric = SpanF1(CONLL_TYPES)
    metric.update(gold, gold)
    want = [sum(1 for e in get_entities(gold) if e[0] == t) for t in CONLL_TYPES]  # nested: O between sentences
    assert metric.gold_count.tolist() == want == metric.pred_count.tolist() == metric.tp.tolist()


def test_batched_updates_reset_and_forward() -> None:
    gen = torch.Generator().manual_seed(2)
    gold = [random_tags(gen, 10, CONLL_TYPES) for _ in range(40)]
    pred = [random_tags(gen, 10, CONLL_TYPES) for _ in range(40)]
    whole = SpanF1(CONLL_TYPES)
    whole.update(pred, gold)
    parts = SpanF1(CONLL_TYPES)
    for lo, hi in ((0, 7), (7, 8), (8, 8), (8, 40)):
        parts.update(pred[lo:hi], gold[lo:hi])
    assert floats(parts.compute()) == floats(whole.compute())
    parts.reset()
    assert parts.tp.sum() == parts.pred_count.sum() == parts.gold_count.sum() == 0
    parts.update(pred[:5], gold[:5])
    fresh = SpanF1(CONLL_TYPES)
    batch_value = fresh(pred[:5], gold[:5])  # forward: this batch's scores, accumulated too
    assert floats(batch_value) == floats(parts.compute()) == floats(fresh.compute())


def test_merged_states_equal_one_metric() -> None:
    """Two "ranks" merged through merge_state, or by summing states as DDP's sum reduction does."""
    gen = torch.Generator().manual_seed(3)
    gold = [random_tags(gen, 9, CONLL_TYPES) for _ in range(30)]
    pred = [random_tags(gen, 9, CONLL_TYPES) for _ in range(30)]
    whole, a, b = SpanF1(CONLL_TYPES), SpanF1(CONLL_TYPES), SpanF1(CONLL_TYPES)
    whole.update(pred, gold)
    a.update(pred[:11], gold[:11])
    b.update(pred[11:], gold[11:])
    summed = SpanF1(CONLL_TYPES)
    summed.update([], [])  # an empty batch counts nothing
    for key in ("tp", "pred_count", "gold_count"):
        setattr(summed, key, getattr(a, key) + getattr(b, key))
    a.merge_state(b)
    assert floats(a.compute()) == floats(whole.compute()) == floats(summed.compute())
    with pytest.raises(ValueError, match="entity_types"):
        a.merge_state(SpanF1(("LOC", "PER", "ORG", "MISC")))


def test_tensor_ids_logits_and_ignore_index_equal_strings() -> None:
    gen = torch.Generator().manual_seed(4)
    lengths = [5, 1, 8, 3]
    gold = [random_tags(gen, n, CONLL_TYPES) for n in lengths]
    pred = [random_tags(gen, n, CONLL_TYPES) for n in lengths]
    # (B, L) with -100 on padding and on interleaved "non-first sub-word" positions
    target = torch.full((4, 20), -100)
    preds = torch.randint(len(TAGS), (4, 20), generator=gen)  # junk under ignored positions
    for s, (g, p) in enumerate(zip(gold, pred)):
        pos = torch.arange(len(g)) * 2  # kept positions 0, 2, 4, ...
        target[s, pos] = torch.tensor([TAGS.index(t) for t in g])
        preds[s, pos] = torch.tensor([TAGS.index(t) for t in p])
    for mode in ("conlleval", "strict"):
        ref = SpanF1(CONLL_TYPES, mode=mode)
        ref.update(pred, gold)
        by_id = SpanF1(CONLL_TYPES, mode=mode, tags=TAGS)
        by_id.update(preds, target)
        logits = torch.nn.functional.one_hot(preds, len(TAGS)).float()  # (B, L, C)
        by_logit = SpanF1(mode=mode, tags=TAGS)  # types taken from tags (sorted)
        by_logit.update(logits, target)
        want = floats(ref.compute())
        assert floats(by_id.compute()) == want
        assert floats(by_logit.compute()) == want
        assert by_logit.entity_types == ("LOC", "MISC", "ORG", "PER")


def test_errors_name_the_problem() -> None:
    metric = SpanF1(CONLL_TYPES)
    with pytest.raises(ValueError, match=r"'B-DATE'.*'DATE' is not declared.*\['PER', 'LOC', 'ORG', 'MISC'\]"):
        metric.update([["O", "B-DATE"]], [["O", "O"]])
    with pytest.raises(ValueError, match=r"target\[0\]\[1\] is 'E-PER', not an IOB2 tag"):
        metric.update([["O", "O"]], [["O", "E-PER"]])
    with pytest.raises(ValueError, match="sentence 1 has 1 predicted tags but 2 gold"):
        metric.update([["O"], ["O"]], [["O"], ["O", "O"]])
    with pytest.raises(ValueError, match="2 predicted sentences but 1 gold"):
        metric.update([["O"], ["O"]], [["O"]])
    with pytest.raises(TypeError, match="list of tag sequences"):
        metric.update(["O", "B-PER"], ["O", "B-PER"])
    with pytest.raises(ValueError, match="tags=\\[id -> tag\\]"):
        metric.update(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"tag id 9 outside 0\.\.8"):
        SpanF1(CONLL_TYPES, tags=TAGS).update(torch.tensor([[9]]), torch.tensor([[0]]))
    with pytest.raises(ValueError, match=r"tags\[1\] is 'B-DATE'"):
        SpanF1(CONLL_TYPES, tags=("O", "B-DATE"))
    with pytest.raises(ValueError, match="allowed: 'conlleval', 'strict'"):
        SpanF1(CONLL_TYPES, mode="lenient")
    with pytest.raises(ValueError, match="entity_types"):
        SpanF1()
    assert metric.tp.sum() == metric.gold_count.sum() == 0  # failed updates left no partial counts


def corrupt(gold: list[tuple[str, ...]], rate: float, seed: int) -> list[list[str]]:
    """A fixed imperfect prediction: `rate` of tokens get a random tag, a flipped B/I prefix (O -> I-),
    a random type (O -> B-) or O, a quarter each, drawn with a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    flat = torch.tensor([TAGS.index(t) for s in gold for t in s])  # (N,) 0 O, 1 + 2k B-, 2 + 2k I-
    n = flat.shape[0]
    hit = torch.rand(n, generator=gen) < rate  # (N,)
    kind = torch.randint(4, (n,), generator=gen)  # (N,)
    rand_tag = torch.randint(len(TAGS), (n,), generator=gen)  # (N,)
    rand_type = torch.randint(len(CONLL_TYPES), (n,), generator=gen)  # (N,)
    is_o = flat == 0
    prefix_b = (flat % 2 == 1).long()  # (N,) 1 for B-, 0 for I- (meaningless for O)
    flipped = torch.where(is_o, 2 * rand_type + 2, flat + 2 * prefix_b - 1)  # B- <-> I-; O -> stray I-
    swapped = torch.where(is_o, 2 * rand_type + 1, 2 * rand_type + 2 - prefix_b)  # same prefix, new type; O -> B-
    choice = torch.stack([rand_tag, flipped, swapped, torch.zeros_like(flat)])[kind, torch.arange(n)]  # (N,)
    out = [TAGS[i] for i in torch.where(hit, choice, flat).tolist()]
    pieces, at = [], 0
    for s in gold:
        pieces.append(out[at:at + len(s)])
        at += len(s)
    return pieces


@pytest.mark.shared_data
def test_conll_dev_corrupted_matches_seqeval_and_is_fast(shared_data: Path) -> None:
    gold = [list(s.tags) for s in read_conll(shared_data / "conll2003" / "valid.txt")]
    assert sum(map(len, gold)) == 51_362
    pred = corrupt(gold, 0.10, seed=0)
    changed = sum(g != p for gs, ps in zip(gold, pred) for g, p in zip(gs, ps))
    assert 0.05 * 51_362 < changed < 0.10 * 51_362  # some corruptions redraw the same tag
    scores = {}
    threads = torch.get_num_threads()
    for mode in ("conlleval", "strict"):
        assert_matches_seqeval(gold, pred, mode)
        metric = SpanF1(CONLL_TYPES, mode=mode)
        # One thread: on 2 cores busy with other jobs, intra-op threads on 51k-element tensors spin
        # (measured ~25 ms per elementwise op), which times the machine's load, not the metric.
        torch.set_num_threads(1)
        try:
            start = time.perf_counter()
            metric.update(pred, gold)
            scores[mode] = floats(metric.compute())
            elapsed = time.perf_counter() - start
        finally:
            torch.set_num_threads(threads)
        assert elapsed < 1.0, f"{mode}: {elapsed:.3f} s to score CoNLL dev"
        assert metric.gold_count.tolist() == [1842, 1837, 1341, 922]  # B- counts from SOURCE.md
    # the modes differ on these predictions: stray I- tags open (mostly wrong) entities only in conlleval
    assert 0.6 < scores["conlleval"]["f1"] < scores["strict"]["f1"] < 0.9
    assert scores["conlleval"]["precision"] < scores["strict"]["precision"]
    # DDP-style: two halves merged give the same numbers
    a, b = SpanF1(CONLL_TYPES), SpanF1(CONLL_TYPES)
    a.update(pred[:1000], gold[:1000])
    b.update(pred[1000:], gold[1000:])
    a.merge_state(b)
    assert floats(a.compute()) == scores["conlleval"]


def test_classification_metrics_by_hand() -> None:
    metrics = classification_metrics(3)
    assert set(metrics.keys()) == {"acc", "macro_f1"}
    assert metrics["acc"].average == "micro" and metrics["macro_f1"].average == "macro"
    preds = torch.tensor([0, 0, 1, 2, 2, 2, 1, 0])
    target = torch.tensor([0, 1, 1, 2, 2, 0, 1, 0])
    metrics.update(preds[:3], target[:3])
    metrics.update(preds[3:], target[3:])
    out = metrics.compute()
    # class 0: tp 2, fp 1, fn 1 -> F1 2/3; class 1: tp 2, fp 0, fn 1 -> 4/5; class 2: tp 2, fp 1, fn 0 -> 4/5
    assert out["acc"].item() == pytest.approx(6 / 8)
    assert out["macro_f1"].item() == pytest.approx((2 / 3 + 4 / 5 + 4 / 5) / 3)
    logits = torch.nn.functional.one_hot(preds, 3).float()  # (N, C) scores are arg-maxed
    metrics.reset()
    assert metrics(logits, target)["acc"].item() == pytest.approx(6 / 8)
