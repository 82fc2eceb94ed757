"""BART text infilling (Lewis et al. 2020) with optional sentence permutation, vectorised in PyTorch.

The reference is fairseq's `DenoisingDataset` (mask_length="span-poisson", replace_length=1), which
works on one example at a time with Python loops. Here the whole batch is corrupted with torch ops:
span lengths are Poisson(lambda) draws taken until they cover `mask_ratio` of each row's non-special
tokens (the last one truncated to the budget); each span with length > 0 is replaced by ONE mask
token and each zero-length span inserts one; the decoder reconstructs the original block.

Differences from fairseq, on purpose:
- spans never overlap (fairseq's random starts may overlap, which silently lowers the masked fraction
  below `mask_ratio`); span placement is a uniform random arrangement of spans and kept tokens;
- special tokens (pad, bos, eos, sep, ...) are never masked and a span never crosses one: a span that
  would is cut at the special token (rare in packed blocks; it lowers the masked fraction by about
  lambda / 2 divided by the mean distance between special tokens);
- masking is per token, not per word (`Blocks.word_starts` is not used);
- if insertions would make the encoder input longer than the block (only when lambda is small), the
  last zero-length spans of that row are dropped so the input fits the block length.

The batch carries audit tensors under keys starting with `stat_` (the core does not pass `stat_*`
keys to the model; `loss` ignores them): `stat_masked` (B, L) bool, the positions of the (permuted)
block that were masked; `stat_span_lengths` (B, K) tokens each span removed, in order of position,
-1 for unused or dropped spans; `stat_drawn_span_lengths` (B, K) the Poisson draw of each used span.
"""

from __future__ import annotations

import math
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
class BartInfillConfig(ObjectiveConfig):
    """mask_ratio: fraction of non-special tokens masked, in [0, 1].
    poisson_lambda: mean span length, > 0.
    permute_sentences: shuffle sentences (ended by TokenInfo.sentence_end_ids) before infilling.
    random_ratio: fraction of mask tokens replaced by a random ordinary token, in [0, 1]."""

    name: str = "bart_infill"
    mask_ratio: float = 0.3
    poisson_lambda: float = 3.0
    permute_sentences: bool = False
    random_ratio: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_probability("mask_ratio")
        self.check_probability("random_ratio")
        lam = self.poisson_lambda
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 < float(lam) <= 64.0:
            raise ObjectiveConfigError(
                f"objective {self.name!r}: poisson_lambda={lam!r}; allowed values: 0 < poisson_lambda <= 64")
        if not isinstance(self.permute_sentences, bool):
            raise ObjectiveConfigError(f"objective {self.name!r}: permute_sentences="
                                       f"{self.permute_sentences!r}; allowed values: true, false")


def permute_sentences(ids: Tensor, sentence_end_ids: tuple[int, ...], pad_id: int,
                      generator: torch.Generator) -> Tensor:
    """Shuffle the sentences of every row; a sentence ends after a sentence-end token. (B, L) -> (B, L).

    Each sentence gets a random key; positions are stably sorted by their sentence's key, so tokens
    keep their order inside a sentence. Pad tokens stay at the end. Without end ids this is a no-op.
    """
    ends = torch.isin(ids, torch.tensor(sentence_end_ids, dtype=ids.dtype, device=ids.device))  # (B, L)
    sentence = ends.long().cumsum(dim=1) - ends.long()  # (B, L) sentence index, < L
    keys = torch.rand(ids.shape, generator=generator, device=ids.device).gather(1, sentence)  # (B, L)
    keys = keys.masked_fill(ids == pad_id, 2.0)  # (B, L) pads last
    order = keys.sort(dim=1, stable=True).indices  # (B, L)
    return ids.gather(1, order)


def draw_span_lengths(budget: Tensor, lam: float, generator: torch.Generator) -> Tensor:
    """Poisson(lam) span lengths per row, enough columns that every row's total reaches its budget.

    budget: (B,) tokens to mask. Returns (B, K) int64; rows use a prefix of their columns.
    """
    rows = budget.shape[0]
    chunk = math.ceil(int(budget.max().item()) / lam * 1.3) + 8 if rows else 8
    rates = torch.full((rows, chunk), float(lam), device=budget.device)
    lengths = torch.poisson(rates, generator=generator).long()  # (B, K)
    while (lengths.sum(dim=1) < budget).any():  # rare: draw another chunk for the whole batch
        lengths = torch.cat([lengths, torch.poisson(rates, generator=generator).long()], dim=1)
    return lengths


