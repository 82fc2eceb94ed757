"""`check_objective`: run every conformance check on one objective class and report each with a fix.

The order follows the objective's life cycle in the core (construct, size blocks, corrupt, audit,
train), and a check that makes the rest meaningless (not an Objective, config cannot be built, the
objective cannot be constructed, corrupt raises) ends the run with what was found so far.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from lmbench.objectives.base import BACKBONE_KINDS, Objective, ObjectiveConfig
from lmbench.testing.checks import (
    audit_pairs,
    check_batch_format,
    check_block_length,
    check_config,
    check_contract,
    check_determinism,
    check_padding_targets,
    check_special_tokens,
    check_statistics,
    clone_blocks,
    one_line,
)
from lmbench.testing.report import CheckResult, ConformanceError, ConformanceReport
from lmbench.testing.toy import conformance_tokens, toy_blocks
from lmbench.testing.training import check_loss_stats, check_training

AUDIT_BATCHES, AUDIT_TOKENS = 64, 65_536  # 64 batches of >= 8 rows: 32 rows at seq_len 32
TRAIN_ROWS = 8


def guarded(name: str, fix: str, fn: Callable[..., CheckResult], *args: Any) -> CheckResult:
    """Run one check; an exception becomes a failed CheckResult called `name` with `fix`."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none escapes
        return CheckResult(name, False, f"raised {one_line(exc)}", fix)


def check_objective(
    objective_cls: type[Objective],
    config: ObjectiveConfig | None = None,
    *,
    kinds: Sequence[str] | None = None,
    seq_len: int = 32,
    steps: int = 25,
    raise_on_failure: bool = True,
    package: str = "?",
) -> ConformanceReport:
    """Check that `objective_cls` honours the lmbench objective contract, on synthetic ids.

    config:   the config to test (default: `config_class()`, which must construct).
    kinds:    backbone kinds to check (default: every kind in `backbone_kinds`). The objective is
              built and bound (`backbone_kind`) once per kind; with several kinds the per-kind checks
              are named `<check>[<kind>]`.
    seq_len:  model sequence length; blocks are `block_length(seq_len)` long.
    steps:    AdamW steps of the overfitting check per kind.
    raise_on_failure: raise ConformanceError (message: the failed checks and their fixes) on any failure.
    package:  the distribution the objective comes from, shown in the report.
    """
    name = getattr(objective_cls, "name", None) or getattr(objective_cls, "__name__", repr(objective_cls))
    report = ConformanceReport(objective=str(name), package=package)
    with torch.random.fork_rng(devices=[]):  # an objective misusing the global RNG leaves no trace
        run_checks(objective_cls, config, kinds, seq_len, steps, report.checks)
    if raise_on_failure and not report.passed:
        raise ConformanceError(report)
    return report


def run_checks(objective_cls: type[Objective], config: ObjectiveConfig | None, kinds: Sequence[str] | None,
               seq_len: int, steps: int, checks: list[CheckResult]) -> None:
    """Append the results of every check to `checks`, stopping where later checks cannot run.

    As in a run, the objective is built once per backbone kind with `backbone_kind` bound before
    `block_length`, since an objective may size and lay out its batches per kind (UL2 does). With more
    than one kind, the per-kind checks carry the kind in their name: `statistics[decoder]`.
    """
    contract, fatal = check_contract(objective_cls)
    checks.append(contract)
    if fatal:
        return
    result, config = check_config(objective_cls, config)
    checks.append(result)
    if config is None:
        return
    declared = tuple(getattr(objective_cls, "backbone_kinds", ()) or ())
    wanted = tuple(kinds) if kinds is not None else declared
    unknown = [k for k in wanted if k not in declared]
    for kind in unknown:
        checks.append(CheckResult(f"loss[{kind}]", False, f"kind {kind!r} is not in backbone_kinds {declared}",
                                  f"test only declared kinds, or add {kind!r} to backbone_kinds"))
    bound = [k for k in wanted if k in declared]
    if not bound:
        check_kind(objective_cls, config, None, seq_len, steps, checks, suffix="")
        if not unknown:
            checks.append(CheckResult("loss", False, "the objective declares no backbone kinds, so no backbone can "
                                      "train it", f"set backbone_kinds to a non-empty subset of {BACKBONE_KINDS}"))
        return
    for kind in bound:
        if not check_kind(objective_cls, config, kind, seq_len, steps, checks,
                          suffix=f"[{kind}]" if len(bound) > 1 else ""):
            return


def check_kind(objective_cls: type[Objective], config: ObjectiveConfig, kind: str | None, seq_len: int,
               steps: int, checks: list[CheckResult], suffix: str) -> bool:
    """The corruption checks and (when `kind` is set) the loss checks for one bound backbone kind.
    Returns False when a failure makes the remaining kinds pointless (construction, corrupt)."""
    tokens = conformance_tokens()

    def add(result: CheckResult) -> None:
        if suffix and not result.name.startswith("loss["):
            result.name += suffix
        checks.append(result)

    try:
        objective = objective_cls(config, tokens)
    except Exception as exc:  # noqa: BLE001
        add(CheckResult("construct", False, f"{objective_cls.__name__}(config, tokens) raised {one_line(exc)}",
                        "__init__(self, config, tokens) must accept the config and a TokenInfo"))
        return False
    objective.backbone_kind = kind
    result, block_len = check_block_length(objective, seq_len)
    add(result)
    if block_len is None:
        return False
    blocks = toy_blocks(tokens, TRAIN_ROWS, block_len, seed=0)
    fix_corrupt = "corrupt(blocks, generator) must handle any (B, L) block of ordinary ids"
    add(guarded("determinism", fix_corrupt, check_determinism, objective, blocks))
    try:
        rows = max(8, math.ceil(AUDIT_TOKENS / (AUDIT_BATCHES * block_len)))
        pairs = audit_pairs(objective, tokens, block_len, AUDIT_BATCHES, rows)
        batch = objective.corrupt(clone_blocks(blocks), torch.Generator().manual_seed(0))
    except Exception as exc:  # noqa: BLE001
        add(CheckResult("corrupt", False, f"corrupt raised {one_line(exc)}", fix_corrupt))
        return False
    add(guarded("batch_format", "return dict[str, Tensor] with batch dim B", check_batch_format, pairs, tokens, seq_len))
    add(guarded("padding_targets", "corrupt must accept right-padded blocks (pad_id at row ends)",
                check_padding_targets, objective, tokens, block_len))
    add(guarded("special_tokens", fix_corrupt, check_special_tokens, objective, tokens, pairs))
    add(guarded("statistics", "measure_stats(blocks, batch) must accept any corrupted batch",
                check_statistics, objective, pairs))
    if kind is None:
        return True
    widths = [v.shape[-1] for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() >= 2]
    max_positions = max([block_len, seq_len, *widths]) + 2
    result, run = check_training(objective, kind, tokens, batch, max_positions, steps)
    add(result)
    add(check_loss_stats(run))
    return True


def assert_conforms(objective_cls: type[Objective], config: ObjectiveConfig | None = None, **kw: Any) -> ConformanceReport:
    """`check_objective` for pytest (same keywords): raises ConformanceError listing the failed checks
    and their fixes, or returns the passing report."""
    kw["raise_on_failure"] = True
    return check_objective(objective_cls, config, **kw)
