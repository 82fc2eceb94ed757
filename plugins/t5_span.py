"""T5 span corruption (Raffel et al. 2020) as a tested, batch-vectorised PyTorch objective.

The reference implementation exists only as NumPy code looping over examples (T5's
`random_spans_noise_mask`, Hugging Face's Flax example). This module keeps its exact semantics: a raw
block of n tokens gets round(n * noise_density) noise tokens in max(1, round(noise / mean)) spans, the
noise and non-noise tokens are each cut into that many non-empty runs at uniformly random cut points
and interleaved starting with non-noise. Inputs replace noise span k by sentinel k (`<extra_id_k>`)
and end with EOS; targets are sentinel k followed by span k's tokens, for every span, then EOS.
All rows share n, so input and target lengths are fixed and the whole batch is built with sort,
cumsum and boolean selection, never a per-token Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from lmbench.objectives.base import (
    Batch,
    Blocks,
    LossOutput,
    Objective,
    ObjectiveConfig,
    ObjectiveConfigError,
    PromisedStat,
    TokenInfo,
)
from lmbench_plugins.seq2seq_loss import IGNORE_INDEX, seq2seq_loss

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass
class T5SpanConfig(ObjectiveConfig):
    """noise_density: fraction of raw tokens masked, in (0, 1).
    mean_noise_span_length: average noise span length in tokens, >= 1."""

    name: str = "t5_span"
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        d = self.noise_density
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 < float(d) < 1.0:
            raise ObjectiveConfigError(
                f"objective {self.name!r}: noise_density={d!r}; allowed values: 0 < noise_density < 1")
        m = self.mean_noise_span_length
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not float(m) >= 1.0:
            raise ObjectiveConfigError(
                f"objective {self.name!r}: mean_noise_span_length={m!r}; allowed values: >= 1")


def random_segmentation(rows: int, num_items: int, num_segments: int, generator: torch.Generator,
                        device: torch.device) -> Tensor:
    """Lengths of a uniformly random split of `num_items` into `num_segments` non-empty runs, per row.

    Like T5's `_random_segmentation`: num_segments - 1 cut points chosen without replacement among the
    num_items - 1 gaps (the positions of the smallest random keys). Returns (rows, num_segments) int64.
    """
    keys = torch.rand(rows, num_items - 1, generator=generator, device=device)  # (B, n-1)
    chosen = torch.arange(num_items - 1, device=device) < num_segments - 1  # (n-1,)
    cut = torch.zeros_like(keys, dtype=torch.bool).scatter_(
        1, keys.argsort(dim=1), chosen.expand(rows, -1))  # (B, n-1) random subset of gaps
    first_in_segment = torch.cat([torch.zeros(rows, 1, dtype=torch.long, device=device), cut.long()], 1)
    segment_id = first_in_segment.cumsum(dim=1)  # (B, n) in [0, num_segments)
    lengths = torch.zeros(rows, num_segments, dtype=torch.long, device=device)
    return lengths.scatter_add_(1, segment_id, torch.ones_like(segment_id))  # (B, S)


def compress_spans(ids: Tensor, spans: Tensor, sentinels: Tensor) -> Tensor:
    """Replace each run of True in `spans` by the next sentinel; every row must keep as many tokens.

    ids, spans: (B, n); sentinels: (S,) ids in order. Returns (B, n - spans.sum(1)[0] + runs).
    """
    starts = spans & ~torch.nn.functional.pad(spans, (1, 0))[:, :-1]  # (B, n) first token of each run
    run_index = (starts.long().cumsum(dim=1) - 1).clamp_min(0)  # (B, n) k for run k
    out = torch.where(starts, sentinels[run_index.clamp_max(len(sentinels) - 1)], ids)  # (B, n)
    keep = ~spans | starts  # (B, n) the same count in every row
    return out[keep].view(ids.shape[0], -1)


class T5SpanCorruption(Objective):
    """T5 span corruption; promises noise density and mean noise span length on every batch.

    Batch: input_ids / attention_mask (B, seq_len) (right-padded with pad_id when T5's length search
    lands short of seq_len, e.g. noise_density 0.5), labels (B, target_length(seq_len)); raw pad tokens
    in a block are not supervised (label -100) nor attended to.
    """

    name: ClassVar[str] = "t5_span"
    backbone_kinds: ClassVar[tuple[str, ...]] = ("encoder-decoder",)
    config_class: ClassVar[type[ObjectiveConfig]] = T5SpanConfig

    def __init__(self, config: T5SpanConfig, tokens: TokenInfo) -> None:
        super().__init__(config, tokens)
        self.config: T5SpanConfig = config
        self._padded_length: dict[int, int] = {}  # raw block length -> seq_len it was sized for

    # ---- lengths -------------------------------------------------------------------------------
    def noise_counts(self, raw_length: int) -> tuple[int, int]:
        """(noise tokens, noise spans) for a raw block, clamped as in T5's random_spans_noise_mask."""
        noise = min(max(round(raw_length * self.config.noise_density), 1), raw_length - 1)
        spans = max(round(noise / self.config.mean_noise_span_length), 1)
        return noise, spans

    def input_length(self, raw_length: int) -> int:
        """Corrupted input length: non-noise tokens, one sentinel per span, EOS."""
        noise, spans = self.noise_counts(raw_length)
        return raw_length - noise + spans + 1

    def block_length(self, seq_len: int) -> int:
        """Largest raw length whose corrupted input (with EOS) fits seq_len, as T5's
        `compute_input_and_target_lengths`; also checks that spans fit the sentinels."""
        density, mean = self.config.noise_density, self.config.mean_noise_span_length

        def t5_input_length(n: int) -> tuple[int, int]:  # T5's helper, unclamped
            noise = int(round(n * density))
            spans = int(round(noise / mean))
            return n - noise + spans + 1, noise + spans + 1

        raw = seq_len
        while t5_input_length(raw + 1)[0] <= seq_len:
            raw += 1
        inputs, targets = t5_input_length(raw)
        if density == 0.5 and targets > inputs:  # T5's hack: keep targets <= inputs
            raw -= 1
        while raw > 2 and self.input_length(raw) > seq_len:  # T5 overshoots when mean == 1
            raw -= 1
        self._check_feasible(raw, seq_len)
        self._padded_length[raw] = max(seq_len, self._padded_length.get(raw, 0))
        return raw

    def target_length(self, seq_len: int) -> int:
        """Label length for blocks sized by `block_length(seq_len)`: sentinels, noise tokens, EOS."""
        noise, spans = self.noise_counts(self.block_length(seq_len))
        return noise + spans + 1

    def _check_feasible(self, raw_length: int, seq_len: int | None = None) -> None:
        noise, spans = self.noise_counts(raw_length)
        where = f"seq_len={seq_len} (raw block {raw_length})" if seq_len else f"raw block length {raw_length}"
        if raw_length < 2:
            raise ObjectiveConfigError(f"objective {self.config.name!r}: {where} is too short; need >= 2 tokens")
        if spans > len(self.tokens.sentinel_ids):
            raise ObjectiveConfigError(
                f"objective {self.config.name!r}: {where} needs {spans} noise spans but the tokenizer has "
                f"{len(self.tokens.sentinel_ids)} sentinels (<extra_id_k>); lower seq_len or noise_density, "
                f"raise mean_noise_span_length, or build the tokenizer with more sentinels")
        if raw_length - noise < spans:
            raise ObjectiveConfigError(
                f"objective {self.config.name!r}: noise_density={self.config.noise_density} with "
                f"mean_noise_span_length={self.config.mean_noise_span_length} leaves {raw_length - noise} "
                f"non-noise tokens for {spans} spans at {where}; lower noise_density or raise the span length")

    # ---- corruption ----------------------------------------------------------------------------
    def noise_mask(self, rows: int, raw_length: int, generator: torch.Generator,
                   device: torch.device | str = "cpu") -> Tensor:
        """T5's random_spans_noise_mask for every row at once. (B, n) bool, starts with non-noise."""
        noise, spans = self.noise_counts(raw_length)
        device = torch.device(device)
        noise_lengths = random_segmentation(rows, noise, spans, generator, device)  # (B, S)
        clean_lengths = random_segmentation(rows, raw_length - noise, spans, generator, device)  # (B, S)
        interleaved = torch.stack([clean_lengths, noise_lengths], dim=2).flatten(1)  # (B, 2S)
        span_starts = interleaved.cumsum(dim=1)[:, :-1]  # (B, 2S-1) all < n, distinct
        indicator = torch.zeros(rows, raw_length, dtype=torch.long, device=device)
        indicator.scatter_(1, span_starts, 1)  # (B, n)
        return indicator.cumsum(dim=1) % 2 == 1  # (B, n)

    def corrupt(self, blocks: Blocks, generator: torch.Generator) -> Batch:
        ids = blocks.input_ids  # (B, n)
        rows, n = ids.shape
        self._check_feasible(n)
        noise = self.noise_mask(rows, n, generator, ids.device)  # (B, n)
        sentinels = torch.tensor(self.tokens.sentinel_ids, dtype=ids.dtype, device=ids.device)  # (K,)
        eos = torch.full((rows, 1), self.tokens.eos_id, dtype=ids.dtype, device=ids.device)
        inputs = torch.cat([compress_spans(ids, noise, sentinels), eos], dim=1)  # (B, Lin)
        # Targets: the complement trick (T5/Flax): non-noise run k becomes sentinel k. The first run of
        # every row is non-noise, so targets read sentinel_k, noise span k, ..., EOS.
        targets = torch.cat([compress_spans(ids, ~noise, sentinels), eos], dim=1)  # (B, Ltgt)
        pad = self.tokens.pad_id
        labels = targets.masked_fill(targets == pad, IGNORE_INDEX)  # (B, Ltgt)
        width = max(self._padded_length.get(n, 0), inputs.shape[1])
        attention_mask = (inputs != pad).long()  # (B, Lin)
        if width > inputs.shape[1]:
            extra = width - inputs.shape[1]
            inputs = torch.nn.functional.pad(inputs, (0, extra), value=pad)  # (B, seq_len)
            attention_mask = torch.nn.functional.pad(attention_mask, (0, extra), value=0)  # (B, seq_len)
        return {"input_ids": inputs, "attention_mask": attention_mask, "labels": labels}

    def loss(self, model: PreTrainedModel, batch: Batch) -> LossOutput:
        return seq2seq_loss(model, batch)

    # ---- audit ---------------------------------------------------------------------------------
    def promised_stats(self) -> dict[str, PromisedStat]:
        """The configured density and span length; once `block_length` fixed the raw block length n,
        the exact values T5's rounding gives for n (e.g. n=70: 10 noise tokens in 3 spans, 3.33)."""
        if len(self._padded_length) == 1:
            (raw,) = self._padded_length
            noise, spans = self.noise_counts(raw)
            return {
                "noise_density": PromisedStat(noise / raw, 1e-6, f"{noise} noise tokens / {raw} raw tokens"),
                "mean_noise_span_length": PromisedStat(noise / spans, 1e-6, f"{noise} noise tokens / {spans} spans"),
            }
        return {
            "noise_density": PromisedStat(self.config.noise_density, 0.01, "noise tokens / raw tokens"),
            "mean_noise_span_length": PromisedStat(self.config.mean_noise_span_length, 0.25,
                                                   "noise tokens / noise spans"),
        }

    def measure_stats(self, blocks: Blocks, batch: Batch) -> dict[str, float]:
        """Counts sentinels in the labels (one per span); noise = label length - spans - EOS."""
        labels = batch["labels"]  # (B, Ltgt)
        sentinels = torch.tensor(self.tokens.sentinel_ids, dtype=labels.dtype, device=labels.device)
        spans = torch.isin(labels, sentinels).sum().item()
        noise = labels.numel() - spans - labels.shape[0]
        return {"noise_density": noise / blocks.input_ids.numel(),
                "mean_noise_span_length": noise / max(spans, 1)}
