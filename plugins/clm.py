"""Causal language modelling: predict every token from the tokens before it (GPT-style).

The objective the others are measured against. `corrupt` changes nothing but marks padding;
`loss` shifts exactly once (logits at t predict the token at t + 1), because the Hugging Face model
is called without `labels` and so does not shift on its own. Padding is never a target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel

from lmbench.backbones.heads import causal_projection
from lmbench.objectives.base import Batch, Blocks, LossOutput, Objective, ObjectiveConfig, PromisedStat
from lmbench.objectives.lm_loss import linear_cross_entropy

IGNORE = -100


@dataclass
class CLMConfig(ObjectiveConfig):
    """Causal LM has no knobs: every non-padding token after the first is a target."""

    name: str = "clm"


def next_token_targets(labels: Tensor) -> Tensor:
    """labels (B, L) -> targets (B, L): position t is trained to predict labels[t + 1]; the last is -100.

    Shifting the labels (not slicing the logits) keeps the (B, L, V) logits contiguous: no copy of them.
    """
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE)  # (B, L)


def shifted_cross_entropy(logits: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Next-token cross-entropy in float32: logits[:, t] predict labels[:, t + 1]; -100 is ignored.

    logits: (B, L, V), labels: (B, L) unshifted. Returns the mean loss over supervised targets
    (0 when there are none) and detached stats `supervised_tokens` and `accuracy`.
    """
    target = next_token_targets(labels).reshape(-1)  # (B*L,)
    flat = logits.reshape(-1, logits.size(-1)).float()  # (B*L, V) a view for contiguous float32 logits
    supervised = target != IGNORE  # (B*L,)
    count = supervised.sum()
    total = F.cross_entropy(flat, target, ignore_index=IGNORE, reduction="sum")
    loss = total / count.clamp(min=1)
    correct = ((flat.detach().argmax(-1) == target) & supervised).sum()  # ()
    stats = {"supervised_tokens": count.detach(), "accuracy": correct / count.clamp(min=1)}
    return loss, stats


def causal_lm_loss(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> LossOutput:
    """Next-token loss of a decoder: through the blockwise vocabulary loss where the model's head is a
    known plain projection (GPT-2, Llama: no float32 (B, L, V) logits), else on the model's own logits.
    Both give the mean over supervised targets and the stats `supervised_tokens` and `accuracy`."""
    projection = causal_projection(model, input_ids=input_ids, attention_mask=attention_mask)
    if projection is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, L, V)
        loss, stats = shifted_cross_entropy(logits, labels)
        return LossOutput(loss=loss, stats=stats)
    hidden = projection.hidden.reshape(-1, projection.hidden.size(-1))  # (B*L, H)
    total, correct, count = linear_cross_entropy(hidden, projection.weight, next_token_targets(labels).reshape(-1),
                                                 projection.bias)
    denom = count.clamp(min=1)
    return LossOutput(loss=total / denom, stats={"supervised_tokens": count.detach(), "accuracy": correct / denom})


class CausalLM(Objective):
    """Next-token prediction on a decoder; the targets are the inputs themselves (shifted in the loss)."""

    name = "clm"
    backbone_kinds = ("decoder",)
    config_class = CLMConfig

    def corrupt(self, blocks: Blocks, generator: torch.Generator) -> Batch:
        """input_ids as given, attention_mask 0 at padding, labels = input_ids with padding -> -100."""
        ids = blocks.input_ids  # (B, L)
        real = ids != self.tokens.pad_id  # (B, L)
        return {"input_ids": ids, "attention_mask": real.long(), "labels": ids.masked_fill(~real, IGNORE)}

    def loss(self, model: PreTrainedModel, batch: Batch) -> LossOutput:
        return causal_lm_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])

    def promised_stats(self) -> dict[str, PromisedStat]:
        return {
            "target_fraction": PromisedStat(1.0, 0.0, "share of non-padding tokens that are targets"),
            "padding_targets": PromisedStat(0.0, 0.0, "padding tokens that are targets"),
        }

    def measure_stats(self, blocks: Blocks, batch: Batch) -> dict[str, float]:
        real = blocks.input_ids != self.tokens.pad_id  # (B, L)
        target = batch["labels"] != IGNORE  # (B, L)
        return {
            "target_fraction": float((target & real).sum() / real.sum().clamp(min=1)),
            "padding_targets": float((target & ~real).sum()),
        }
