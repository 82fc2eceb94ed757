"""ELECTRA replaced-token detection (Clark et al. 2020) as an external lmbench objective plugin.

A small generator is trained with masked LM; its samples replace the masked tokens, and the
discriminator (lmbench's encoder backbone) learns to tell, at every ordinary token, whether it was
replaced. The discriminator learns from all tokens instead of 15%, which is why ELECTRA is sample
efficient. The plugin lives outside lmbench and joins it only through the `lmbench.objectives` entry
point: the generator and the detection head are objective-owned modules (`build_modules`), so the
core optimises, checkpoints and moves them without knowing they exist.

Batch keys made by `corrupt` (all batch-first):
    input_ids           (B, L) int64  generator input: selected tokens replaced by [MASK] (85%) or kept
    attention_mask      (B, L) int64  1 at non-padding tokens
    labels              (B, L) int64  original id at the selected positions, -100 elsewhere
    discriminator_mask  (B, L) bool   ordinary (non-special, non-padding) positions: the BCE support
    sample_uniform      (B, L) float  uniforms in [0, 1) for sampling the generator at selected positions
Sampling from the generator happens in `loss` (it needs the generator's logits) but draws its
randomness from `sample_uniform`, made by `corrupt` with the data pipeline's explicit generator, so a
training run is a pure function of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
from lmbench_electra.generator import build_generator, sample_tokens
from lmbench_plugins.mlm import IGNORE_INDEX, MaskedLM, MLMConfig

if TYPE_CHECKING:
    from transformers import ElectraForMaskedLM, PreTrainedModel


@dataclass
class ElectraConfig(ObjectiveConfig):
    """ELECTRA settings (defaults: the paper's small/base models).

    mlm_probability:        fraction of ordinary tokens selected for the generator (paper: 0.15).
    mask_replace_prob:      fraction of selected tokens the generator sees as [MASK]; the rest are kept
                            unchanged (ELECTRA's code: 0.85). Every selected token is then replaced by a
                            generator sample for the discriminator.
    generator_size_divisor: generator hidden, heads and feed-forward width = discriminator's / divisor
                            (paper: 1/4 to 1/2 of the discriminator works best; default 4).
    generator_layers:       generator depth; 0 = the discriminator's depth (as in the paper).
    generator_weight:       weight of the generator's MLM loss (paper: 1).
    discriminator_weight:   weight lambda of the replaced-token-detection loss (paper: 50).
    temperature:            sampling temperature of the generator's softmax (paper: 1).
    """

    name: str = "electra"
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.85
    generator_size_divisor: int = 4
    generator_layers: int = 0
    generator_weight: float = 1.0
    discriminator_weight: float = 50.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_probability("mlm_probability")
        if float(self.mlm_probability) <= 0.0:
            raise ObjectiveConfigError(
                f"objective {self.name!r}: mlm_probability={self.mlm_probability!r} selects no token, so the "
                "generator never replaces anything; allowed values: (0, 1]")
        self.check_probability("mask_replace_prob")
        for key, low in (("generator_size_divisor", 1), ("generator_layers", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ObjectiveConfigError(
                    f"objective {self.name!r}: {key}={value!r}; allowed values: integer >= {low}")
        self.check_positive("generator_weight", allow_zero=True)
        self.check_positive("discriminator_weight", allow_zero=True)
        self.check_positive("temperature")
        if float(self.generator_weight) == 0.0 and float(self.discriminator_weight) == 0.0:
            raise ObjectiveConfigError(
                f"objective {self.name!r}: generator_weight=0 and discriminator_weight=0 leave no loss; "
                "allowed values: both >= 0, at least one > 0")


class Electra(Objective):
    """Replaced-token detection on an encoder (the discriminator), with a small MLM generator."""

    name: ClassVar[str] = "electra"
    backbone_kinds: ClassVar[tuple[str, ...]] = ("encoder",)
    config_class: ClassVar[type[ObjectiveConfig]] = ElectraConfig
    config: ElectraConfig

    def __init__(self, config: ElectraConfig, tokens: TokenInfo) -> None:
        super().__init__(config, tokens)
        # Masking is lmbench's MLM corruption with no random replacement: [MASK] or kept, as in ELECTRA.
        self.masking = MaskedLM(MLMConfig(name=config.name, mlm_probability=config.mlm_probability,
                                          mask_replace_prob=config.mask_replace_prob, random_replace_prob=0.0,
                                          add_cls_sep=False),
                                tokens)
        self.sampleable = ~self.masking.special_lookup  # (V,) generator samples are ordinary tokens only
        self.generator: ElectraForMaskedLM | None = None
        self.discriminator_head: nn.Module | None = None

    def build_modules(self, model: PreTrainedModel) -> dict[str, nn.Module]:
        """The generator (sharing `model`'s embeddings) and the per-token detection head.

        The head is ELECTRA's discriminator head: dense(H, H), GELU, dense(H, 1).
        """
        cfg = self.config
        if model.get_input_embeddings().num_embeddings < self.tokens.vocab_size:
            raise ObjectiveConfigError(f"objective {cfg.name!r}: the backbone has fewer embedding rows than the "
                                       f"tokenizer's {self.tokens.vocab_size} tokens")
        hidden = int(model.config.hidden_size)
        self.generator = build_generator(model, int(cfg.generator_size_divisor), int(cfg.generator_layers))
        self.discriminator_head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.discriminator_head.to(device=model.device, dtype=model.dtype)
        return {"generator": self.generator, "discriminator_head": self.discriminator_head}

    def corrupt(self, blocks: Blocks, generator: torch.Generator) -> Batch:
        """Mask ~15% of ordinary tokens (85% [MASK], 15% kept) and draw the sampling uniforms."""
        batch = self.masking.corrupt(blocks, generator)  # input_ids, attention_mask, labels (B, L)
        ids = blocks.input_ids.long()  # (B, L)
        batch["discriminator_mask"] = ~self.masking.special_lookup.to(ids.device)[ids]  # (B, L)
        batch["sample_uniform"] = torch.rand(ids.shape, generator=generator, device=ids.device)  # (B, L)
        return batch

    def replace(self, batch: Batch, generator_logits: Tensor) -> tuple[Tensor, Tensor]:
        """Discriminator input and targets for generator logits (N, V) at the selected positions.

        Returns (input_ids (B, L) with every selected token replaced by a generator sample,
        targets (B, L) bool: True where the input differs from the original, at eligible positions).
        """
        labels = batch["labels"]  # (B, L)
        selected = labels != IGNORE_INDEX  # (B, L)
        original = torch.where(selected, labels, batch["input_ids"])  # (B, L)
        sampled = sample_tokens(generator_logits, batch["sample_uniform"][selected],
                                self.sampleable.to(labels.device), float(self.config.temperature))  # (N,)
        inputs = original.masked_scatter(selected, sampled)  # (B, L) row-major, like boolean indexing
        targets = (inputs != original) & batch["discriminator_mask"].bool()  # (B, L)
        return inputs, targets

    def loss(self, model: PreTrainedModel, batch: Batch) -> LossOutput:
        """generator_weight * generator MLM loss + discriminator_weight * detection BCE (both per token).

        `supervised_tokens` counts the discriminator's positions (every eligible token carries loss).
        """
        if self.generator is None or self.discriminator_head is None:
            raise RuntimeError("objective 'electra': call build_modules(model) before loss(); lmbench's "
                               "PretrainModule does this when it wraps the backbone")
        cfg = self.config
        labels, mask = batch["labels"], batch["attention_mask"]  # (B, L)
        selected = labels != IGNORE_INDEX  # (B, L)
        targets_mlm = labels[selected]  # (N,)
        gen = self.generator
        gen_hidden = gen.electra(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state  # (B, L, h)
        gen_logits = gen.generator_lm_head(gen.generator_predictions(gen_hidden[selected])).float()  # (N, V)
        n_gen = selected.sum()  # () no host sync
        gen_loss = F.cross_entropy(gen_logits, targets_mlm, reduction="sum") / n_gen.clamp(min=1)

        disc_inputs, targets = self.replace(batch, gen_logits)  # (B, L), (B, L)
        eligible = batch["discriminator_mask"].bool()  # (B, L)
        hidden = model.base_model(input_ids=disc_inputs, attention_mask=mask).last_hidden_state  # (B, L, H)
        logits = self.discriminator_head(hidden[eligible]).squeeze(-1).float()  # (M,)
        truth = targets[eligible].float()  # (M,)
        n_disc = eligible.sum()  # ()
        disc_loss = F.binary_cross_entropy_with_logits(logits, truth, reduction="sum") / n_disc.clamp(min=1)
        loss = cfg.generator_weight * gen_loss + cfg.discriminator_weight * disc_loss

        denom = n_disc.clamp(min=1).float()
        stats = {
            "supervised_tokens": n_disc,
            "generator_loss": gen_loss.detach(),
            "discriminator_loss": disc_loss.detach(),
            "replaced_fraction": truth.sum() / denom,
            "discriminator_accuracy": ((logits.detach() > 0).float() == truth).float().sum() / denom,
            "generator_accuracy": (gen_logits.detach().argmax(-1) == targets_mlm).float().sum()
            / n_gen.clamp(min=1).float(),
        }
        return LossOutput(loss=loss, stats=stats)

    def promised_stats(self) -> dict[str, PromisedStat]:
        """Only what corruption fixes: the selection rate and the [MASK] share of the selected tokens.
        How many tokens end up *replaced* depends on the generator, so it is a loss stat, not a promise."""
        cfg = self.config
        return {
            "selection_rate": PromisedStat(cfg.mlm_probability, 0.005, "selected / ordinary tokens"),
            "mask_fraction": PromisedStat(cfg.mask_replace_prob, 0.01, "mask token / selected"),
        }

    def measure_stats(self, blocks: Blocks, batch: Batch) -> dict[str, float]:
        """Selection rate and mask fraction of one batch (nan mask fraction when nothing was selected)."""
        measured = self.masking.measure_stats(blocks, batch)
        return {key: measured[key] for key in ("selection_rate", "mask_fraction")}
