"""Sequence features from any backbone kind: the last hidden states of the part that reads the text,
and one vector per sequence pooled from them.

Fine-tuning and probing compare objectives through the same features, so each kind is read where it
summarises the text: an encoder at its first token ([CLS]), a causal decoder at its last real token
(the only position that has seen the whole text), an encoder-decoder as the masked mean of its
encoder states (T5 practice; its decoder is not needed to read a text). Any of the three methods
can be forced for any kind.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedModel

POOLING_METHODS: tuple[str, ...] = ("first", "last", "mean")
DEFAULT_POOLING: dict[str, str] = {"encoder": "first", "decoder": "last", "encoder-decoder": "mean"}


def default_pooling(kind: str) -> str:
    """The pooling method of a backbone kind: encoder first, decoder last, encoder-decoder mean."""
    if kind not in DEFAULT_POOLING:
        raise ValueError(f"backbone kind {kind!r} is unknown; allowed values: {', '.join(DEFAULT_POOLING)}")
    return DEFAULT_POOLING[kind]


def resolve_pooling(method: str, kind: str) -> str:
    """`method`, or the kind's default for "auto"; an unknown method raises naming the allowed ones."""
    if method == "auto":
        return default_pooling(kind)
    if method not in POOLING_METHODS:
        raise ValueError(f"pooling={method!r} is unknown; allowed values: auto, {', '.join(POOLING_METHODS)}")
    return method


def pool(hidden: Tensor, attention_mask: Tensor, method: str) -> Tensor:
    """Pool hidden states (B, T, H) with attention_mask (B, T) into (B, H).

    first: position 0 (right padding, so [CLS] for an encoder); last: the last position whose mask
    is 1 (right or left padding); mean: the mean over positions whose mask is 1.
    """
    if method == "first":
        return hidden[:, 0]  # (B, H)
    mask = attention_mask.to(hidden.dtype)  # (B, T)
    if method == "last":
        positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)  # (T,)
        last = (mask * positions).argmax(1)  # (B,) the highest real position
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)
    if method == "mean":
        total = (hidden * mask.unsqueeze(-1)).sum(1)  # (B, H)
        return total / mask.sum(1, keepdim=True).clamp(min=1)  # (B, H)
    raise ValueError(f"pooling method {method!r} is unknown; allowed values: {', '.join(POOLING_METHODS)}")


def encoder_hidden(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """The last hidden states (B, T, H) of the stack that reads `input_ids` (B, T).

    encoder-decoder: `model.get_encoder()`; encoder and decoder: the base model under the LM head
    (`model.base_model`: BertModel, GPT2Model, LlamaModel, ...), so no vocabulary logits are
    computed; a model without a separate base model falls back to `output_hidden_states=True`.
    """
    if getattr(model.config, "is_encoder_decoder", False):
        out = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state  # (B, T, H)
    base = getattr(model, "base_model", model)
    if base is not model:
        return base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return out.hidden_states[-1]  # (B, T, H)
