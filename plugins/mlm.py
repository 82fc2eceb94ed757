"""Masked language modelling (BERT), the built-in `mlm` objective.

Selects about 15% of the ordinary tokens (single tokens, whole words or SpanBERT-style spans), replaces
80% of the selected with [MASK], 10% with a random ordinary token and keeps 10%, and trains the encoder
to predict the originals. Unlike Hugging Face's collator, the random replacement never draws a special
token, the three replacement rates are absolute fractions of the selected tokens, and the loss projects
to the vocabulary only at the supervised positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmbench.backbones.heads import mlm_projection
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
from lmbench.objectives.lm_loss import linear_cross_entropy
from lmbench_plugins.masking import span_selection, truncated_geometric_pmf, whole_word_selection

if TYPE_CHECKING:
    from transformers import PreTrainedModel

MASKING_MODES = ("token", "whole_word", "span")
IGNORE_INDEX = -100

# model_type -> attribute of the *ForMaskedLM model holding the head that maps hidden states to logits.
MLM_HEADS = {"bert": "cls", "roberta": "lm_head", "xlm-roberta": "lm_head", "camembert": "lm_head"}


@dataclass
class MLMConfig(ObjectiveConfig):
    """Masked-LM settings. The three replacement rates are fractions of the *selected* tokens.

    mlm_probability:     fraction of ordinary (non-special) tokens selected for prediction.
    mask_replace_prob:   fraction of selected tokens replaced by the mask token.
    random_replace_prob: fraction of selected tokens replaced by a random ordinary token
                         (the remaining 1 - mask - random are kept unchanged).
    masking:             token | whole_word | span (SpanBERT: geometric span lengths).
    span_geometric_p:    span lengths n = 1..span_max_length with P(n) proportional to p (1 - p)^(n - 1),
                         as in SpanBERT's code (mean 3.8 at p=0.2 with max 10).
    span_max_length:     longest span, in tokens.
    add_cls_sep:         frame each block as [CLS] block [SEP] (block = seq_len - 2 corpus tokens).
    """

    name: str = "mlm"
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    masking: str = "token"
    span_geometric_p: float = 0.2
    span_max_length: int = 10
    add_cls_sep: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("mlm_probability", "mask_replace_prob", "random_replace_prob", "span_geometric_p"):
            self.check_probability(key)
        total = float(self.mask_replace_prob) + float(self.random_replace_prob)
        if total > 1.0 + 1e-9:
            raise ObjectiveConfigError(
                f"objective {self.name!r}: mask_replace_prob + random_replace_prob = {self.mask_replace_prob!r}"
                f" + {self.random_replace_prob!r} = {total:g} exceeds 1; allowed values: each in [0, 1] with"
                " a sum in [0, 1] (the rest of the selected tokens is kept unchanged)")
        if self.masking not in MASKING_MODES:
            raise ObjectiveConfigError(
                f"objective {self.name!r}: masking={self.masking!r} is unknown; allowed values: "
                f"{', '.join(MASKING_MODES)}")
        self.check_positive("span_geometric_p")
        if isinstance(self.span_max_length, bool) or not isinstance(self.span_max_length, int) \
                or self.span_max_length < 1:
            raise ObjectiveConfigError(
                f"objective {self.name!r}: span_max_length={self.span_max_length!r}; allowed values: integer >= 1")


class MaskedLM(Objective):
    """BERT-style masked language modelling on an encoder (BertForMaskedLM, RobertaForMaskedLM, ...).

    Blocks are framed as [CLS] block [SEP] by default, as BERT's inputs are, so the saved model sees at
    fill-mask and fine-tuning time (tokenizer post-processor: [CLS] text [SEP]) the layout it was
    pretrained on; `add_cls_sep=false` trains on bare blocks.
    """

    inserted_special_tokens: ClassVar[tuple[str, ...]] = ("cls", "sep")

    name: ClassVar[str] = "mlm"
    backbone_kinds: ClassVar[tuple[str, ...]] = ("encoder",)
    config_class: ClassVar[type[ObjectiveConfig]] = MLMConfig
    config: MLMConfig

    def __init__(self, config: MLMConfig, tokens: TokenInfo) -> None:
        super().__init__(config, tokens)
        special = torch.zeros(tokens.vocab_size, dtype=torch.bool)  # (V,) lookup: id -> is special
        fixed = (tokens.pad_id, tokens.mask_id, tokens.bos_id, tokens.eos_id, tokens.cls_id, tokens.sep_id,
                 tokens.unk_id)
        special[list({*tokens.special_ids, *tokens.sentinel_ids, *fixed})] = True
        self.special_lookup = special
        self.ordinary = (~special).nonzero().squeeze(1)  # (V_ordinary,) random-replacement pool
        self.span_length_pmf = truncated_geometric_pmf(config.span_geometric_p, config.span_max_length)  # (M,)
        if self.ordinary.numel() == 0 and config.random_replace_prob > 0:
            raise ObjectiveConfigError("objective 'mlm': random_replace_prob > 0 but the vocabulary has no "
                                       "ordinary (non-special) token to draw; allowed values: 0")

    def block_length(self, seq_len: int) -> int:
        """With add_cls_sep, a block holds seq_len - 2 corpus tokens and is framed as [CLS] block [SEP]."""
        return seq_len - 2 if self.config.add_cls_sep else seq_len

    def corrupt(self, blocks: Blocks, generator: torch.Generator) -> Batch:
        """Select tokens, corrupt them 80/10/10 and return input_ids, attention_mask and labels:
        (B, L), or (B, L + 2) framed as [CLS] ... [SEP] (never selected) with add_cls_sep."""
        batch = self._corrupt(blocks, generator)
        if not self.config.add_cls_sep:
            return batch
        rows = blocks.input_ids.shape[0]
        edge = lambda value: torch.full((rows, 1), value, dtype=torch.long, device=blocks.input_ids.device)  # noqa: E731
        return {
            "input_ids": torch.cat([edge(self.tokens.cls_id), batch["input_ids"], edge(self.tokens.sep_id)], 1),
            "attention_mask": torch.cat([edge(1), batch["attention_mask"], edge(1)], 1),  # (B, L + 2)
            "labels": torch.cat([edge(IGNORE_INDEX), batch["labels"], edge(IGNORE_INDEX)], 1),
        }

    def _corrupt(self, blocks: Blocks, generator: torch.Generator) -> Batch:
        """The masking itself, aligned with the blocks: input_ids, attention_mask, labels (B, L)."""
        cfg, tokens = self.config, self.tokens
        ids = blocks.input_ids.long()  # (B, L)
        device = ids.device
        eligible = ~self.special_lookup.to(device)[ids]  # (B, L)
        u = torch.rand(ids.shape, generator=generator, device=device)  # (B, L) one uniform per position
        p = float(cfg.mlm_probability)
        if cfg.masking == "token":
            selected = (u < p) & eligible  # (B, L)
            if p > 0:
                u = u / p  # given selection, u / p is again uniform in [0, 1): reuse it for the 80/10/10 draw
        elif cfg.masking == "whole_word":
            if blocks.word_starts is None:
                raise ValueError("objective 'mlm' with masking=whole_word needs word boundaries "
                                 "(Blocks.word_starts from a fast tokenizer's word_ids()); this token cache has "
                                 "none: rebuild it with a fast tokenizer or use masking=token or masking=span")
            if blocks.word_starts.shape != ids.shape:
                raise ValueError(f"Blocks.word_starts has shape {tuple(blocks.word_starts.shape)}, "
                                 f"input_ids {tuple(ids.shape)}; they must match")
            selected = whole_word_selection(blocks.word_starts.to(device, torch.bool), eligible, p, generator)
        else:
            selected = span_selection(tuple(ids.shape), p, self.span_length_pmf, generator, device) & eligible
        to_mask = selected & (u < cfg.mask_replace_prob)  # (B, L)
        to_random = selected & ~to_mask & (u < cfg.mask_replace_prob + cfg.random_replace_prob)  # (B, L)
        inputs = ids.masked_fill(to_mask, tokens.mask_id)  # (B, L)
        n_random = int(to_random.sum())
        if n_random:
            pool = self.ordinary.to(device)
            draw = torch.randint(pool.numel(), (n_random,), generator=generator, device=device)  # (R,)
            inputs[to_random] = pool[draw]
        return {
            "input_ids": inputs,
            "attention_mask": (ids != tokens.pad_id).long(),  # (B, L)
            "labels": ids.masked_fill(~selected, IGNORE_INDEX),  # (B, L)
        }

    def loss(self, model: PreTrainedModel, batch: Batch) -> LossOutput:
        """Cross-entropy (float32) at the supervised positions; the vocabulary head runs only there."""
        labels = batch["labels"]  # (B, L)
        supervised = labels != IGNORE_INDEX  # (B, L)
        targets = labels[supervised]  # (N,)
        head = mlm_head(model)
        if head is not None:
            hidden = model.base_model(input_ids=batch["input_ids"],
                                      attention_mask=batch["attention_mask"]).last_hidden_state  # (B, L, H)
            projection = mlm_projection(model, hidden[supervised])  # (N, H) features of BERT/RoBERTa heads
            if projection is not None:  # blockwise vocabulary loss: no float32 (N, V) logits kept
                total, correct, count = linear_cross_entropy(projection.hidden, projection.weight, targets,
                                                             projection.bias)
                denom = count.clamp(min=1)
                return LossOutput(loss=total / denom, stats={"supervised_tokens": count,
                                                             "mlm_accuracy": correct.float() / denom})
            logits = head(hidden[supervised])  # (N, V)
        else:
            logits = model(input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"]).logits[supervised]  # (N, V)
        logits = logits.float()  # (N, V)
        count = supervised.sum()  # () tensor, no host sync
        denom = count.clamp(min=1)
        loss = F.cross_entropy(logits, targets, reduction="sum") / denom  # 0 (not nan) when nothing is masked
        correct = (logits.detach().argmax(dim=-1) == targets).sum()
        return LossOutput(loss=loss, stats={"supervised_tokens": count,
                                            "mlm_accuracy": correct.float() / denom})

    def promised_stats(self) -> dict[str, PromisedStat]:
        """Selection rate over ordinary tokens and the mask/random/keep split among selected tokens."""
        cfg = self.config
        keep = 1.0 - cfg.mask_replace_prob - cfg.random_replace_prob
        return {
            "selection_rate": PromisedStat(cfg.mlm_probability, 0.005, "selected / ordinary tokens"),
            "mask_fraction": PromisedStat(cfg.mask_replace_prob, 0.01, "mask token / selected"),
            "random_fraction": PromisedStat(cfg.random_replace_prob, 0.01, "random ordinary token / selected"),
            "keep_fraction": PromisedStat(keep, 0.01, "unchanged / selected"),
        }

    def measure_stats(self, blocks: Blocks, batch: Batch) -> dict[str, float]:
        """Measure the promised statistics on one batch; fractions are nan when nothing was selected.

        A random replacement equals the original token with probability 1 / V_ordinary; the random and
        keep fractions are corrected for that, so they estimate the configured rates without bias.
        """
        ids = blocks.input_ids.long()  # (B, L)
        if batch["input_ids"].shape[1] == ids.shape[1] + 2:  # framed as [CLS] block [SEP]
            batch = {k: v[:, 1:-1] for k, v in batch.items()}
        inputs, selected = batch["input_ids"], batch["labels"] != IGNORE_INDEX  # (B, L)
        eligible = ~self.special_lookup.to(ids.device)[ids]  # (B, L)
        n_sel, n_elig = int(selected.sum()), int(eligible.sum())
        if n_sel == 0:
            nan = float("nan")
            return {"selection_rate": 0.0 if n_elig else nan, "mask_fraction": nan, "random_fraction": nan,
                    "keep_fraction": nan}
        masked = int((selected & (inputs == self.tokens.mask_id)).sum()) / n_sel
        changed = int((selected & (inputs != ids) & (inputs != self.tokens.mask_id)).sum()) / n_sel
        random = changed / (1.0 - 1.0 / max(self.ordinary.numel(), 2))
        return {"selection_rate": n_sel / max(n_elig, 1), "mask_fraction": masked, "random_fraction": random,
                "keep_fraction": 1.0 - masked - random}


def mlm_head(model: nn.Module) -> nn.Module | None:
    """The module mapping encoder hidden states (.., H) to vocabulary logits (.., V), if known."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    attr = MLM_HEADS.get(model_type or "")
    if attr is None or not type(model).__name__.endswith("ForMaskedLM"):
        return None
    return getattr(model, attr, None)
