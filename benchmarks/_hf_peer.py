"""The peer side of bench_throughput: the Hugging Face Trainer recipe on lmbench's own data and model.

run_mlm.py / run_clm.py train with `Trainer` and `DataCollatorForLanguageModeling` on packed blocks;
T5 span corruption has no PyTorch recipe in transformers, so the peer uses a straightforward port of the
Flax example's `DataCollatorForT5MLM` (a NumPy noise mask per example). Everything that is not the
training loop comes from the lmbench config the other side runs: the tokenizer and token stream (same
cache), the block length, the model (lmbench's builder, so the same class, config and initial weights
for the same seed), batch size, steps and the optimiser's hyper-parameters. Only the loop differs.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch.utils.data import Dataset

from lmbench.backbones import build_backbone, parameter_count
from lmbench.data.blocks import BlockView, build_token_stream
from lmbench.data.sources import make_source
from lmbench.data.tokenizer import load_or_train_tokenizer
from lmbench.objectives.base import TokenInfo
from lmbench.pretrain import resolve_objective

IGNORE = -100


class FramedBlocks(Dataset):
    """Rows as run_mlm.py's tokenised, grouped dataset hands them to the collator: python lists of
    input_ids, attention_mask and special_tokens_mask; MLM blocks framed as [CLS] block [SEP]."""

    def __init__(self, view: BlockView, tokens: TokenInfo, frame: bool) -> None:
        self.view, self.tokens, self.frame = view, tokens, frame
        self.special = np.zeros(tokens.vocab_size, dtype=bool)  # (V,) id -> is special
        self.special[list(tokens.special_ids)] = True

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        ids = self.view.get(np.array([i])).input_ids[0].numpy()  # (L,)
        if self.frame:
            ids = np.concatenate([[self.tokens.cls_id], ids, [self.tokens.sep_id]])  # (L + 2,)
        return {"input_ids": ids.tolist(), "attention_mask": [1] * len(ids),
                "special_tokens_mask": self.special[ids].astype(np.int64).tolist()}


class T5SpanCollator:
    """T5 span corruption as the Flax example's DataCollatorForT5MLM does it, one example at a time:
    noise span k -> <extra_id_k> (counted down from the top of the vocabulary) in the inputs, targets
    <extra_id_k> + span k ..., EOS at the end of both; inputs padded to `input_len` if shorter."""

    def __init__(self, vocab_size: int, eos_id: int, pad_id: int, noise_density: float, mean_span: float,
                 input_len: int, seed: int) -> None:
        self.vocab_size, self.eos_id, self.pad_id = vocab_size, eos_id, pad_id
        self.noise_density, self.mean_span, self.input_len = noise_density, mean_span, input_len
        self.rng = np.random.default_rng(seed)

    def __call__(self, examples: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        ids = np.asarray([e["input_ids"] for e in examples])  # (B, n)
        mask = np.asarray([self.random_spans_noise_mask(ids.shape[1]) for _ in range(len(ids))])  # (B, n)
        inputs = self.filter(ids, self.sentinel_ids(mask.astype(np.int8)))  # (B, Lin)
        labels = self.filter(ids, self.sentinel_ids((~mask).astype(np.int8)))  # (B, Ltgt)
        if inputs.shape[1] < self.input_len:
            inputs = np.pad(inputs, ((0, 0), (0, self.input_len - inputs.shape[1])), constant_values=self.pad_id)
        return {"input_ids": torch.from_numpy(inputs), "attention_mask": torch.from_numpy(inputs != self.pad_id).long(),
                "labels": torch.from_numpy(labels)}

    def sentinel_ids(self, mask: np.ndarray) -> np.ndarray:
        starts = mask - np.roll(mask, 1, axis=-1) * mask
        starts[:, 0] = mask[:, 0]
        sentinel = np.where(starts != 0, np.cumsum(starts, axis=-1), starts)
        sentinel = np.where(sentinel != 0, self.vocab_size - sentinel, 0)
        return sentinel - (mask - starts)

    def filter(self, ids: np.ndarray, sentinel: np.ndarray) -> np.ndarray:
        full = np.where(sentinel != 0, sentinel, ids)
        rows = full[full >= 0].reshape((ids.shape[0], -1))
        return np.concatenate([rows, np.full((ids.shape[0], 1), self.eos_id)], axis=-1)

    def random_spans_noise_mask(self, length: int) -> np.ndarray:
        num_noise = int(np.round(length * self.noise_density))
        num_noise = min(max(num_noise, 1), length - 1)
        num_spans = max(int(np.round(num_noise / self.mean_span)), 1)

        def segmentation(num_items: int, num_segments: int) -> np.ndarray:
            order = np.arange(num_items - 1) < (num_segments - 1)
            self.rng.shuffle(order)
            first = np.pad(order, [[1, 0]])
            segment_id = np.cumsum(first)
            _, lengths = np.unique(segment_id, return_counts=True)
            return lengths

        noise = segmentation(num_noise, num_spans)
        clean = segmentation(length - num_noise, num_spans)
        interleaved = np.reshape(np.stack([clean, noise], axis=1), [num_spans * 2])
        span_starts = np.cumsum(interleaved)[:-1]
        start_indicator = np.zeros((length,), dtype=np.int8)
        start_indicator[span_starts] = True
        return np.cumsum(start_indicator) % 2 == 1


def build_collator(name: str, objective: Any, tokenizer: Any, tokens: TokenInfo, seq_len: int, seed: int) -> Any:
    from transformers import DataCollatorForLanguageModeling

    if name == "mlm":
        c = objective.config
        return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=c.mlm_probability,
                                               mask_replace_prob=c.mask_replace_prob,
                                               random_replace_prob=c.random_replace_prob, seed=seed)
    if name == "clm":
        return DataCollatorForLanguageModeling(tokenizer, mlm=False)
    if name == "t5_span":
        c = objective.config
        return T5SpanCollator(tokens.vocab_size, tokens.eos_id, tokens.pad_id, c.noise_density,
                              c.mean_noise_span_length, seq_len, seed)
    raise ValueError(f"objective {name!r}: allowed values: mlm, clm, t5_span")


def counting_trainer(trainer_class: type) -> type:
    """`trainer_class` that also counts the batches and input tokens it trains on (nothing else changes)."""

    class CountingTrainer(trainer_class):
        input_tokens = batches = 0

        def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
            self.input_tokens += int(inputs["input_ids"].numel())
            self.batches += 1
            return super().training_step(model, inputs, *args, **kwargs)

    return CountingTrainer


@torch.no_grad()
def mlm_val_loss(model: torch.nn.Module, batches: Any) -> float:
    """Per-token MLM cross-entropy over lmbench's fixed validation batches (full-vocabulary logits)."""
    model.eval()
    total, count = torch.zeros(()), torch.zeros(())
    for k in range(len(batches)):
        b = batches[k]
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()  # (B, L, V)
        total += F.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(), ignore_index=IGNORE, reduction="sum")
        count += (b["labels"] != IGNORE).sum()
    return float(total / count.clamp_min(1))


