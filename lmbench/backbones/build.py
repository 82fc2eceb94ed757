"""Build the transformers model an objective trains, from a size preset or a local pretrained directory.

The model is always a stock `transformers` class (BertForMaskedLM, GPT2LMHeadModel,
T5ForConditionalGeneration, ...), so a trained backbone saved with `save_pretrained` loads back with
the plain `Auto*` classes, without lmbench. Nothing is ever downloaded: `pretrained` must be a local
directory, and a hub name fails at once with a message saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from lmbench.backbones.presets import FAMILY_KIND, PRESETS, BackboneError, family_config_kwargs, resolve_family
from lmbench.config import BackboneConfig
from lmbench.objectives.base import BACKBONE_KINDS, TokenInfo

MODEL_CLASSES: dict[str, str] = {
    "bert": "BertForMaskedLM",
    "roberta": "RobertaForMaskedLM",
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "t5": "T5ForConditionalGeneration",
    "bart": "BartForConditionalGeneration",
}

# Implementation choices that compute the same function faster; `config_overrides` can set them back.
# GPT-2's default `gelu_new` is the tanh GELU written as eight elementwise ops; `gelu_pytorch_tanh` is the
# same function (within 3e-7) in one fused kernel: on a 2-core CPU about 4x cheaper forward + backward,
# ~10% of a small decoder's training step. A saved model keeps the name and loads with plain transformers.
FAST_KERNELS: dict[str, dict[str, Any]] = {"gpt2": {"activation_function": "gelu_pytorch_tanh"}}

AUTO_CLASSES: dict[str, str] = {
    "encoder": "AutoModelForMaskedLM",
    "decoder": "AutoModelForCausalLM",
    "encoder-decoder": "AutoModelForSeq2SeqLM",
}


def build_backbone(cfg: BackboneConfig, kind: str, tokens: TokenInfo, max_positions: int) -> PreTrainedModel:
    """A freshly initialised (preset) or loaded (`cfg.pretrained`) model of `kind`, in float32.

    kind:          the resolved kind (see `resolve_kind`), never `auto`.
    tokens:        the shared tokenizer's ids; the vocabulary is `tokens.vocab_size`.
    max_positions: the longest sequence the model must accept (position tables are at least this long).
    """
    if kind not in BACKBONE_KINDS:
        raise BackboneError(f"backbone kind {kind!r} is unknown; allowed values: {', '.join(BACKBONE_KINDS)}")
    if cfg.pretrained:
        return _load_pretrained(cfg, kind, tokens, max_positions)
    if cfg.model_class:
        return _from_model_class(cfg, kind, tokens, max_positions)
    family = resolve_family(cfg, kind)
    model_class = getattr(transformers, MODEL_CLASSES[family])
    config_class: type[PretrainedConfig] = model_class.config_class
    kwargs = {**family_config_kwargs(family, cfg.size, tokens, max_positions), **FAST_KERNELS.get(family, {})}
    overrides = dict(cfg.config_overrides or {})
    _check_override_keys(overrides, config_class(**kwargs), family)
    config = config_class(**{**kwargs, **overrides})
    try:
        model = model_class._from_config(config, attn_implementation=cfg.attn_implementation, dtype=torch.float32)
    except (ValueError, ImportError) as exc:
        raise BackboneError(f"backbone.attn_implementation={cfg.attn_implementation!r} failed for "
                            f"{MODEL_CLASSES[family]}: {exc}; try 'sdpa' or 'eager'") from exc
    return model


KIND_SUFFIXES: dict[str, tuple[str, ...]] = {
    "encoder": ("ForMaskedLM",),
    "decoder": ("ForCausalLM", "LMHeadModel"),
    "encoder-decoder": ("ForConditionalGeneration",),
}


def _from_model_class(cfg: BackboneConfig, kind: str, tokens: TokenInfo, max_positions: int) -> PreTrainedModel:
    """Any transformers LM class of `kind` (e.g. DistilBertForMaskedLM, OPTForCausalLM), sized by the preset
    through the standard config names its config class defines (hidden_size, num_hidden_layers,
    num_attention_heads, intermediate_size, max_position_embeddings, via attribute_map where renamed);
    `config_overrides` sets anything else (e.g. DistilBERT's hidden_dim)."""
    name = str(cfg.model_class)
    model_class = getattr(transformers, name, None)
    if model_class is None or not hasattr(model_class, "config_class"):
        raise BackboneError(f"backbone.model_class={name!r} is not a transformers model class; give a class "
                            "name such as DistilBertForMaskedLM, OPTForCausalLM or MT5ForConditionalGeneration")
    if cfg.family != "auto":
        raise BackboneError(f"backbone.model_class={name!r} and backbone.family={cfg.family!r} both name a "
                            "model; set backbone.family=auto with model_class")
    if not name.endswith(KIND_SUFFIXES[kind]):
        raise BackboneError(f"backbone.model_class={name!r} is not a {kind} LM class; for kind {kind!r} use a "
                            f"class ending in {' or '.join(KIND_SUFFIXES[kind])}")
    config_class: type[PretrainedConfig] = model_class.config_class
    base = config_class()
    known = set(base.to_dict()) | set(getattr(base, "attribute_map", {}))
    p = PRESETS[cfg.size]
    wanted = {"vocab_size": tokens.vocab_size, "hidden_size": p["hidden"], "num_hidden_layers": p["layers"],
              "num_attention_heads": p["heads"], "intermediate_size": p["ffn"],
              "max_position_embeddings": max_positions, "pad_token_id": tokens.pad_id,
              "bos_token_id": tokens.bos_id, "eos_token_id": tokens.eos_id}
    if kind == "encoder-decoder":
        wanted["decoder_start_token_id"] = tokens.pad_id
    sized = {k: v for k, v in wanted.items() if k in known}
    overrides = dict(cfg.config_overrides or {})
    _check_override_keys(overrides, base, name)
    config = config_class(**{**sized, **overrides})
    for key, value in {**sized, **overrides}.items():  # some classes set their own names after super().__init__
        setattr(config, key, value)
    try:
        return model_class._from_config(config, attn_implementation=cfg.attn_implementation, dtype=torch.float32)
    except (ValueError, ImportError) as exc:
        raise BackboneError(f"backbone.model_class={name!r} could not be built: {exc}") from exc


def _check_override_keys(overrides: dict[str, Any], config: PretrainedConfig, family: str) -> None:
    """Reject override keys the config class does not define (transformers would store them silently)."""
    known = set(config.to_dict()) | set(getattr(config, "attribute_map", {}))
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise BackboneError(
            f"backbone.config_overrides has keys {unknown} that {type(config).__name__} ({family}) does not "
            f"define; allowed keys: {', '.join(sorted(k for k in known if not k.startswith('_')))}"
        )


def _load_pretrained(cfg: BackboneConfig, kind: str, tokens: TokenInfo, max_positions: int) -> PreTrainedModel:
    """Load `cfg.pretrained` (a local directory) with the Auto class of `kind`, offline."""
    path = Path(str(cfg.pretrained)).expanduser()
    if not path.is_dir():
        raise BackboneError(
            f"backbone.pretrained={cfg.pretrained!r} is not a local directory. lmbench never downloads "
            "models: give a local path written by save_pretrained (download it yourself first), or unset "
            "backbone.pretrained to build a preset/config (backbone.size: tiny, small, base)"
        )
    if not (path / "config.json").is_file():
        raise BackboneError(f"backbone.pretrained={str(path)!r} has no config.json; "
                            "give a directory written by transformers' save_pretrained")
    auto_class = getattr(transformers, AUTO_CLASSES[kind])
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        _check_override_keys(dict(cfg.config_overrides or {}), config, config.model_type)
        for key, value in (cfg.config_overrides or {}).items():
            setattr(config, key, value)
        model = auto_class.from_pretrained(path, config=config, local_files_only=True, dtype=torch.float32,
                                           attn_implementation=cfg.attn_implementation)
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, BackboneError):
            raise
        raise BackboneError(f"backbone.pretrained={str(path)!r} could not be loaded as a {kind} "
                            f"({AUTO_CLASSES[kind]}): {exc}") from exc
    family = model.config.model_type
    if cfg.family != "auto" and cfg.family != family:
        raise BackboneError(f"backbone.family={cfg.family!r} but backbone.pretrained={str(path)!r} holds a "
                            f"{family!r} model; set backbone.family to auto or {family}")
    rows = model.get_input_embeddings().num_embeddings
    if rows < tokens.vocab_size:
        raise BackboneError(f"backbone.pretrained={str(path)!r} has {rows} embedding rows but the tokenizer "
                            f"has {tokens.vocab_size} tokens; use the model's own tokenizer (data.tokenizer.path)")
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and family == "roberta":
        positions -= int(model.config.pad_token_id or 0) + 1
    if positions is not None and positions < max_positions:
        raise BackboneError(f"backbone.pretrained={str(path)!r} accepts {positions} positions but "
                            f"data.seq_len needs {max_positions}; lower data.seq_len")
    return model


