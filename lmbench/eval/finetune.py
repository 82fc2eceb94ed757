"""Downstream mode 1: full fine-tuning of a pretrained backbone on sequence classification or NER.

Objectives are compared fairly only if each one gets the same tuning effort, so every backbone runs
the same small fixed grid (learning rates x seeds, a fixed number of epochs), is re-loaded fresh from
its directory for every grid point, and is selected on dev; the test score reported is the one of
the dev-best setting. All backbone parameters train, plus a fresh linear head: on the pooled
features for classification (see lmbench.eval.pooling), on every piece for NER, supervised on each
word's first piece and scored on whole words with SpanF1. A plain PyTorch loop keeps it small; the
caller owns torch.set_num_threads.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel

from lmbench.eval.encode import (IGNORE, Encoded, encode_classification, encode_tagging, label_list, tag_list,
                                 words_from_pieces)
from lmbench.eval.family import LoadedModel, load_scorer_model
from lmbench.eval.metrics import SpanF1, classification_metrics
from lmbench.eval.pooling import encoder_hidden, pool, resolve_pooling
from lmbench.tasks import TextExample, TokenExample


@dataclass
class FinetuneConfig:
    """The fine-tuning grid and loop, identical for every objective.

    lrs x seeds is the grid; each point trains `epochs` epochs of AdamW (`weight_decay` on matrices
    only) with linear warmup over `warmup_fraction` of the steps then linear decay to 0, and
    gradient clipping at `max_grad_norm`. pooling (classification only; NER reads every piece):
    auto (the kind's default) | first | last | mean. span_mode: SpanF1 mode for NER, conlleval | strict.
    device: where the model trains ("cpu", "cuda", ...); encoded data stays on the CPU.
    """

    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3)
    epochs: int = 3
    batch_size: int = 32
    max_length: int = 128
    seeds: tuple[int, ...] = (0,)
    pooling: str = "auto"
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    eval_batch_size: int = 128
    span_mode: str = "conlleval"
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.lrs, self.seeds = tuple(float(x) for x in self.lrs), tuple(int(s) for s in self.seeds)
        if not self.lrs or any(not lr > 0 for lr in self.lrs):
            raise ValueError(f"finetune.lrs={list(self.lrs)}; allowed values: a non-empty list of numbers > 0")
        if not self.seeds:
            raise ValueError("finetune.seeds is empty; allowed values: a non-empty list of integers")
        for key in ("epochs", "batch_size", "max_length", "eval_batch_size"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"finetune.{key}={getattr(self, key)!r}; allowed values: an integer >= 1")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"finetune.warmup_fraction={self.warmup_fraction!r}; allowed values: 0 <= x < 1")
        if self.pooling not in ("auto", "first", "last", "mean"):
            raise ValueError(f"finetune.pooling={self.pooling!r}; allowed values: auto, first, last, mean")
        if self.span_mode not in ("conlleval", "strict"):
            raise ValueError(f"finetune.span_mode={self.span_mode!r}; allowed values: conlleval, strict")


class SequenceClassifier(nn.Module):
    """Backbone -> pooled features (B, H) -> linear head -> class logits (B, C)."""

    def __init__(self, backbone: PreTrainedModel, num_classes: int, pooling: str, generator: torch.Generator):
        super().__init__()
        self.backbone, self.pooling = backbone, pooling
        self.head = new_head(int(backbone.config.hidden_size), num_classes, generator)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = encoder_hidden(self.backbone, input_ids, attention_mask)  # (B, T, H)
        return self.head(pool(hidden, attention_mask, self.pooling))  # (B, C)


class TokenTagger(nn.Module):
    """Backbone -> hidden state of every piece (B, T, H) -> linear head -> tag logits (B, T, C)."""

    def __init__(self, backbone: PreTrainedModel, num_tags: int, generator: torch.Generator):
        super().__init__()
        self.backbone = backbone
        self.head = new_head(int(backbone.config.hidden_size), num_tags, generator)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.head(encoder_hidden(self.backbone, input_ids, attention_mask))  # (B, T, C)


def new_head(hidden: int, num_outputs: int, generator: torch.Generator) -> nn.Linear:
    """A linear head with weights ~ N(0, 0.02^2) drawn from `generator` and zero bias (BERT's init)."""
    head = nn.Linear(hidden, num_outputs)
    with torch.no_grad():
        head.weight.copy_(torch.randn(num_outputs, hidden, generator=generator) * 0.02)  # (C, H)
        head.bias.zero_()
    return head


def model_max_length(model: PreTrainedModel, wanted: int) -> int:
    """`wanted`, lowered to the number of positions the model's table holds (none for relative positions)."""
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is None:
        return wanted
    if model.config.model_type == "roberta":  # positions start at pad_id + 1
        positions -= int(model.config.pad_token_id or 0) + 1
    return min(wanted, int(positions))


def classification_scores(preds: Tensor, gold: Tensor, num_classes: int) -> dict[str, float]:
    """{"acc", "macro_f1"} of class ids preds (N,) against gold (N,)."""
    metrics = classification_metrics(num_classes)
    metrics.update(preds, gold)
    return {k: float(v) for k, v in metrics.compute().items()}


def tagging_scores(word_preds: Tensor, word_tags: Tensor, tags: Sequence[str], mode: str) -> dict[str, float]:
    """Entity precision / recall / f1 (and per type) of word tag ids (N, W) against gold (N, W, -100 = none)."""
    metric = SpanF1(tags=list(tags), mode=mode)
    metric.update(word_preds, word_tags)
    return {k: float(v) for k, v in metric.compute().items()}


def select_on_dev(grid: list[dict[str, Any]], setting: str, metric: str) -> dict[str, Any]:
    """Pick the grid setting with the best mean dev `metric` over seeds (the first on ties).

    grid rows: {setting: value, "seed": s, "dev": {...}, "test": {...}}. Returns {"metric",
    "dev_best", "dev_median" (median over settings), "test" (the dev-best setting's), "best_<setting>",
    "dev_metrics", "test_metrics" (seed means of the dev-best setting), "grid"}.
    """
    values = list(dict.fromkeys(row[setting] for row in grid))
    means: dict[Any, dict[str, dict[str, float]]] = {}
    for value in values:
        rows = [row for row in grid if row[setting] == value]
        means[value] = {split: {k: statistics.fmean(r[split][k] for r in rows) for k in rows[0][split]}
                        for split in ("dev", "test")}
    best = max(values, key=lambda v: (means[v]["dev"][metric], -values.index(v)))
    return {"metric": metric, "dev_best": means[best]["dev"][metric],
            "dev_median": statistics.median(means[v]["dev"][metric] for v in values),
            "test": means[best]["test"][metric], f"best_{setting}": best,
            "dev_metrics": means[best]["dev"], "test_metrics": means[best]["test"], "grid": grid}


def _schedule(total: int, warmup_fraction: float) -> Callable[[int], float]:
    warm = round(warmup_fraction * total)
    return lambda s: min((s + 1) / max(1, warm), max(0.0, (total - s) / max(1, total - warm)))


def train_model(model: nn.Module, data: Encoded, cfg: FinetuneConfig, lr: float, generator: torch.Generator) -> None:
    """`cfg.epochs` epochs of AdamW on `data`, batches shuffled with `generator`; cross-entropy that
    ignores -100 (token-level when labels are (N, T))."""
    device = torch.device(cfg.device)
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg.epochs * steps_per_epoch,
                                                                       cfg.warmup_fraction))
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(data), generator=generator)  # (N,)
        for index in order.split(cfg.batch_size):
            ids, mask, labels = (x.to(device) for x in data.rows(index))  # (B, t) (B, t) (B,) or (B, t)
            logits = model(ids, mask)  # (B, C) or (B, t, C)
            loss = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=IGNORE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()