class BartInfilling(Objective):
    """BART text infilling (+ optional sentence permutation); labels are the original block.

    Batch: input_ids / attention_mask (B, L) (corrupted, right-padded with pad_id), labels (B, L)
    (the unpermuted original, -100 at raw pad tokens), plus the `stat_*` audit tensors (see module).
    """

    name: ClassVar[str] = "bart_infill"
    backbone_kinds: ClassVar[tuple[str, ...]] = ("encoder-decoder",)
    config_class: ClassVar[type[ObjectiveConfig]] = BartInfillConfig

    def __init__(self, config: BartInfillConfig, tokens: TokenInfo) -> None:
        super().__init__(config, tokens)
        self.config: BartInfillConfig = config
        self._is_special = torch.zeros(tokens.vocab_size, dtype=torch.bool)  # (V,) lookup, faster than isin
        self._is_special[list(tokens.special_ids)] = True
        self._block_len: int | None = None

    def block_length(self, seq_len: int) -> int:
        """Blocks are `seq_len` long (the encoder input only shrinks); remembered for the audit bound."""
        self._block_len = seq_len
        return seq_len

    def corrupt(self, blocks: Blocks, generator: torch.Generator) -> Batch:
        original = blocks.input_ids  # (B, L)
        ids = original
        if self.config.permute_sentences:
            ids = permute_sentences(ids, self.tokens.sentence_end_ids, self.tokens.pad_id, generator)
        rows, length = ids.shape
        dev = ids.device
        pos = torch.arange(length + 1, device=dev)  # (L+1,)
        special = self._is_special.to(dev)[ids]  # (B, L)
        n_ord = (~special).sum(dim=1)  # (B,)
        budget = torch.round(n_ord * self.config.mask_ratio).long()  # (B,)

        # Span lengths: Poisson draws until the budget is reached, the last one truncated to it.
        drawn = draw_span_lengths(budget, self.config.poisson_lambda, generator)  # (B, K)
        spans = drawn.shape[1]
        before = drawn.cumsum(dim=1) - drawn  # (B, K) tokens masked by earlier spans
        used = before < budget[:, None]  # (B, K)
        span_len = torch.minimum(drawn, budget[:, None] - before) * used  # (B, K)
        num_spans = used.sum(dim=1)  # (B,)

        # Placement in ordinary-token coordinates: a uniformly random order of the spans and the kept
        # ordinary tokens (stars and bars), so spans never overlap. Item t starts at item_start[t].
        num_items = num_spans + n_ord - budget  # (B,)
        items = int(num_items.max().item()) if rows else 0
        valid_item = torch.arange(items, device=dev) < num_items[:, None]  # (B, T)
        keys = torch.rand(rows, items, generator=generator, device=dev).masked_fill(~valid_item, 2.0)
        shuffled = keys.argsort(dim=1)  # (B, T) valid items first, in random order
        is_span = torch.zeros_like(valid_item).scatter_(
            1, shuffled, torch.arange(items, device=dev) < num_spans[:, None])  # (B, T) K random items
        span_of_item = (is_span.long().cumsum(dim=1) - 1).clamp(0, spans - 1)  # (B, T)
        item_len = torch.where(is_span, span_len.gather(1, span_of_item), 1) * valid_item  # (B, T)
        item_start = item_len.cumsum(dim=1) - item_len  # (B, T)
        start = torch.zeros(rows, spans + 1, dtype=torch.long, device=dev)
        start.scatter_(1, torch.where(is_span, span_of_item, spans), item_start)  # column K: discard
        start = start[:, :spans]  # (B, K) ordinary coordinate of each span, in order of position

        # Ordinary coordinate j <-> block position order[:, j]; seg = specials before ordinary j.
        rank = torch.where(special, n_ord[:, None] + special.long().cumsum(dim=1),
                           (~special).long().cumsum(dim=1)) - 1  # (B, L) ordinary first, then specials
        order = torch.empty_like(rank).scatter_(1, rank, pos[:length].expand(rows, -1))  # (B, L)
        seg = order - pos[:length]  # (B, L)
        nonzero = used & (span_len > 0)  # (B, K)
        tag = (torch.arange(spans, device=dev) + 1) * nonzero  # (B, K) span k -> k + 1
        diff = torch.zeros(rows, length + 1, dtype=torch.long, device=dev)
        diff.scatter_add_(1, start, tag).scatter_add_(1, start + span_len, -tag)
        inside = diff.cumsum(dim=1)[:, :length]  # (B, L) k + 1 inside span k, else 0
        span_seg = seg.gather(1, start.clamp_max(length - 1))  # (B, K)
        same_seg = seg == span_seg.gather(1, (inside - 1).clamp_min(0))  # (B, L) no special crossed
        masked_ord = (inside > 0) & same_seg & (pos[:length] < n_ord[:, None])  # (B, L)
        starts_ord = torch.zeros(rows, length + 1, dtype=torch.long, device=dev)
        starts_ord = starts_ord.scatter_add_(1, start, nonzero.long())[:, :length] > 0  # (B, L)
        masked = torch.zeros_like(special).scatter_(1, order, masked_ord)  # (B, L) block positions
        span_start = torch.zeros_like(special).scatter_(1, order, starts_ord)  # (B, L)

        # Zero-length spans insert a mask before ordinary token `start` (after the last one at the end);
        # when the input would outgrow the block, the row's last insertions are dropped.
        zero = used & (span_len == 0)  # (B, K)
        out_len = length - masked.sum(dim=1) + num_spans  # (B,)
        excess = (out_len - length).clamp_min(0)  # (B,)
        zero_rank = zero.long().cumsum(dim=1)  # (B, K) 1-based among zero spans
        zero = zero & (zero_rank <= zero.sum(dim=1, keepdim=True) - excess[:, None])  # (B, K)
        last_ord = order.gather(1, (n_ord - 1).clamp_min(0)[:, None])  # (B, 1)
        at = torch.where(start < n_ord[:, None], order.gather(1, start.clamp_max(length - 1)), last_ord + 1)
        inserts = torch.zeros(rows, length + 1, dtype=torch.long, device=dev)
        inserts.scatter_add_(1, at, zero.long())  # (B, L+1) masks inserted before position p

        # Emit: kept tokens in place, one mask per span, inserted masks; everything else is padding.
        keep = ~masked  # (B, L) specials are never masked
        count = inserts + torch.nn.functional.pad((keep | span_start).long(), (0, 1))  # (B, L+1)
        offset = count.cumsum(dim=1) - count  # (B, L+1) first output slot of each position
        total = count.sum(dim=1)  # (B,) <= L
        slot = torch.where(keep, offset[:, :length] + inserts[:, :length], length)  # (B, L) column L: discard
        out = torch.full((rows, length + 1), self.tokens.mask_id, dtype=ids.dtype, device=dev)
        out = out.scatter_(1, slot, ids)[:, :length]  # (B, L) unwritten slots hold masks
        written = torch.zeros(rows, length + 1, dtype=torch.bool, device=dev)
        written = written.scatter_(1, slot, torch.ones_like(keep))[:, :length]  # (B, L)
        filled = pos[:length] < total[:, None]  # (B, L)
        if self.config.random_ratio > 0:
            swap = filled & ~written & (torch.rand(rows, length, generator=generator, device=dev)
                                        < self.config.random_ratio)  # (B, L)
            pool = self.tokens.ordinary_ids().to(dev)  # (V_ord,)
            pick = torch.randint(len(pool), (rows, length), generator=generator, device=dev)  # (B, L)
            out = torch.where(swap, pool[pick].to(ids.dtype), out)
        pad = self.tokens.pad_id
        out = out.masked_fill(~filled, pad)  # (B, L)

        realized = torch.zeros(rows, spans + 1, dtype=torch.long, device=dev)
        realized.scatter_add_(1, torch.where(masked_ord, inside - 1, spans), masked_ord.long())
        realized = realized[:, :spans].masked_fill(~(nonzero | zero), -1)  # (B, K)
        return {
            "input_ids": out,
            "attention_mask": (filled & (out != pad)).long(),  # (B, L)
            "labels": original.masked_fill(original == pad, IGNORE_INDEX),  # (B, L)
            "stat_masked": masked,  # (B, L)
            "stat_span_lengths": realized,  # (B, K)
            "stat_drawn_span_lengths": drawn.masked_fill(~used, -1),  # (B, K)
        }

    def loss(self, model: PreTrainedModel, batch: Batch) -> LossOutput:
        return seq2seq_loss(model, batch)

    def promised_stats(self) -> dict[str, PromisedStat]:
        """Each row masks round(mask_ratio * n) of its n non-special tokens: on short blocks that
        rounding (at most 0.5 / n) widens the tolerance, e.g. 10 of 32 tokens is 0.3125."""
        rounding = 0.5 / self._block_len if self._block_len else 0.0
        return {
            "mask_ratio": PromisedStat(self.config.mask_ratio, 0.01 + rounding, "masked / non-special tokens"),
            "mean_span_length": PromisedStat(self.config.poisson_lambda, 0.2,
                                             "mean Poisson span length, zero-length spans included"),
        }

    def measure_stats(self, blocks: Blocks, batch: Batch) -> dict[str, float]:
        """mask_ratio from `stat_masked`; mean_span_length from the draws of the spans used
        (`stat_drawn_span_lengths`; the realized lengths are shorter for the one span per row cut
        to the budget, see `stat_span_lengths`)."""
        ordinary = (~self.tokens.special_mask(blocks.input_ids)).sum().item()
        drawn = batch["stat_drawn_span_lengths"]  # (B, K)
        used = drawn >= 0
        return {"mask_ratio": batch["stat_masked"].sum().item() / max(ordinary, 1),
                "mean_span_length": drawn[used].float().mean().item() if used.any() else 0.0}
