"""The objective plugin contract: the one interface every pretraining objective implements.

lmbench's core knows nothing objective-specific. It packs token blocks, asks the objective to
`corrupt` them into model inputs and targets (in the data pipeline, with an explicit generator), and
asks the objective for its `loss`. Objectives also declare the corruption statistics they promise so
the core can audit real batches. Built-in and third-party objectives implement exactly this class.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BackboneKind = Literal["encoder", "decoder", "encoder-decoder"]
BACKBONE_KINDS: tuple[str, ...] = ("encoder", "decoder", "encoder-decoder")

Batch = dict[str, Tensor]
"""Model inputs and targets produced by `Objective.corrupt`; every value is a tensor with batch dim 0."""


class ObjectiveConfigError(ValueError):
    """A configuration value is outside what the objective allows; the message names key and range."""


@dataclass
class ObjectiveConfig:
    """Base of every objective's typed config (a dataclass registered in Hydra's ConfigStore).

    Subclasses add their fields with defaults and validate them in `__post_init__` by calling
    `check_probability` / `check_positive` or raising `ObjectiveConfigError`.
    `name` is the registry key of the objective; it lets a composed config say which plugin it is.
    """

    name: str = ""

    def __post_init__(self) -> None:  # noqa: D401 - hook for subclasses
        """Validate fields; subclasses extend and call super()."""

    def check_probability(self, key: str) -> None:
        value = getattr(self, key)
        if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise ObjectiveConfigError(
                f"objective {self.name!r}: {key}={value!r} is not a probability; allowed values: [0, 1]"
            )

    def check_positive(self, key: str, *, allow_zero: bool = False) -> None:
        value = getattr(self, key)
        ok = isinstance(value, (int, float)) and (value >= 0 if allow_zero else value > 0)
        if not ok:
            bound = ">= 0" if allow_zero else "> 0"
            raise ObjectiveConfigError(f"objective {self.name!r}: {key}={value!r}; allowed values: {bound}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TokenInfo:
    """What an objective may know about the shared tokenizer: ids only, so corruption stays pure torch.

    `special_ids` lists every id that must never be selected for corruption nor drawn as a random
    replacement (padding, [CLS]/[SEP]/[MASK], BOS/EOS, sentinels, [UNK]).
    `sentinel_ids[k]` is the id of `<extra_id_k>` (T5 sentinels, counted down from the top of the vocab).
    `sentence_end_ids` are the ids of sentence-final punctuation tokens (for sentence permutation).
    `named_ids` maps every special token string to its id (e.g. UL2's mode tokens "[NLU]", "[NLG]", "[S2S]").
    """

    vocab_size: int
    pad_id: int
    mask_id: int
    bos_id: int
    eos_id: int
    cls_id: int
    sep_id: int
    unk_id: int
    special_ids: tuple[int, ...]
    sentinel_ids: tuple[int, ...] = ()
    sentence_end_ids: tuple[int, ...] = ()
    named_ids: dict[str, int] = field(default_factory=dict, hash=False)

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> TokenInfo:
        """Read the ids from a `transformers` fast tokenizer built (or loaded) by lmbench."""
        vocab = tokenizer.get_vocab()

        def tid(token: str | None, what: str) -> int:
            if token is None or token not in vocab:
                raise ValueError(f"tokenizer has no {what} token ({token!r}); lmbench tokenizers need it")
            return int(vocab[token])

        sentinels: list[int] = []
        k = 0
        while f"<extra_id_{k}>" in vocab:
            sentinels.append(int(vocab[f"<extra_id_{k}>"]))
            k += 1
        specials = set(int(i) for i in tokenizer.all_special_ids) | set(sentinels)
        enders = tuple(int(vocab[t]) for t in (".", "!", "?") if t in vocab)
        named = {tok: int(vocab[tok]) for tok in tokenizer.all_special_tokens if tok in vocab}
        return cls(
            vocab_size=len(tokenizer),
            pad_id=tid(tokenizer.pad_token, "pad"),
            mask_id=tid(tokenizer.mask_token, "mask"),
            bos_id=tid(tokenizer.bos_token, "bos"),
            eos_id=tid(tokenizer.eos_token, "eos"),
            cls_id=tid(tokenizer.cls_token, "cls"),
            sep_id=tid(tokenizer.sep_token, "sep"),
            unk_id=tid(tokenizer.unk_token, "unk"),
            special_ids=tuple(sorted(specials)),
            sentinel_ids=tuple(sentinels),
            sentence_end_ids=enders,
            named_ids=named,
        )

    def special_mask(self, ids: Tensor) -> Tensor:
        """True where `ids` is a special token. (B, L) -> (B, L) bool."""
        specials = torch.tensor(self.special_ids, dtype=ids.dtype, device=ids.device)
        return torch.isin(ids, specials)

    def ordinary_ids(self) -> Tensor:
        """All non-special ids, the pool random replacements are drawn from. (V_ordinary,) int64."""
        keep = torch.ones(self.vocab_size, dtype=torch.bool)
        keep[list(self.special_ids)] = False
        return keep.nonzero().squeeze(1)


@dataclass
class Blocks:
    """A batch of packed token blocks as read from the token cache, before corruption.

    input_ids:   (B, L) int64 token ids, no padding except where a source forces it.
    word_starts: (B, L) bool, True where a token begins a word (from the fast tokenizer's
                 `word_ids()`); None when the cache has no word boundaries.
    """

    input_ids: Tensor
    word_starts: Tensor | None = None


@dataclass(frozen=True)
class PromisedStat:
    """A corruption statistic an objective promises, e.g. mask rate 0.15 +- 0.005 (absolute)."""

    value: float
    tolerance: float
    description: str = ""


@dataclass
class LossOutput:
    """`Objective.loss` returns the scalar loss and detached per-batch statistics (tensors, no syncs)."""

    loss: Tensor
    stats: dict[str, Tensor] = field(default_factory=dict)


class Objective(ABC):
    """A pretraining objective. Subclasses set the class attributes and implement two methods.

    Class attributes:
        name:           registry key (`objective=<name>` on the command line).
        backbone_kinds: which backbone kinds it trains (subset of BACKBONE_KINDS), first = default.
        config_class:   its ObjectiveConfig dataclass.

    Life cycle: the core builds `Objective(config, tokens)`, sets `backbone_kind`, asks `block_length(seq_len)` how many raw
    tokens one packed block holds, calls `corrupt` on every batch in the data pipeline, and `loss` in
    the training step. `promised_stats` / `measure_stats` let the core audit corruption.
    """

    name: ClassVar[str]
    backbone_kinds: ClassVar[tuple[str, ...]]
    config_class: ClassVar[type[ObjectiveConfig]]

    inserted_special_tokens: ClassVar[tuple[str, ...]] = ()
    """Special tokens (TokenInfo field stems: "cls", "sep", "bos", ...) that `corrupt` inserts on
    purpose; the conformance kit flags any other special token appearing where the block had an
    ordinary one. [MASK] and sentinels are always allowed."""

    backbone_kind: str | None = None
    """The kind the core will train (one of `backbone_kinds`), bound before `block_length` is called;
    None outside a run. Objectives that build kind-specific batches (e.g. UL2) read it."""

    def __init__(self, config: ObjectiveConfig, tokens: TokenInfo) -> None:
        self.config = config
        self.tokens = tokens

    def build_modules(self, model: PreTrainedModel) -> dict[str, nn.Module]:
        """Extra trainable modules the objective owns (e.g. ELECTRA's generator), built once the
        backbone exists. The core registers them beside the backbone, so they are optimised,
        checkpointed and moved to the device with it; keep references to use them in `loss`. They
        are not part of the saved transformers model directory. Default: none."""
        return {}

    def block_length(self, seq_len: int) -> int:
        """Raw tokens per packed block such that corrupted inputs fit the model's `seq_len`."""
        return seq_len

    @abstractmethod
    def corrupt(self, blocks: Blocks, generator: torch.Generator) -> Batch:
        """Turn packed blocks into model inputs and targets. Vectorised; all randomness from `generator`."""

    @abstractmethod
    def loss(self, model: PreTrainedModel, batch: Batch) -> LossOutput:
        """Compute the objective's loss. Call the HF model without `labels`; stats must include
        `supervised_tokens` (number of target positions that carry loss)."""

    def promised_stats(self) -> dict[str, PromisedStat]:
        """Statistics the corruption promises (names match `measure_stats`); empty if none."""
        return {}

    def measure_stats(self, blocks: Blocks, batch: Batch) -> dict[str, float]:
        """Measure the promised statistics on one real (blocks, corrupted batch) pair."""
        return {}
