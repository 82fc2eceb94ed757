"""Prefix language modelling: a decoder reads a random prefix bidirectionally, then predicts the rest.

The non-causal decoder of Raffel et al. (2020) and Wang et al. (2022): every row gets its own prefix
length; prefix tokens attend to the whole prefix, later tokens attend causally, and only tokens after
the prefix are targets. The loss hands a custom 4D mask to the Hugging Face decoder, which passes a
4D mask through unchanged (transformers 5 `masking_utils`), so it must already be in the convention
of the attention kernel: boolean True = attend for `sdpa`, additive float (0 / dtype min) for `eager`.
Blocks are assumed right-padded (packed blocks have padding, if any, at the end).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedModel

from lmbench.backbones.attention import mask_convention
from lmbench.objectives.base import (
    Batch,
    Blocks,
    LossOutput,
    Objective,
    ObjectiveConfig,
    ObjectiveConfigError,
    PromisedStat,
)
from lmbench_plugins.clm import IGNORE, causal_lm_loss


@dataclass
class PrefixLMConfig(ObjectiveConfig):
    """Prefix length per row is uniform on [max(1, ceil(min * n)), min(n - 1, floor(max * n))] for n real
    tokens, so at least one token is read as prefix and at least one is predicted. The defaults give
    uniform on [1, n - 1] (mean prefix fraction 0.5)."""

    name: str = "prefix_lm"
    min_prefix_fraction: float = 0.0
    max_prefix_fraction: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_probability("min_prefix_fraction")
        self.check_probability("max_prefix_fraction")
        if self.min_prefix_fraction > self.max_prefix_fraction:
            raise ObjectiveConfigError(
                f"objective {self.name!r}: min_prefix_fraction={self.min_prefix_fraction} exceeds "
                f"max_prefix_fraction={self.max_prefix_fraction}; allowed: 0 <= min <= max <= 1"
            )


def prefix_lm_mask(prefix_len: Tensor, attention_mask: Tensor, attn_implementation: str,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """The (B, 1, L, L) attention mask of a prefix LM, in the convention of `attn_implementation`.

    Query q may attend key k when k <= q (causal) or k is in the prefix (k < prefix_len), and k is not
    padding. Every query also attends to itself, so no row is empty (a padding query would otherwise
    have no key and give NaN under sdpa). sdpa: bool, True = attend; eager: 0 / finfo(dtype).min.
    """
    attn_implementation = mask_convention(attn_implementation)
    B, L = attention_mask.shape
    pos = torch.arange(L, device=attention_mask.device)  # (L,)
    causal = pos[None, :] <= pos[:, None]  # (L, L) [query, key]
    in_prefix = pos[None, None, :] < prefix_len[:, None, None]  # (B, 1, L) over keys
    real_key = attention_mask.bool()[:, None, :]  # (B, 1, L)
    allowed = ((causal[None] | in_prefix) & real_key) | torch.eye(L, dtype=torch.bool, device=pos.device)  # (B, L, L)
    allowed = allowed[:, None]  # (B, 1, L, L)
    if attn_implementation == "sdpa":
        return allowed
    if attn_implementation == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=pos.device).masked_fill(~allowed, torch.finfo(dtype).min)
    raise ValueError(f"objective 'prefix_lm' needs a dense attention mask: backbone.attn_implementation="
                     f"{attn_implementation!r} is not supported; allowed values: sdpa, eager")


class PrefixLM(Objective):
    """Decoder with a bidirectional prefix; targets are the tokens after the prefix (shifted in the loss)."""

    name = "prefix_lm"
    backbone_kinds = ("decoder",)
    config_class = PrefixLMConfig
    config: PrefixLMConfig

    def corrupt(self, blocks: Blocks, generator: torch.Generator) -> Batch:
        """input_ids as given, attention_mask (B, L) 0 at padding, prefix_len (B,), labels -100 in the prefix
        and at padding. The (B, 1, L, L) mask is built in `loss`, where the attention kernel is known."""
        ids = blocks.input_ids  # (B, L)
        B, L = ids.shape
        real = ids != self.tokens.pad_id  # (B, L)
        n = real.sum(1)  # (B,) real tokens per row
        one = torch.ones_like(n)
        lo = torch.ceil(self.config.min_prefix_fraction * n.double() - 1e-9).long()  # (B,)
        lo = torch.minimum(torch.maximum(lo, one), torch.maximum(n - 1, one))
        hi = torch.floor(self.config.max_prefix_fraction * n.double() + 1e-9).long()  # (B,)
        hi = torch.maximum(torch.minimum(hi, n - 1), lo)
        u = torch.rand(B, generator=generator, dtype=torch.float64, device=generator.device).to(ids.device)
        prefix_len = torch.minimum(lo + (u * (hi - lo + 1)).long(), hi)  # (B,)
        in_prefix = torch.arange(L, device=ids.device)[None, :] < prefix_len[:, None]  # (B, L)
        labels = ids.masked_fill(in_prefix | ~real, IGNORE)  # (B, L)
        return {"input_ids": ids, "attention_mask": real.long(), "labels": labels, "prefix_len": prefix_len}

    def loss(self, model: PreTrainedModel, batch: Batch) -> LossOutput:
        mask = prefix_lm_mask(batch["prefix_len"], batch["attention_mask"], model.config._attn_implementation,
                              model.dtype)  # (B, 1, L, L)
        out = causal_lm_loss(model, batch["input_ids"], mask, batch["labels"])
        loss, stats = out.loss, out.stats
        n = batch["attention_mask"].sum(1).clamp(min=1)  # (B,)
        stats["prefix_fraction"] = (batch["prefix_len"] / n).mean().detach()
        return LossOutput(loss=loss, stats=stats)

    def promised_stats(self) -> dict[str, PromisedStat]:
        c = self.config
        return {
            "prefix_fraction": PromisedStat((c.min_prefix_fraction + c.max_prefix_fraction) / 2, 0.1,
                                            "mean prefix length / real tokens (per-row uniform; "
                                            "batch mean, loose for small batches)"),
            "prefix_targets": PromisedStat(0.0, 0.0, "prefix tokens that are targets"),
            "suffix_target_fraction": PromisedStat(1.0, 0.0, "share of real tokens after the prefix that are targets"),
        }

    def measure_stats(self, blocks: Blocks, batch: Batch) -> dict[str, float]:
        ids = blocks.input_ids  # (B, L)
        real = ids != self.tokens.pad_id  # (B, L)
        in_prefix = torch.arange(ids.size(1), device=ids.device)[None, :] < batch["prefix_len"][:, None]  # (B, L)
        target = batch["labels"] != IGNORE  # (B, L)
        suffix = real & ~in_prefix  # (B, L)
        fraction = batch["prefix_len"] / real.sum(1).clamp(min=1)  # (B,)
        return {
            "prefix_fraction": float(fraction.double().mean()),
            "prefix_targets": float((target & in_prefix).sum()),
            "suffix_target_fraction": float((target & suffix).sum() / suffix.sum().clamp(min=1)),
        }