def parameter_count(model: nn.Module) -> dict[str, int]:
    """Parameter counts, tied weights counted once.

    embedding: every `nn.Embedding` (token, position, token-type, T5 relative-position bias) and the
    output projection when it is not tied to the input embedding; non_embedding: the rest.
    """
    embedding_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            embedding_ids.update(id(p) for p in module.parameters(recurse=False))
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    if output is not None:
        embedding_ids.update(id(p) for p in output.parameters(recurse=False))
    total = embedding = 0
    for param in model.parameters():  # nn.Module.parameters() yields a shared tensor once
        total += param.numel()
        if id(param) in embedding_ids:
            embedding += param.numel()
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


def describe(model: PreTrainedModel) -> dict[str, Any]:
    """Family, kind and shape of a model: {"family", "kind", "hidden", "layers", "heads", ...}.

    For encoder-decoders `layers` is the sum of both stacks, also given as `encoder_layers` and
    `decoder_layers`.
    """
    c = model.config
    family = c.model_type
    if c.is_encoder_decoder:
        kind = "encoder-decoder"
    elif family in FAMILY_KIND:
        kind = FAMILY_KIND[family]
    else:
        kind = "encoder" if "MaskedLM" in type(model).__name__ else "decoder"
    info: dict[str, Any] = {"family": family, "kind": kind, "hidden": int(c.hidden_size),
                            "heads": int(c.num_attention_heads)}
    if kind == "encoder-decoder":
        enc = getattr(c, "encoder_layers", None) or c.num_layers
        dec = getattr(c, "decoder_layers", None) or getattr(c, "num_decoder_layers", None) or enc
        info.update(layers=int(enc + dec), encoder_layers=int(enc), decoder_layers=int(dec))
    else:
        info["layers"] = int(c.num_hidden_layers)
    return info
