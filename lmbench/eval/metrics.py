"""Evaluation metrics: entity-level span F1 for IOB2 tagging, and accuracy / macro-F1 for classification.

NER numbers are only comparable across papers when spans are counted exactly as seqeval counts
them, so SpanF1 reproduces seqeval to the last bit in both of its modes:

- "conlleval" (seqeval's default, `f1_score(y_true, y_pred)`): an I- after O, or after a tag of
  another type, starts an entity, as the CoNLL-2000 perl script does;
- "strict" (`f1_score(..., mode="strict", scheme=IOB2)`): only B- starts an entity; an I- run
  without its B- is no entity at all.

Entities match exactly on (type, start, end). The state is three count vectors over a type list
fixed at construction (true positives, predicted, gold), summed across batches and processes, so
the metric is exact under DDP and `compute()` is a pure function of the counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

MODES = ("conlleval", "strict")

# A tag is coded as one integer: O -> 0, B-<type k> -> 1 + 2k, I-<type k> -> 2 + 2k.
_O, _B, _I = 0, 1, 2


class SpanF1(Metric):
    """Entity-level micro precision / recall / F1 and per-type scores for IOB2 tag sequences.

    entity_types: the declared types, e.g. ("PER", "LOC", "ORG", "MISC"); a tag of any other type
    is an error. May be left out when `tags` is given (then the types in `tags`, sorted).
    mode: "conlleval" (seqeval default) or "strict" (seqeval mode="strict", scheme=IOB2).
    tags: id -> tag list, needed only to update with tensors of tag ids.
    ignore_index: positions whose target id equals it are dropped (padding, non-first sub-words).

    update(preds, target) takes either lists of tag-string sequences (one per sentence) or tensors
    of tag ids, (B, L) or (L,), with preds optionally logits (B, L, C) that are arg-maxed.
    compute() returns {"precision", "recall", "f1", "precision/<T>", "recall/<T>", "f1/<T>"} as
    float64 scalars; any ratio with a zero denominator is 0, as in seqeval.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    tp: Tensor
    pred_count: Tensor
    gold_count: Tensor

    def __init__(self, entity_types: Sequence[str] | None = None, mode: str = "conlleval",
                 tags: Sequence[str] | None = None, ignore_index: int = -100, **kwargs) -> None:
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"SpanF1 mode={mode!r}; allowed: {', '.join(map(repr, MODES))}")
        if entity_types is None:
            if tags is None:
                raise ValueError("SpanF1 needs entity_types=(...), e.g. ('PER', 'LOC', 'ORG', 'MISC'), "
                                 "or tags=[id -> tag]")
            entity_types = sorted({t[2:] for t in tags if isinstance(t, str) and t[:2] in ("B-", "I-")})
        if isinstance(entity_types, str) or not entity_types or not all(isinstance(t, str) and t for t in entity_types):
            raise ValueError(f"SpanF1 entity_types must be a non-empty list of type names, got {entity_types!r}")
        if len(set(entity_types)) != len(entity_types):
            raise ValueError(f"SpanF1 entity_types has duplicates: {list(entity_types)}")
        self.entity_types = tuple(entity_types)
        self.mode = mode
        self.ignore_index = ignore_index
        self._type_index = {t: k for k, t in enumerate(self.entity_types)}
        self._codes: dict[str, int] = {"O": 0}  # tag string -> code, filled as tags are first seen
        self.tags = None if tags is None else tuple(tags)
        if self.tags is not None:
            lut = torch.tensor([self._code(t, f"tags[{i}]") for i, t in enumerate(self.tags)], dtype=torch.long)
            self.register_buffer("_lut", lut, persistent=False)  # (V,) tag id -> code
        n = len(self.entity_types)
        self.add_state("tp", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("pred_count", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("gold_count", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")

    def _code(self, tag: object, where: str) -> int:
        """The integer code of one tag string; unknown prefixes or types raise with `where`."""
        if tag == "O":
            return 0
        if not isinstance(tag, str) or tag[:2] not in ("B-", "I-"):
            raise ValueError(f"SpanF1: {where} is {tag!r}, not an IOB2 tag (O, B-<type>, I-<type>)")
        k = self._type_index.get(tag[2:])
        if k is None:
            raise ValueError(f"SpanF1: {where} is {tag!r}, whose entity type {tag[2:]!r} is not declared; "
                             f"declared entity_types: {list(self.entity_types)}")
        return (1 if tag[0] == "B" else 2) + 2 * k

    def _encode(self, seqs: Sequence[Sequence[str]], name: str) -> tuple[Tensor, Tensor]:
        """Tag-string sentences -> (codes (N,), lengths (S,)), all sentences concatenated."""
        if isinstance(seqs, str) or any(isinstance(s, str) for s in seqs):
            raise TypeError(f"SpanF1.update: {name} must be a list of tag sequences (one per sentence), "
                            f"not a list of strings")
        flat = list(chain.from_iterable(seqs))
        codes = self._codes
        try:
            ids = [codes[t] for t in flat]
        except (KeyError, TypeError):  # first sight of a tag (or an unhashable one): parse, then retry
            for s, seq in enumerate(seqs):
                for i, t in enumerate(seq):
                    if not isinstance(t, str) or t not in codes:
                        codes[t] = self._code(t, f"{name}[{s}][{i}]")
            ids = [codes[t] for t in flat]
        return torch.tensor(ids, dtype=torch.long), torch.tensor([len(s) for s in seqs], dtype=torch.long)

    def _from_ids(self, preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Id tensors -> (pred codes (N,), gold codes (N,), sentence-start mask (N,)) over kept positions."""
        if self.tags is None:
            raise ValueError("SpanF1.update got tensors of tag ids; construct SpanF1 with tags=[id -> tag] "
                             "to decode them")
        if preds.is_floating_point() and preds.dim() == target.dim() + 1:
            preds = preds.argmax(-1)  # (B, L) from logits (B, L, C)
        if preds.shape != target.shape:
            raise ValueError(f"SpanF1.update: preds shape {tuple(preds.shape)} != target shape {tuple(target.shape)}")
        if target.dim() == 1:
            preds, target = preds.unsqueeze(0), target.unsqueeze(0)  # (1, L)
        if target.dim() != 2:
            raise ValueError(f"SpanF1.update: tag-id tensors must be (B, L) or (L,), got {tuple(target.shape)}")
        keep = target != self.ignore_index  # (B, L)
        rows = torch.arange(target.shape[0], device=target.device)[:, None].expand_as(target)[keep]  # (N,)
        gold, pred = target[keep].long(), preds[keep].long()  # (N,)
        v = len(self.tags)
        for name, ids in (("target", gold), ("preds", pred)):
            bad = (ids < 0) | (ids >= v)
            if bad.any():
                raise ValueError(f"SpanF1.update: {name} has tag id {ids[bad][0].item()} outside 0..{v - 1} "
                                 f"(len(tags)={v}; ignore_index={self.ignore_index} marks dropped positions)")
        lut = self._lut.to(gold.device)
        first = torch.ones_like(rows, dtype=torch.bool)  # (N,)
        first[1:] = rows[1:] != rows[:-1]
        return lut[pred], lut[gold], first

    def update(self, preds: Sequence[Sequence[str]] | Tensor, target: Sequence[Sequence[str]] | Tensor) -> None:
        """Add the entity counts of a batch of sentences (tag strings, or tag ids with `tags` given)."""
        if isinstance(preds, Tensor) != isinstance(target, Tensor):
            raise TypeError("SpanF1.update: preds and target must both be tensors of tag ids or both lists of tags")
        if isinstance(target, Tensor):
            pred_codes, gold_codes, first = self._from_ids(preds, target)
        else:
            if len(preds) != len(target):
                raise ValueError(f"SpanF1.update: {len(preds)} predicted sentences but {len(target)} gold sentences")
            pred_codes, pred_len = self._encode(preds, "preds")
            gold_codes, gold_len = self._encode(target, "target")
            if not torch.equal(pred_len, gold_len):
                s = int((pred_len != gold_len).nonzero()[0])
                raise ValueError(f"SpanF1.update: sentence {s} has {int(pred_len[s])} predicted tags "
                                 f"but {int(gold_len[s])} gold tags")
            first = torch.zeros(gold_codes.shape[0], dtype=torch.bool)  # (N,)
            starts = (gold_len.cumsum(0) - gold_len)[gold_len > 0]  # (S',) offsets of non-empty sentences
            first[starts] = True
        n, t = gold_codes.shape[0], len(self.entity_types)
        strict = self.mode == "strict"
        pred_key, pred_type = _entities(pred_codes, first, strict, t)  # (Ep,)
        gold_key, gold_type = _entities(gold_codes, first, strict, t)  # (Eg,)
        hit = torch.isin(gold_key, pred_key) if n else torch.zeros(0, dtype=torch.bool)  # (Eg,)
        dev = self.tp.device
        self.tp += torch.bincount(gold_type[hit], minlength=t).to(dev)
        self.pred_count += torch.bincount(pred_type, minlength=t).to(dev)
        self.gold_count += torch.bincount(gold_type, minlength=t).to(dev)

    def compute(self) -> dict[str, Tensor]:
        """Micro precision / recall / F1 over all types, then the same per declared type."""
        tp, pred, gold = self.tp.double(), self.pred_count.double(), self.gold_count.double()  # (T,)
        p, r, f = _prf(tp.sum(), pred.sum(), gold.sum())
        out = {"precision": p, "recall": r, "f1": f}
        tp_, pr_, f_ = _prf(tp, pred, gold)  # (T,) each
        for k, name in enumerate(self.entity_types):
            out[f"precision/{name}"], out[f"recall/{name}"], out[f"f1/{name}"] = tp_[k], pr_[k], f_[k]
        return out

    def merge_state(self, incoming_state: dict[str, Tensor] | Metric) -> None:
        """Add another SpanF1's counts (or a state dict of them); the entity types must be the same list."""
        if isinstance(incoming_state, SpanF1) and incoming_state.entity_types != self.entity_types:
            raise ValueError(f"SpanF1.merge_state: entity_types {list(incoming_state.entity_types)} differ from "
                             f"{list(self.entity_types)}")
        super().merge_state(incoming_state)


def _entities(codes: Tensor, first: Tensor, strict: bool, num_types: int) -> tuple[Tensor, Tensor]:
    """Entities of concatenated sentences as (keys (E,), types (E,)); a key encodes (start, end, type).

    A token continues the entity of the token before it when it is I-X, in the same sentence, after
    B-X or I-X. Every other non-O token starts an entity (conlleval), which runs up to the last
    continuing token. Strict IOB2 keeps only the entities whose first token is B-.
    """
    n = codes.shape[0]
    prefix = torch.where(codes == 0, _O, 2 - codes % 2)  # (N,) 0 O, 1 B, 2 I
    etype = (codes - 1).div(2, rounding_mode="floor")  # (N,) -1 for O
    inside = codes != 0  # (N,)
    link = torch.zeros_like(inside)  # (N,) token continues the previous token's entity
    link[1:] = (prefix[1:] == _I) & (prefix[:-1] != _O) & (etype[1:] == etype[:-1]) & ~first[1:]
    start = inside & ~link  # (N,)
    end = inside.clone()  # (N,) last token of its entity: the next token does not continue it
    end[:-1] &= ~link[1:]
    starts, ends = start.nonzero().squeeze(1), end.nonzero().squeeze(1)  # (E,) each, paired in order
    types = etype[starts]  # (E,)
    if strict:
        keep = prefix[starts] == _B  # (E,)
        starts, ends, types = starts[keep], ends[keep], types[keep]
    return (starts * n + ends) * num_types + types, types


def _prf(tp: Tensor, pred: Tensor, gold: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Precision, recall, F1 from counts, 0 where a denominator is 0 (seqeval's formulas, float64)."""
    p = tp / pred.clamp(min=1)
    r = tp / gold.clamp(min=1)
    denom = p + r
    f = 2 * p * r / torch.where(denom == 0, torch.ones_like(denom), denom)
    return p, r, f


def classification_metrics(num_classes: int) -> MetricCollection:
    """Sequence-classification metrics: "acc" (micro accuracy) and "macro_f1" (unweighted mean of class F1)."""
    return MetricCollection({
        "acc": MulticlassAccuracy(num_classes=num_classes, average="micro"),
        "macro_f1": MulticlassF1Score(num_classes=num_classes, average="macro"),
    })
