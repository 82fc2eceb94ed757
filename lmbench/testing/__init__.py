"""lmbench.testing: the conformance kit every objective plugin, built-in or third-party, is tested with.

`check_objective(MyObjective)` builds the objective on synthetic token ids, corrupts toy blocks and
checks what the core relies on: the plugin contract, a config that survives Hydra, deterministic
corruption from the explicit generator, a well-formed batch, no padding targets, no special token
smuggled into the inputs, the promised corruption statistics, and a loss that trains a real backbone
of every declared kind. Each check reports a one-line fix on failure. See docs/writing-an-objective.md.
"""

from lmbench.testing.conformance import assert_conforms, check_objective
from lmbench.testing.report import CheckResult, ConformanceError, ConformanceReport
from lmbench.testing.toy import conformance_tokens, toy_blocks

__all__ = [
    "CheckResult", "ConformanceError", "ConformanceReport", "assert_conforms", "check_objective",
    "conformance_tokens", "toy_blocks",
]
