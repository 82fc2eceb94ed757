"""Objective plugin API: the base class, config and token info every objective uses, and the registry."""

from lmbench.objectives.base import (
    BACKBONE_KINDS,
    Batch,
    Blocks,
    LossOutput,
    Objective,
    ObjectiveConfig,
    ObjectiveConfigError,
    PromisedStat,
    TokenInfo,
)
from lmbench.objectives.registry import (
    BrokenPluginError,
    DuplicateObjectiveError,
    ObjectiveRegistry,
    UnknownObjectiveError,
    default_registry,
)

__all__ = [
    "BACKBONE_KINDS", "Batch", "Blocks", "LossOutput", "Objective", "ObjectiveConfig",
    "ObjectiveConfigError", "PromisedStat", "TokenInfo", "BrokenPluginError",
    "DuplicateObjectiveError", "ObjectiveRegistry", "UnknownObjectiveError", "default_registry",
]
