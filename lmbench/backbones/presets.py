"""Size presets and family choices that make backbones of different kinds comparable.

An objective comparison is only fair when every objective trains a model of the same size. A preset
fixes width, depth, heads and feed-forward width once, and each family translates it into its own
transformers config here, so `size=small` means the same shape for BERT, GPT-2 and T5:

- encoder and decoder use all `layers` in one stack;
- encoder-decoder splits them between the stacks (tiny: 2 encoder + 2 decoder layers), so its
  parameter count stays close to the encoder's and the decoder's (the decoder stack's cross-attention
  makes it ~15% larger at equal depth, instead of ~2x with a full-depth stack on each side);
- Llama's gated MLP has three matrices instead of two, so its `intermediate_size` is 2/3 of `ffn`
  (rounded up to a multiple of 8), the LLaMA paper's rule; its embeddings are tied like GPT-2's;
- dropout is 0 in every family (Llama has none to set): short pretraining runs underfit, and equal
  regularisation keeps the families comparable. `config_overrides` can set any of these back.

User-facing mistakes raise `BackboneError`, whose message names the key and the allowed values.
"""

from __future__ import annotations

import math
from typing import Any

from lmbench.config import BackboneConfig
from lmbench.objectives.base import BACKBONE_KINDS, TokenInfo

PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"hidden": 128, "layers": 4, "heads": 4, "ffn": 512},
    "small": {"hidden": 256, "layers": 4, "heads": 4, "ffn": 1024},
    "base": {"hidden": 768, "layers": 12, "heads": 12, "ffn": 3072},
}

FAMILIES: dict[str, tuple[str, ...]] = {
    "encoder": ("bert", "roberta"),
    "decoder": ("gpt2", "llama"),
    "encoder-decoder": ("t5", "bart"),
}

FAMILY_KIND: dict[str, str] = {family: kind for kind, families in FAMILIES.items() for family in families}


class BackboneError(ValueError):
    """A backbone setting cannot be honoured; the message names the `backbone.*` key and allowed values."""


def check_choice(key: str, value: str, allowed: tuple[str, ...] | list[str]) -> None:
    """Raise `BackboneError` unless `value` is one of `allowed`."""
    if value not in allowed:
        raise BackboneError(f"backbone.{key}={value!r} is unknown; allowed values: {', '.join(allowed)}")


def resolve_kind(cfg: BackboneConfig, objective_name: str, supported: tuple[str, ...]) -> str:
    """The backbone kind to build for an objective that trains the `supported` kinds (first = default).

    `kind=auto` picks the family's kind when a family is named and the objective supports it, else
    `supported[0]`. Also validates `size` and `family`, so a bad config fails before any work.
    """
    check_choice("kind", cfg.kind, ("auto", *BACKBONE_KINDS))
    check_choice("size", cfg.size, tuple(PRESETS))
    check_choice("family", cfg.family, ("auto", *FAMILY_KIND))
    kind = cfg.kind
    if kind == "auto":
        kind = FAMILY_KIND.get(cfg.family, supported[0])
    if kind not in supported:
        asked = f"backbone.kind={cfg.kind!r}" if cfg.kind != "auto" else f"backbone.family={cfg.family!r} ({kind})"
        raise BackboneError(
            f"objective {objective_name!r} trains only {' or '.join(supported)} backbones, but {asked} "
            f"was asked for; set backbone.kind to one of: auto, {', '.join(supported)}"
        )
    resolve_family(cfg, kind)
    return kind


def resolve_family(cfg: BackboneConfig, kind: str) -> str:
    """The model family for `kind`: `cfg.family`, or the kind's default (bert / gpt2 / t5) for `auto`."""
    check_choice("kind", kind, BACKBONE_KINDS)
    if cfg.family == "auto":
        return FAMILIES[kind][0]
    if cfg.family not in FAMILIES[kind]:
        raise BackboneError(
            f"backbone.family={cfg.family!r} is not a {kind} family; allowed values for kind {kind!r}: "
            f"auto, {', '.join(FAMILIES[kind])}"
        )
    return cfg.family


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def family_config_kwargs(family: str, size: str, tokens: TokenInfo, max_positions: int) -> dict[str, Any]:
    """Keyword arguments of `family`'s transformers config class for preset `size`.

    Sets the vocabulary (`tokens.vocab_size`), the special ids the model needs (pad, bos, eos and
    the decoder start: pad for T5 as in the original, eos for BART as in fairseq), dropout 0, and
    position tables of at least `max_positions` entries.
    """
    p = PRESETS[size]
    h, n, heads, ffn = p["hidden"], p["layers"], p["heads"], p["ffn"]
    ids = {"pad_token_id": tokens.pad_id, "bos_token_id": tokens.bos_id, "eos_token_id": tokens.eos_id}
    v = tokens.vocab_size
    if family == "bert":
        return dict(vocab_size=v, hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
                    intermediate_size=ffn, max_position_embeddings=max_positions,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **ids)
    if family == "roberta":
        # RoBERTa numbers positions from pad_id + 1, so its table needs pad_id + 1 extra rows.
        return dict(vocab_size=v, hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
                    intermediate_size=ffn, max_position_embeddings=max_positions + tokens.pad_id + 1,
                    type_vocab_size=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **ids)
    if family == "gpt2":
        return dict(vocab_size=v, n_embd=h, n_layer=n, n_head=heads, n_inner=ffn, n_positions=max_positions,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids)
    if family == "llama":
        return dict(vocab_size=v, hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
                    num_key_value_heads=heads, head_dim=h // heads, intermediate_size=_round_up(2 * ffn / 3, 8),
                    max_position_embeddings=max_positions, tie_word_embeddings=True, attention_dropout=0.0, **ids)
    enc, dec = n - n // 2, n // 2
    if family == "t5":
        return dict(vocab_size=v, d_model=h, num_layers=enc, num_decoder_layers=dec, num_heads=heads,
                    d_kv=h // heads, d_ff=ffn, dropout_rate=0.0, pad_token_id=tokens.pad_id,
                    eos_token_id=tokens.eos_id, decoder_start_token_id=tokens.pad_id)
    if family == "bart":
        return dict(vocab_size=v, d_model=h, encoder_layers=enc, decoder_layers=dec,
                    encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn,
                    decoder_ffn_dim=ffn, max_position_embeddings=max_positions, dropout=0.0,
                    attention_dropout=0.0, activation_dropout=0.0, decoder_start_token_id=tokens.eos_id,
                    forced_eos_token_id=tokens.eos_id, **ids)
    raise BackboneError(f"backbone.family={family!r} is unknown; allowed values: {', '.join(FAMILY_KIND)}")