@torch.no_grad()
def predict(model: nn.Module, data: Encoded, batch_size: int, device: str = "cpu") -> Tensor:
    """Arg-max predictions in data order: class ids (N,), or piece tag ids (N, T) for tagging."""
    model.eval()
    out = torch.zeros(data.labels.shape, dtype=torch.long)  # (N,) or (N, T)
    for index in torch.arange(len(data)).split(batch_size):
        ids, mask, _ = (x.to(device) for x in data.rows(index))
        preds = model(ids, mask).argmax(-1).cpu()  # (B,) or (B, t)
        if out.dim() == 2:
            out[index, :preds.shape[1]] = preds
        else:
            out[index] = preds
    return out


def _load(model_dir: str | Path, device: str) -> LoadedModel:
    return load_scorer_model(model_dir, device=device)


def _grid(model_dir: str | Path, cfg: FinetuneConfig, build: Callable[[LoadedModel, torch.Generator], nn.Module],
          data: Encoded, score: Callable[[nn.Module], dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """Train a fresh model per (lr, seed) and score it on dev and test; the caller's RNG is untouched."""
    rows = []
    for lr in cfg.lrs:
        for seed in cfg.seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # dropout, if the saved config has any
                generator = torch.Generator().manual_seed(seed)
                model = build(_load(model_dir, cfg.device), generator).to(cfg.device)
                train_model(model, data, cfg, lr, generator)
                rows.append({"lr": lr, "seed": seed, **score(model)})
    return rows


def finetune_classification(model_dir: str | Path, train: Sequence[TextExample], dev: Sequence[TextExample],
                            test: Sequence[TextExample], cfg: FinetuneConfig | None = None,
                            source: str = "task data") -> dict[str, Any]:
    """Fine-tune the backbone in `model_dir` (save_pretrained dir with its tokenizer) on text classification.

    Labels are the sorted training labels; a dev or test label training never shows raises
    TaskDataError (naming `source`) before any training. Returns select_on_dev's dict for "acc"
    (macro_f1 in dev_metrics / test_metrics), plus "labels", "kind", "pooling", "test_majority"
    (accuracy of always answering the most frequent training label) and "seconds".
    """
    cfg = cfg or FinetuneConfig()
    start = time.perf_counter()
    labels = label_list([e.label for e in train], {"dev": [e.label for e in dev],
                                                       "test": [e.label for e in test]}, source)
    reference = _load(model_dir, "cpu")  # its tokenizer, kind and position table; each grid point re-loads
    kind, pooling = reference.kind, resolve_pooling(cfg.pooling, reference.kind)
    length = model_max_length(reference.model, cfg.max_length)
    data = {name: encode_classification(reference.tokenizer, kind, split, labels, length)
            for name, split in (("train", train), ("dev", dev), ("test", test))}
    del reference

    def build(loaded: LoadedModel, generator: torch.Generator) -> nn.Module:
        return SequenceClassifier(loaded.model, len(labels), pooling, generator)

    def score(model: nn.Module) -> dict[str, dict[str, float]]:
        return {name: classification_scores(predict(model, data[name], cfg.eval_batch_size, cfg.device),
                                            data[name].labels, len(labels)) for name in ("dev", "test")}

    result = select_on_dev(_grid(model_dir, cfg, build, data["train"], score), "lr", "acc")
    majority = Counter(e.label for e in train).most_common(1)[0][0]
    result.update(labels=labels, kind=kind, pooling=pooling,
                  test_majority=sum(e.label == majority for e in test) / max(1, len(test)),
                  seconds=time.perf_counter() - start)
    return result


def finetune_ner(model_dir: str | Path, train: Sequence[TokenExample], dev: Sequence[TokenExample],
                 test: Sequence[TokenExample], cfg: FinetuneConfig | None = None,
                 source: str = "task data") -> dict[str, Any]:
    """Fine-tune the backbone in `model_dir` on IOB2 tagging; scored as word-level span F1 (SpanF1).

    Tags are "O" then the sorted training tags; a dev or test tag training never shows raises
    TaskDataError. Returns select_on_dev's dict for "f1" (precision, recall and per-type scores in
    dev_metrics / test_metrics), plus "tags", "kind" and "seconds".
    """
    cfg = cfg or FinetuneConfig()
    start = time.perf_counter()
    tags = tag_list([t for e in train for t in e.tags], {"dev": [t for e in dev for t in e.tags],
                                                             "test": [t for e in test for t in e.tags]}, source)
    reference = _load(model_dir, "cpu")
    kind, length = reference.kind, model_max_length(reference.model, cfg.max_length)
    data = {name: encode_tagging(reference.tokenizer, kind, split, tags, length)
            for name, split in (("train", train), ("dev", dev), ("test", test))}
    del reference

    def build(loaded: LoadedModel, generator: torch.Generator) -> nn.Module:
        return TokenTagger(loaded.model, len(tags), generator)

    def score(model: nn.Module) -> dict[str, dict[str, float]]:
        out = {}
        for name in ("dev", "test"):
            pieces = predict(model, data[name], cfg.eval_batch_size, cfg.device)  # (N, T)
            words = words_from_pieces(pieces, data[name].first_piece)  # (N, W)
            out[name] = tagging_scores(words, data[name].word_tags, tags, cfg.span_mode)
        return out

    result = select_on_dev(_grid(model_dir, cfg, build, data["train"], score), "lr", "f1")
    result.update(tags=tags, kind=kind, seconds=time.perf_counter() - start)
    return result
