"""ELECTRA's small MLM generator: built from the discriminator's config, sharing its embeddings.

The discriminator is lmbench's backbone (a stock BertForMaskedLM / RobertaForMaskedLM, whose encoder
body `model.base_model` we use). The generator is a stock `transformers.ElectraForMaskedLM` that is
narrower than the discriminator (hidden, heads and feed-forward width divided by
`generator_size_divisor`, as in Clark et al. 2020, Sec. 3.2) and whose *embedding* width equals the
discriminator's hidden size, so the two can share one token-embedding matrix; ELECTRA's
`embeddings_project` maps the shared embeddings down to the generator's width and its tied LM head
maps back up. Sampling uses inverse-CDF draws from uniforms made in `corrupt`, so it needs no
generator state at training time and is reproducible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from transformers import ElectraConfig as HFElectraConfig
from transformers import ElectraForMaskedLM

from lmbench.objectives.base import ObjectiveConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Embedding submodules besides the token matrix that a BERT discriminator and an ELECTRA generator
# lay out identically (ELECTRA shares token, position and token-type embeddings and their LayerNorm).
SHARED_BERT_EMBEDDINGS = ("position_embeddings", "token_type_embeddings", "LayerNorm")


def generator_heads(hidden: int, heads: int, divisor: int) -> int:
    """Attention heads of the generator: heads // divisor (at least 1), lowered until it divides hidden."""
    count = max(1, heads // divisor)
    while hidden % count:
        count -= 1
    return count


def generator_config(model: PreTrainedModel, divisor: int, layers: int) -> HFElectraConfig:
    """An ElectraConfig 1/`divisor` as wide as the discriminator `model`, with `layers` layers
    (0 = the discriminator's depth) and an embedding width equal to the discriminator's hidden size."""
    c = model.config
    hidden = int(c.hidden_size)
    if hidden % divisor:
        raise ObjectiveConfigError(
            f"objective 'electra': generator_size_divisor={divisor} does not divide the backbone's hidden size "
            f"{hidden}; allowed values: a divisor of {hidden} (e.g. 1, 2, 4)")
    small = hidden // divisor
    return HFElectraConfig(
        vocab_size=int(c.vocab_size),
        embedding_size=int(model.get_input_embeddings().embedding_dim),
        hidden_size=small,
        num_hidden_layers=int(layers or c.num_hidden_layers),
        num_attention_heads=generator_heads(small, int(c.num_attention_heads), divisor),
        intermediate_size=max(1, int(c.intermediate_size) // divisor),
        hidden_act=getattr(c, "hidden_act", "gelu"),
        hidden_dropout_prob=float(getattr(c, "hidden_dropout_prob", 0.0)),
        attention_probs_dropout_prob=float(getattr(c, "attention_probs_dropout_prob", 0.0)),
        max_position_embeddings=int(c.max_position_embeddings),
        type_vocab_size=int(getattr(c, "type_vocab_size", 2)),
        layer_norm_eps=float(getattr(c, "layer_norm_eps", 1e-12)),
        pad_token_id=c.pad_token_id,
    )


def build_generator(model: PreTrainedModel, divisor: int, layers: int) -> ElectraForMaskedLM:
    """The generator for discriminator `model`, its token embeddings shared with the discriminator.

    For a BERT discriminator the position and token-type embeddings and the embedding LayerNorm are
    shared too (identical layout); RoBERTa numbers positions from pad_id + 1, so there only the token
    matrix is shared. The generator's LM head is tied to the shared token matrix.
    """
    config = generator_config(model, divisor, layers)
    attn = getattr(model.config, "_attn_implementation", None) or "eager"
    generator = ElectraForMaskedLM._from_config(config, attn_implementation=attn, dtype=model.dtype)
    shared = model.get_input_embeddings()
    embeddings = generator.electra.embeddings
    embeddings.word_embeddings = shared
    if model.config.model_type == "bert":
        source = model.base_model.embeddings
        for name in SHARED_BERT_EMBEDDINGS:
            mine, theirs = getattr(embeddings, name), getattr(source, name)
            if mine.weight.shape == theirs.weight.shape:
                setattr(embeddings, name, theirs)
    generator.generator_lm_head.weight = shared.weight  # (V, E) tied output projection
    return generator


def shared_parameter_names(generator: nn.Module, model: nn.Module) -> list[str]:
    """Names (in `generator`) of the parameters that are the very same tensors as parameters of `model`."""
    theirs = {id(p) for p in model.parameters()}
    return [name for name, p in generator.named_parameters(remove_duplicate=False) if id(p) in theirs]


def sample_tokens(logits: Tensor, uniform: Tensor, allowed: Tensor, temperature: float) -> Tensor:
    """One token per row from softmax(logits / temperature) restricted to `allowed` ids, by inverse CDF.

    logits: (N, V); uniform: (N,) in [0, 1); allowed: (V,) bool. Returns (N,) int64 ids, never a
    disallowed one (their probability is exactly 0 and the draw is scaled to the CDF's total).
    """
    scaled = logits.detach().float() / temperature  # (N, V)
    scaled = scaled.masked_fill(~allowed, float("-inf"))  # (N, V)
    cdf = torch.softmax(scaled, dim=-1).cumsum(dim=-1)  # (N, V) non-decreasing, flat at disallowed ids
    target = uniform.to(cdf.dtype).unsqueeze(1) * cdf[:, -1:]  # (N, 1) strictly below the row total
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=logits.shape[-1] - 1)  # (N,)
