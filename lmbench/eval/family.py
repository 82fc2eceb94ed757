"""Load a saved backbone for zero-shot evaluation and know which objective family it belongs to.

Zero-shot scoring differs per family (masked-LM pseudo-likelihood, causal log-likelihood, seq2seq
infilling), so every scorer starts from a `LoadedModel` that carries the model, its tokenizer and its
kind. The kind is read from the saved config (`is_encoder_decoder`, `architectures`), never guessed
from a name. Nothing is downloaded: the model must be a local directory written by `save_pretrained`
(lmbench's pretraining writes the model and its tokenizer to `<run>/model/`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from lmbench.backbones.presets import FAMILY_KIND

AUTO_CLASSES: dict[str, str] = {
    "encoder": "AutoModelForMaskedLM",
    "decoder": "AutoModelForCausalLM",
    "encoder-decoder": "AutoModelForSeq2SeqLM",
}
# seq2seq families trained to reconstruct the whole text from a mask token (BART infilling), not to
# emit sentinel-delimited spans (T5)
INFILL_FAMILIES: tuple[str, ...] = ("bart", "mbart", "plbart")


class ModelDirError(ValueError):
    """The model directory cannot be scored; the message names the path and what is missing."""


@dataclass
class LoadedModel:
    """A model ready for scoring: eval mode, its tokenizer, and its kind.

    kind:   encoder | decoder | encoder-decoder (see `model_kind`).
    family: the config's model_type (bert, gpt2, t5, bart, ...).
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    kind: str

    @property
    def family(self) -> str:
        return str(self.model.config.model_type)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def model_kind(config: PretrainedConfig) -> str:
    """encoder | decoder | encoder-decoder from a transformers config.

    `is_encoder_decoder` wins; otherwise the saved `architectures` (…ForMaskedLM -> encoder,
    …ForCausalLM / …LMHeadModel -> decoder); otherwise lmbench's family table (bert -> encoder, ...).
    """
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    for arch in getattr(config, "architectures", None) or ():
        if arch.endswith("ForMaskedLM"):
            return "encoder"
        if arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel"):
            return "decoder"
        if arch.endswith("ForConditionalGeneration"):
            return "encoder-decoder"
    kind = FAMILY_KIND.get(str(getattr(config, "model_type", "")))
    if kind is None:
        raise ModelDirError(f"cannot tell the kind of a {config.model_type!r} model: its config has no "
                            "is_encoder_decoder and no ...ForMaskedLM / ...ForCausalLM architecture; allowed "
                            f"families without architectures: {', '.join(FAMILY_KIND)}")
    return kind


def wrap_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> LoadedModel:
    """A `LoadedModel` from objects already in memory (switched to eval mode); the kind from its config."""
    config = model.config
    kind = "encoder-decoder" if getattr(config, "is_encoder_decoder", False) else None
    if kind is None:
        name = type(model).__name__
        if name.endswith("ForMaskedLM"):
            kind = "encoder"
        elif name.endswith("ForCausalLM") or name.endswith("LMHeadModel"):
            kind = "decoder"
        else:
            kind = model_kind(config)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, kind=kind)


def load_scorer_model(model_dir: str | Path, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a local `save_pretrained` directory (model + tokenizer) with the Auto class of its kind.

    Raises `ModelDirError` at once for a hub name or a missing directory (lmbench never downloads),
    for a directory without config.json or without a tokenizer, and for a model that fails to load.
    """
    path = Path(str(model_dir)).expanduser()
    if not path.is_dir():
        raise ModelDirError(f"model directory {str(model_dir)!r} does not exist. lmbench never downloads "
                            "models: give a local directory written by save_pretrained (a pretraining run "
                            "saves one to <run>/model/), not a hub name")
    if not (path / "config.json").is_file():
        raise ModelDirError(f"model directory {str(path)!r} has no config.json; give a directory written by "
                            "transformers' save_pretrained")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelDirError(f"model directory {str(path)!r}: cannot read config.json: {exc}") from exc
    kind = model_kind(config)
    auto_class = getattr(transformers, AUTO_CLASSES[kind])
    try:
        model = auto_class.from_pretrained(path, config=config, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelDirError(f"model directory {str(path)!r} could not be loaded as a {kind} "
                            f"({AUTO_CLASSES[kind]}): {exc}") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelDirError(f"model directory {str(path)!r} has no usable tokenizer ({exc}); save the "
                            "tokenizer beside the model with tokenizer.save_pretrained(model_dir)") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelDirError(f"model directory {str(path)!r}: the tokenizer is not a fast tokenizer (no "
                            "tokenizer.json); scoring needs character offsets from a fast tokenizer")
    model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, kind=kind)
