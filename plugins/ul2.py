"""UL2's mixture of denoisers (Tay et al. 2022) in miniature, built only by composing other plugins.

UL2 trains one model on several corruptions at once, each announced by a paradigm token prepended to
the input: R (regular T5 span corruption, "[NLU]"), X (extreme: long spans or high noise rates,
"[NLG]") and S (sequential: prefix LM, "[S2S]"). This module owns no corruption algorithm: R and X
rows are corrupted by `T5SpanCorruption` objects built with each denoiser's settings, S rows take
their split point and labels from `PrefixLM`, and the losses are the shared seq2seq cross-entropy and
`PrefixLM.loss`. It is the proof that plugins compose.

Mixing is per example, as in UL2: every row draws its denoiser from the generator, then each
denoiser corrupts all of its rows in one vectorised call (a loop over the few denoisers, never over
tokens). Outputs are padded to widths fixed per run (the maximum over denoisers at the run's block
length), so every batch has the same shapes whatever its mix; padding carries no loss.

Two layouts, chosen by the model at `loss` time (`model.config.is_encoder_decoder`):
- encoder-decoder: `input_ids` = paradigm token + the denoiser's input (R/X: T5 input with sentinels
  and EOS; S: the prefix, EOS), `labels` = its targets (R/X: sentinel, span, ..., EOS; S: the rest of
  the block, EOS), padded with -100;
- decoder: UL2's non-causal decoder, one sequence = paradigm token + input + targets, bidirectional
  over token and input (`prefix_lm_mask`), causal over the targets, loss on the targets only: a
  PrefixLM batch (`prefix_len` = 1 + input length). For S it is PrefixLM's own batch, token in front.

The core does not tell an objective which kind it trains, and the decoder layout holds input and
targets in one sequence, so it needs shorter blocks. `backbone_kind=any` (default) builds both layouts
at a block length that fits both; `encoder-decoder` or `decoder` builds one, with the longest block
that kind allows. Default mixture at seq_len 128: 93 raw tokens for any/decoder, 127 for encoder-decoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
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
from lmbench_plugins.prefix_lm import PrefixLM, PrefixLMConfig
from lmbench_plugins.seq2seq_loss import IGNORE_INDEX, seq2seq_loss
from lmbench_plugins.t5_span import T5SpanConfig, T5SpanCorruption

if TYPE_CHECKING:
    from transformers import PreTrainedModel

MODE_TOKENS: dict[str, str] = {"R": "[NLU]", "S": "[S2S]", "X": "[NLG]"}
KINDS: tuple[str, ...] = ("any", "encoder-decoder", "decoder")


@dataclass
class Denoiser:
    """One denoiser of the mixture.

    mode: R | S | X. R and X are T5 span corruption with `mean_noise_span_length` (>= 1) and
    `noise_density` (in (0, 1)); S is a prefix LM split uniformly at random and ignores both.
    weight: sampling weight (> 0), normalised over the mixture.
    """

    mode: str = "R"
    mean_noise_span_length: float = 3.0
    noise_density: float = 0.15
    weight: float = 1.0


def default_denoisers() -> list[Denoiser]:
    """UL2's R and X denoisers that fit small blocks, and S; weights make R, S and X 1/3 each.

    UL2's mu=64 X denoisers are left out: a block of ~100 tokens holds one or two such spans, so the
    span length is set by the block, not the config. Add them for blocks of 512 or more."""
    return [Denoiser("R", 3.0, 0.15, 1.0), Denoiser("R", 8.0, 0.15, 1.0),
            Denoiser("X", 3.0, 0.5, 1.0), Denoiser("X", 8.0, 0.5, 1.0), Denoiser("S", weight=2.0)]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class UL2Config(ObjectiveConfig):
    """denoisers: the mixture (list of `Denoiser`, dicts accepted). backbone_kind: any | encoder-decoder |
    decoder, the layouts `corrupt` builds (any = both, at a block length that fits both)."""

    name: str = "ul2"
    denoisers: list[Denoiser] = field(default_factory=default_denoisers)
    backbone_kind: str = "any"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backbone_kind not in KINDS:
            raise ObjectiveConfigError(f"objective {self.name!r}: backbone_kind={self.backbone_kind!r} is unknown; "
                                       f"allowed values: {', '.join(KINDS)}")
        if isinstance(self.denoisers, (str, bytes, Mapping)) or not hasattr(self.denoisers, "__len__") \
                or len(self.denoisers) == 0:
            raise ObjectiveConfigError(f"objective {self.name!r}: denoisers={self.denoisers!r}; allowed values: "
                                       "a non-empty list of {mode, mean_noise_span_length, noise_density, weight}")
        self.denoisers = [self._as_denoiser(i, d) for i, d in enumerate(self.denoisers)]
        for i, d in enumerate(self.denoisers):
            self._check(i, d)

    def _as_denoiser(self, i: int, item: object) -> Denoiser:
        if isinstance(item, Denoiser):
            return item
        allowed = [f.name for f in fields(Denoiser)]
        if not isinstance(item, Mapping):
            raise ObjectiveConfigError(f"objective {self.name!r}: denoisers[{i}]={item!r}; allowed values: a mapping "
                                       f"with keys {', '.join(allowed)}")
        unknown = sorted(set(item) - set(allowed))
        if unknown:
            raise ObjectiveConfigError(f"objective {self.name!r}: denoisers[{i}] has unknown keys {unknown}; "
                                       f"allowed keys: {', '.join(allowed)}")
        return Denoiser(**dict(item))

    def _check(self, i: int, d: Denoiser) -> None:
        key = f"objective {self.name!r}: denoisers[{i}]"
        if d.mode not in MODE_TOKENS:
            raise ObjectiveConfigError(f"{key}.mode={d.mode!r} is unknown; allowed values: R, S, X")
        if not _is_number(d.weight) or not d.weight > 0:
            raise ObjectiveConfigError(f"{key}.weight={d.weight!r}; allowed values: > 0")
        if d.mode == "S":
            return
        if not _is_number(d.noise_density) or not 0.0 < d.noise_density < 1.0:
            raise ObjectiveConfigError(f"{key}.noise_density={d.noise_density!r}; allowed values: 0 < noise_density < 1")
        if not _is_number(d.mean_noise_span_length) or not d.mean_noise_span_length >= 1.0:
            raise ObjectiveConfigError(f"{key}.mean_noise_span_length={d.mean_noise_span_length!r}; "
                                       "allowed values: >= 1")


@dataclass(frozen=True)
class Widths:
    """Padded widths of one run's batches: encoder input (paradigm token included), labels, decoder sequence."""

    encoder: int
    target: int
    decoder: int


