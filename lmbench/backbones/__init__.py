"""Backbones: size-matched encoder, decoder and encoder-decoder models built from transformers configs."""

from lmbench.backbones.build import build_backbone, describe, parameter_count
from lmbench.backbones.presets import FAMILIES, PRESETS, BackboneError, resolve_family, resolve_kind

__all__ = [
    "FAMILIES", "PRESETS", "BackboneError", "build_backbone", "describe", "parameter_count",
    "resolve_family", "resolve_kind",
]
