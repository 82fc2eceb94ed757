"""Downstream mode 2: linear probes on frozen backbone features, for sequence classification and NER.

A probe asks what the pretrained features already hold, without fine-tuning hiding the differences
between objectives. Features are computed once under no_grad (pooled per text as in
lmbench.eval.pooling; the hidden state of each word's first piece for NER), standardised with the
training set's mean and std, and a multinomial logistic regression with an L2 penalty on the weights
is fitted full-batch with L-BFGS in float64. The fit is convex and starts from zero, so it has no
seed; the L2 strength is selected on dev from a fixed grid, identical for every objective, and the
test score reported is the dev-best one's.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lmbench.eval.encode import IGNORE, Encoded, encode_classification, encode_tagging, label_list, tag_list
from lmbench.eval.family import LoadedModel, load_scorer_model
from lmbench.eval.finetune import classification_scores, model_max_length, select_on_dev, tagging_scores
from lmbench.eval.pooling import encoder_hidden, pool, resolve_pooling
from lmbench.tasks import TextExample, TokenExample


@dataclass
class ProbeConfig:
    """The probe grid: `l2s` (penalty l2/2 * ||W||^2 added to the mean cross-entropy), L-BFGS iterations,
    feature batch size, max_length, pooling (auto | first | last | mean), span_mode (conlleval | strict)."""

    l2s: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    max_iter: int = 300
    batch_size: int = 64
    max_length: int = 128
    pooling: str = "auto"
    span_mode: str = "conlleval"
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.l2s = tuple(float(x) for x in self.l2s)
        if not self.l2s or any(not x >= 0 for x in self.l2s):
            raise ValueError(f"probe.l2s={list(self.l2s)}; allowed values: a non-empty list of numbers >= 0")
        for key in ("max_iter", "batch_size", "max_length"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"probe.{key}={getattr(self, key)!r}; allowed values: an integer >= 1")
        if self.pooling not in ("auto", "first", "last", "mean"):
            raise ValueError(f"probe.pooling={self.pooling!r}; allowed values: auto, first, last, mean")
        if self.span_mode not in ("conlleval", "strict"):
            raise ValueError(f"probe.span_mode={self.span_mode!r}; allowed values: conlleval, strict")


@dataclass
class LinearProbe:
    """A fitted probe: standardisation (mean, std (H,)) then logits = x @ weight.T + bias, (C, H) and (C,)."""

    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor

    def logits(self, features: Tensor) -> Tensor:
        """Class logits (N, C) of features (N, H)."""
        x = (features.double() - self.mean) / self.std  # (N, H)
        return x @ self.weight.T + self.bias  # (N, C)


def fit_probe(features: Tensor, labels: Tensor, num_classes: int, l2: float, max_iter: int = 300) -> LinearProbe:
    """Multinomial logistic regression on standardised features (N, H) with class ids labels (N,).

    Minimises mean cross-entropy + l2/2 * ||W||^2 (the bias is not penalised) with full-batch
    L-BFGS (strong Wolfe line search) in float64 from zero, so the result is deterministic.
    """
    x = features.double()  # (N, H)
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-6)  # (H,)
    x = (x - mean) / std  # (N, H)
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)  # (C, H)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)  # (C,)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, labels) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return LinearProbe(mean, std, weight.detach(), bias.detach())


@torch.no_grad()
def sequence_features(loaded: LoadedModel, data: Encoded, pooling: str, batch_size: int) -> Tensor:
    """Pooled last hidden states (N, H) of every text, in data order."""
    loaded.model.eval()
    out = []
    for index in torch.arange(len(data)).split(batch_size):
        ids, mask, _ = (x.to(loaded.device) for x in data.rows(index))  # (B, t)
        out.append(pool(encoder_hidden(loaded.model, ids, mask), mask, pooling).float().cpu())  # (B, H)
    return torch.cat(out)


@torch.no_grad()
def word_features(loaded: LoadedModel, data: Encoded, batch_size: int) -> tuple[Tensor, Tensor]:
    """(features (M, H), where (M, 2)): the hidden state of the first piece of every word that has one,
    in (sentence, word) order, and each one's (sentence, word) index."""
    loaded.model.eval()
    feats = []
    for index in torch.arange(len(data)).split(batch_size):
        ids, mask, _ = (x.to(loaded.device) for x in data.rows(index))  # (B, t)
        hidden = encoder_hidden(loaded.model, ids, mask).float().cpu()  # (B, t, H)
        first = data.first_piece[index]  # (B, W)
        picked = hidden.gather(1, first.clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # (B, W, H)
        feats.append(picked[(first >= 0) & (data.word_tags[index] != IGNORE)])  # (M_b, H)
    where = ((data.first_piece >= 0) & (data.word_tags != IGNORE)).nonzero()  # (M, 2)
    return torch.cat(feats), where


def _load(model_dir: str | Path, cfg: ProbeConfig) -> LoadedModel:
    return load_scorer_model(model_dir, device=cfg.device)


def probe_classification(model_dir: str | Path, train: Sequence[TextExample], dev: Sequence[TextExample],
                         test: Sequence[TextExample], cfg: ProbeConfig | None = None,
                         source: str = "task data") -> dict[str, Any]:
    """Linear probe on the frozen pooled features of the backbone in `model_dir`, text classification.

    Same labels, errors and result dict as finetune_classification, with "best_l2" instead of
    "best_lr"; "grid" rows are {"l2", "dev", "test"}.
    """
    cfg = cfg or ProbeConfig()
    start = time.perf_counter()
    labels = label_list([e.label for e in train], {"dev": [e.label for e in dev],
                                                   "test": [e.label for e in test]}, source)
    loaded = _load(model_dir, cfg)
    pooling = resolve_pooling(cfg.pooling, loaded.kind)
    length = model_max_length(loaded.model, cfg.max_length)
    data = {name: encode_classification(loaded.tokenizer, loaded.kind, split, labels, length)
            for name, split in (("train", train), ("dev", dev), ("test", test))}
    feats = {name: sequence_features(loaded, d, pooling, cfg.batch_size) for name, d in data.items()}  # (N, H)
    grid = []
    for l2 in cfg.l2s:
        probe = fit_probe(feats["train"], data["train"].labels, len(labels), l2, cfg.max_iter)
        grid.append({"l2": l2, **{name: classification_scores(probe.logits(feats[name]).argmax(-1),
                                                              data[name].labels, len(labels))
                                  for name in ("dev", "test")}})
    result = select_on_dev(grid, "l2", "acc")
    majority = Counter(e.label for e in train).most_common(1)[0][0]
    result.update(labels=labels, kind=loaded.kind, pooling=pooling,
                  test_majority=sum(e.label == majority for e in test) / max(1, len(test)),
                  seconds=time.perf_counter() - start)
    return result


def probe_ner(model_dir: str | Path, train: Sequence[TokenExample], dev: Sequence[TokenExample],
              test: Sequence[TokenExample], cfg: ProbeConfig | None = None,
              source: str = "task data") -> dict[str, Any]:
    """Linear probe on the frozen first-piece feature of every word, IOB2 tagging scored with SpanF1.

    Same tags, errors and result dict as finetune_ner, with "best_l2" instead of "best_lr". Words
    cut off by max_length are predicted "O".
    """
    cfg = cfg or ProbeConfig()
    start = time.perf_counter()
    tags = tag_list([t for e in train for t in e.tags], {"dev": [t for e in dev for t in e.tags],
                                                         "test": [t for e in test for t in e.tags]}, source)
    loaded = _load(model_dir, cfg)
    length = model_max_length(loaded.model, cfg.max_length)
    data = {name: encode_tagging(loaded.tokenizer, loaded.kind, split, tags, length)
            for name, split in (("train", train), ("dev", dev), ("test", test))}
    feats = {name: word_features(loaded, d, cfg.batch_size) for name, d in data.items()}
    train_x, train_where = feats["train"]
    train_y = data["train"].word_tags[train_where[:, 0], train_where[:, 1]]  # (M,)
    grid = []
    for l2 in cfg.l2s:
        probe = fit_probe(train_x, train_y, len(tags), l2, cfg.max_iter)
        row: dict[str, Any] = {"l2": l2}
        for name in ("dev", "test"):
            x, where = feats[name]
            words = torch.zeros_like(data[name].word_tags)  # (N, W) "O" for words without a feature
            words[where[:, 0], where[:, 1]] = probe.logits(x).argmax(-1)
            row[name] = tagging_scores(words, data[name].word_tags, tags, cfg.span_mode)
        grid.append(row)
    result = select_on_dev(grid, "l2", "f1")
    result.update(tags=tags, kind=loaded.kind, seconds=time.perf_counter() - start)
    return result