class UL2(Objective):
    """Mixture of R/X (T5 span corruption) and S (prefix LM) denoisers with UL2's paradigm tokens.

    Batch, backbone_kind=encoder-decoder: input_ids, attention_mask (B, Widths.encoder), labels
    (B, Widths.target). backbone_kind=decoder: PrefixLM's keys input_ids, attention_mask, labels
    (B, Widths.decoder), prefix_len (B,). backbone_kind=any: the encoder-decoder keys plus the decoder
    ones prefixed `lm_`. Always stat_denoiser (B,): each row's index into `config.denoisers`.
    """

    name: ClassVar[str] = "ul2"
    backbone_kinds: ClassVar[tuple[str, ...]] = ("encoder-decoder", "decoder")
    config_class: ClassVar[type[ObjectiveConfig]] = UL2Config

    def __init__(self, config: UL2Config, tokens: TokenInfo) -> None:
        super().__init__(config, tokens)
        self.config: UL2Config = config
        self.mode_ids = torch.tensor([self._mode_id(i, d) for i, d in enumerate(config.denoisers)])  # (K,)
        self.span_objectives: dict[int, T5SpanCorruption] = {
            i: T5SpanCorruption(T5SpanConfig(name=f"{config.name}.denoisers[{i}]", noise_density=d.noise_density,
                                             mean_noise_span_length=d.mean_noise_span_length), tokens)
            for i, d in enumerate(config.denoisers) if d.mode != "S"}
        self.prefix_lm = PrefixLM(PrefixLMConfig(name=f"{config.name}.S"), tokens)
        weights = torch.tensor([float(d.weight) for d in config.denoisers], dtype=torch.float64)  # (K,)
        self.probabilities = weights / weights.sum()  # (K,)
        self._raw_length: int | None = None  # set by block_length; the audit's expected noise density

    def _mode_id(self, i: int, d: Denoiser) -> int:
        token = MODE_TOKENS[d.mode]
        if token not in self.tokens.named_ids:
            have = ", ".join(sorted(self.tokens.named_ids)) or "none"
            raise ValueError(f"objective {self.config.name!r}: denoisers[{i}] (mode {d.mode}) needs the paradigm "
                             f"token {token!r}, but the tokenizer has no such special token (TokenInfo.named_ids "
                             f"has: {have}); use a tokenizer built with UL2's tokens [NLU], [NLG], [S2S]")
        return int(self.tokens.named_ids[token])

    # ---- lengths -------------------------------------------------------------------------------
    def denoiser_widths(self, i: int, raw_length: int) -> Widths:
        """Lengths of denoiser i's rows on a raw block of n tokens (S: the longest over split points)."""
        n = raw_length
        span = self.span_objectives.get(i)
        if span is None:  # paradigm token, prefix of <= n-1 tokens, EOS | rest of <= n-1 tokens, EOS
            return Widths(encoder=n + 1, target=n, decoder=n + 1)
        noise, spans = span.noise_counts(n)
        encoder, target = 1 + span.input_length(n), noise + spans + 1
        return Widths(encoder=encoder, target=target, decoder=encoder + target)

    def widths(self, raw_length: int) -> Widths:
        """The run's padded widths: the maximum over denoisers for raw blocks of `raw_length` tokens."""
        each = [self.denoiser_widths(i, raw_length) for i in range(len(self.config.denoisers))]
        return Widths(max(w.encoder for w in each), max(w.target for w in each), max(w.decoder for w in each))

    @property
    def layout_kind(self) -> str:
        """The layout(s) to build: the configured kind, else the kind the core bound before training
        (`Objective.backbone_kind`), else both ("any")."""
        if self.config.backbone_kind != "any":
            return self.config.backbone_kind
        return self.backbone_kind or "any"

    def block_length(self, seq_len: int) -> int:
        """Longest raw block such that every denoiser's input fits `seq_len` in every layout built: the
        encoder input (paradigm token included) and, for the decoder layout, input plus targets."""
        kind = self.layout_kind

        def fits(n: int) -> bool:
            w = self.widths(n)
            return (kind == "decoder" or w.encoder <= seq_len) and (kind == "encoder-decoder" or w.decoder <= seq_len)

        n = seq_len
        while n > 2 and not fits(n):
            n -= 1
        if not fits(n):
            raise ObjectiveConfigError(f"objective {self.config.name!r}: data.seq_len={seq_len} is too short for "
                                       f"any block (backbone_kind={kind}); raise data.seq_len")
        for span in self.span_objectives.values():
            span._check_feasible(n, seq_len)  # sentinels and non-noise tokens suffice (T5's own check)
        self._raw_length = n
        return n

    # ---- corruption ----------------------------------------------------------------------------
    def assign(self, rows: int, generator: torch.Generator) -> Tensor:
        """Each row's denoiser index, drawn with the mixture weights. (rows,) int64 on the generator's device."""
        return torch.multinomial(self.probabilities.to(generator.device), rows, replacement=True,
                                 generator=generator)

    def corrupt(self, blocks: Blocks, generator: torch.Generator) -> Batch:
        """Draw a denoiser per row, then let each denoiser corrupt its rows (in index order, same generator)."""
        ids = blocks.input_ids  # (B, n)
        rows, n = ids.shape
        w = self.widths(n)
        choice = self.assign(rows, generator).to(ids.device)  # (B,)
        pad = self.tokens.pad_id

        def filled(width: int, value: int) -> Tensor:
            return torch.full((rows, width), value, dtype=ids.dtype, device=ids.device)

        layouts: dict[str, Batch] = {
            "encoder-decoder": {"input_ids": filled(w.encoder, pad), "attention_mask": filled(w.encoder, 0),
                                "labels": filled(w.target, IGNORE_INDEX)},
            "decoder": {"input_ids": filled(w.decoder, pad), "attention_mask": filled(w.decoder, 0),
                        "labels": filled(w.decoder, IGNORE_INDEX),
                        "prefix_len": torch.zeros(rows, dtype=torch.long, device=ids.device)},
        }
        for i in range(len(self.config.denoisers)):
            picked = (choice == i).nonzero().squeeze(1)  # (b,)
            if picked.numel() == 0:
                continue
            mode = torch.full((picked.numel(), 1), int(self.mode_ids[i]), dtype=ids.dtype, device=ids.device)
            parts = (self._span_rows(i, ids[picked], mode, generator) if i in self.span_objectives
                     else self._prefix_rows(ids[picked], mode, generator))
            for kind, part in parts.items():
                for key, value in part.items():
                    if value.dim() == 1:
                        layouts[kind][key][picked] = value
                    else:
                        layouts[kind][key][picked, :value.shape[1]] = value
        kind = self.layout_kind
        if kind == "any":
            batch = {**layouts["encoder-decoder"], **{f"lm_{k}": v for k, v in layouts["decoder"].items()}}
        else:
            batch = layouts[kind]
        batch["stat_denoiser"] = choice
        return batch

    def _span_rows(self, i: int, ids: Tensor, mode: Tensor, generator: torch.Generator) -> dict[str, Batch]:
        """R/X rows: T5SpanCorruption with denoiser i's settings, paradigm token in front."""
        span = self.span_objectives[i]
        length = span.input_length(ids.shape[1])
        t5 = span.corrupt(Blocks(ids), generator)
        ones = torch.ones_like(mode)
        encoder = torch.cat([mode, t5["input_ids"][:, :length]], 1)  # (b, 1 + Lin)
        encoder_mask = torch.cat([ones, t5["attention_mask"][:, :length]], 1)  # (b, 1 + Lin)
        labels = t5["labels"]  # (b, Ltgt)
        targets = labels.masked_fill(labels == IGNORE_INDEX, self.tokens.pad_id)  # (b, Ltgt)
        return {
            "encoder-decoder": {"input_ids": encoder, "attention_mask": encoder_mask, "labels": labels},
            "decoder": {
                "input_ids": torch.cat([encoder, targets], 1),  # (b, 1 + Lin + Ltgt)
                "attention_mask": torch.cat([encoder_mask, (labels != IGNORE_INDEX).long()], 1),
                "labels": torch.cat([torch.full_like(encoder, IGNORE_INDEX), labels], 1),
                "prefix_len": torch.full((ids.shape[0],), encoder.shape[1], dtype=torch.long, device=ids.device),
            },
        }

    def _prefix_rows(self, ids: Tensor, mode: Tensor, generator: torch.Generator) -> dict[str, Batch]:
        """S rows: PrefixLM draws the split P; encoder-decoder reads [S2S] prefix EOS and predicts rest EOS,
        the decoder layout is PrefixLM's batch with [S2S] in front (part of the prefix, never a target)."""
        s = self.prefix_lm.corrupt(Blocks(ids), generator)
        P, real = s["prefix_len"], s["attention_mask"]  # (b,), (b, n)
        n = ids.shape[1]
        eos = self.tokens.eos_id
        with_mode = torch.cat([mode, ids], 1)  # (b, 1 + n)
        pos = torch.arange(n + 1, device=ids.device)[None, :]  # (1, 1 + n)
        encoder = with_mode.masked_fill(pos > P[:, None], self.tokens.pad_id)  # (b, 1 + n) token, prefix
        encoder = encoder.scatter(1, (P + 1)[:, None], eos)  # (b, 1 + n) ... EOS at 1 + P <= n
        encoder_mask = (pos <= (P + 1)[:, None]).long()  # (b, 1 + n)
        shift = (pos[:, :n] + P[:, None]).clamp_max(n - 1)  # (b, n) position of target j in the block
        rest = s["labels"].gather(1, shift).masked_fill(pos[:, :n] + P[:, None] > n - 1, IGNORE_INDEX)  # (b, n)
        labels = rest.scatter(1, (real.sum(1) - P).clamp_min(0)[:, None], eos)  # (b, n) rest then EOS
        ignore = torch.full_like(mode, IGNORE_INDEX)
        return {
            "encoder-decoder": {"input_ids": encoder, "attention_mask": encoder_mask, "labels": labels},
            "decoder": {"input_ids": with_mode, "attention_mask": torch.cat([torch.ones_like(mode), real], 1),
                        "labels": torch.cat([ignore, s["labels"]], 1), "prefix_len": P + 1},  # (b, 1 + n)
        }

    # ---- layouts and loss -----------------------------------------------------------------------
    @staticmethod
    def encoder_decoder_layout(batch: Batch) -> Batch | None:
        """input_ids, attention_mask, labels of the encoder-decoder layout, or None if not built."""
        if "prefix_len" in batch or "labels" not in batch:  # a decoder-only batch uses the plain names
            return None
        return {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}

    @staticmethod
    def decoder_layout(batch: Batch) -> Batch | None:
        """input_ids, attention_mask, labels, prefix_len of the decoder layout (PrefixLM's batch), or None."""
        keys = ("input_ids", "attention_mask", "labels", "prefix_len")
        if "lm_labels" in batch:  # backbone_kind=any: the decoder layout sits under lm_*
            return {k: batch[f"lm_{k}"] for k in keys}
        return {k: batch[k] for k in keys} if "prefix_len" in batch else None

    def loss(self, model: PreTrainedModel, batch: Batch) -> LossOutput:
        """Encoder-decoder: teacher-forced seq2seq cross-entropy; decoder: PrefixLM's loss on the decoder
        layout (bidirectional over paradigm token and input, causal over targets)."""
        encoder_decoder = bool(model.config.is_encoder_decoder)
        layout = self.encoder_decoder_layout(batch) if encoder_decoder else self.decoder_layout(batch)
        if layout is None:
            kind = "encoder-decoder" if encoder_decoder else "decoder"
            raise ValueError(f"objective {self.config.name!r}: the model is {'an' if encoder_decoder else 'a'} "
                             f"{kind} but the batch was built for "
                             f"backbone_kind={self.layout_kind!r}; set objective.backbone_kind to "
                             f"any or {kind}")
        return seq2seq_loss(model, layout) if encoder_decoder else self.prefix_lm.loss(model, layout)

    # ---- audit ---------------------------------------------------------------------------------
    def expected_noise_density(self, i: int) -> float:
        """Denoiser i's noise density as T5 realises it (whole tokens) at the block length last sized by
        `block_length`; the configured density before that."""
        d, n = self.config.denoisers[i], self._raw_length
        return d.noise_density if n is None else self.span_objectives[i].noise_counts(n)[0] / n

    def promised_stats(self) -> dict[str, PromisedStat]:
        stats: dict[str, PromisedStat] = {}
        for mode, token in MODE_TOKENS.items():
            share = sum(float(p) for p, d in zip(self.probabilities, self.config.denoisers) if d.mode == mode)
            if share > 0:
                stats[f"fraction_{mode}"] = PromisedStat(share, 0.05, f"share of rows denoised by {mode} ({token}); "
                                                         "varies per batch, average over many batches")
        stats["mode_token_correct"] = PromisedStat(1.0, 0.0, "rows whose first input token is their paradigm token")
        for i in self.span_objectives:
            stats[f"denoisers[{i}].noise_density"] = PromisedStat(
                self.expected_noise_density(i), 0.01, "noise tokens / raw tokens on this denoiser's rows "
                "(T5's whole-token rounding at the block length; nan in a batch without such rows)")
        if self.layout_kind != "encoder-decoder":
            stats["prefix_targets"] = PromisedStat(0.0, 0.0, "decoder layout: targets inside the bidirectional prefix")
        return stats

    def measure_stats(self, blocks: Blocks, batch: Batch) -> dict[str, float]:
        choice = batch["stat_denoiser"]  # (B,)
        n = blocks.input_ids.shape[1]
        layout = self.encoder_decoder_layout(batch) or self.decoder_layout(batch)
        assert layout is not None, "measure_stats needs a batch built by UL2.corrupt"
        paradigm = [d.mode for d in self.config.denoisers]
        out: dict[str, float] = {}
        for mode in MODE_TOKENS:
            if mode in paradigm:
                hit = torch.tensor([m == mode for m in paradigm], device=choice.device)[choice]  # (B,)
                out[f"fraction_{mode}"] = float(hit.double().mean())
        first = layout["input_ids"][:, 0]  # (B,)
        out["mode_token_correct"] = float((first == self.mode_ids.to(first.device)[choice]).double().mean())
        labels = layout["labels"]  # (B, T); the decoder layout's prefix is all -100
        sentinels = torch.tensor(self.tokens.sentinel_ids, dtype=labels.dtype, device=labels.device)
        targets = (labels != IGNORE_INDEX).sum(1)  # (B,)
        noise = (targets - torch.isin(labels, sentinels).sum(1) - 1).double()  # (B,) minus sentinels and EOS
        for i in self.span_objectives:
            rows = choice == i  # (B,)
            out[f"denoisers[{i}].noise_density"] = float(noise[rows].mean() / n) if rows.any() else float("nan")
        decoder = self.decoder_layout(batch)
        if decoder is not None:
            pos = torch.arange(decoder["labels"].shape[1], device=labels.device)[None, :]
            in_prefix = pos < decoder["prefix_len"][:, None]  # (B, D)
            out["prefix_targets"] = float(((decoder["labels"] != IGNORE_INDEX) & in_prefix).sum())
        return out