def prepare(cfg: DictConfig) -> dict[str, Any]:
    """What lmbench's recipe derives from `cfg` before training: objective, tokenizer, token stream
    split, block length (read from the same caches, so both sides see identical ids and blocks)."""
    resolved = resolve_objective(cfg)
    source = make_source(cfg.data)
    tokenizer, tok_hash = load_or_train_tokenizer(cfg.data.tokenizer, source, cfg.data.cache_dir)
    tokens = TokenInfo.from_tokenizer(tokenizer)
    objective = resolved.cls(resolved.config, tokens)
    objective.backbone_kind = resolved.kind
    train_part, val_part = build_token_stream(source, tokenizer, tok_hash, cfg.data.cache_dir).split(
        cfg.data.val_fraction)
    return {"resolved": resolved, "tokenizer": tokenizer, "tokens": tokens, "objective": objective,
            "train": train_part, "val": val_part, "block_len": objective.block_length(int(cfg.data.seq_len))}


def val_batches(cfg: DictConfig, data: dict[str, Any]) -> Any:
    """lmbench's fixed validation batches of this run (the ones its own val/loss is computed on)."""
    from lmbench.data.datamodule import ValBatches

    return ValBatches(BlockView(data["val"], data["block_len"]), data["objective"], int(cfg.data.batch_size),
                      int(cfg.seed), int(cfg.trainer.limit_val_batches))


def run_hf(cfg: DictConfig, bf16: bool, timer: Any, evaluate: bool) -> dict[str, Any]:
    """Train with the HF Trainer on what `cfg` (an lmbench config) describes; `timer` is a TrainerCallback
    with `.stamps`. Returns counts (tokens, parameters) and, with `evaluate`, the MLM validation loss."""
    from transformers import Trainer, TrainingArguments, set_seed

    data = prepare(cfg)
    resolved, objective, tokens, tokenizer = data["resolved"], data["objective"], data["tokens"], data["tokenizer"]
    name, block_len, train_part = resolved.cls.name, data["block_len"], data["train"]
    seq_len, steps, optim = int(cfg.data.seq_len), int(cfg.trainer.max_steps), cfg.trainer.optim
    set_seed(int(cfg.seed))
    model = build_backbone(cfg.backbone, resolved.kind, tokens, max_positions=max(block_len, seq_len) + 2)
    dataset = FramedBlocks(BlockView(train_part, block_len), tokens, frame=name == "mlm" and
                           bool(getattr(objective.config, "add_cls_sep", False)))
    collator = build_collator(name, objective, tokenizer, tokens, seq_len, int(cfg.seed))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, max_steps=steps, per_device_train_batch_size=int(cfg.data.batch_size),
            learning_rate=optim.lr, weight_decay=optim.weight_decay, adam_beta1=optim.betas[0],
            adam_beta2=optim.betas[1], adam_epsilon=optim.eps, lr_scheduler_type=optim.schedule,
            warmup_steps=max(1, int(round(optim.warmup_fraction * steps))),
            max_grad_norm=cfg.trainer.gradient_clip_val or 0.0, seed=int(cfg.seed), bf16=bf16,
            use_cpu=not torch.cuda.is_available(),  # bf16=True on CPU needs use_cpu; fp32 runs there anyway
            dataloader_drop_last=True)  # as lmbench: no partial batch at an epoch's end, so equal tokens per step
        trainer = counting_trainer(Trainer)(model=model, args=args, train_dataset=dataset, data_collator=collator,
                                            callbacks=[timer])
        started = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - started
    result = {"steps": int(trainer.state.global_step), "input_tokens": trainer.input_tokens,
              "batches": trainer.batches, "parameters": parameter_count(model)["total"],
              "train_wall_s": wall, "optimizer": type(trainer.optimizer.optimizer if hasattr(
                  trainer.optimizer, "optimizer") else trainer.optimizer).__name__,
              "attn_implementation": model.config._attn_implementation}
    if evaluate:
        result["val_loss"] = mlm_val_loss(model, val_batches(cfg, data))
    return result
