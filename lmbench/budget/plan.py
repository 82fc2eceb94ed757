"""Training budgets: how much a run may train, in steps, corpus tokens, FLOPs or wall-clock time.

Objectives are compared at equal cost, and which cost is fair depends on the question: equal steps,
equal tokens read, equal compute (an encoder-decoder spends a step differently from a decoder), or
equal time on the same hardware. The `budget` config group names the kind and the amount; this module
turns it into a step limit (or a time limit) before any training starts, and fails with a message
naming `budget.value` when the budget cannot buy one optimizer step. A time budget has no step count,
so its learning-rate schedule runs on elapsed time (`time_based_lr_factor`) and ends at the budget.
`trainer.max_steps` and `trainer.max_tokens` stay as aliases that override the group when set
(`effective_budget`); the wiring into a run is lmbench.train.budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lmbench.budget.flops import SUPPORTED_FAMILIES, FlopFormulaError

BUDGET_KINDS: tuple[str, ...] = ("steps", "tokens", "flops", "time")
SCHEDULES: tuple[str, ...] = ("linear", "cosine", "constant")  # as lmbench.train.module.SCHEDULES
UNITS: dict[str, str] = {"steps": "optimizer steps", "tokens": "corpus tokens", "flops": "training FLOPs",
                         "time": "seconds"}


class BudgetError(ValueError):
    """A budget the run cannot honour; the message names `budget.kind` / `budget.value` and what is allowed."""


@dataclass
class BudgetConfig:
    """How much the run may train (config group `budget`, conf/budget/*.yaml).

    kind:  steps | tokens | flops | time.
    value: optimizer steps (an integer), corpus tokens read (batch_size x block_len x accumulation per
           step), training FLOPs (analytic forward + backward, lmbench.budget.flops), or seconds.
    """

    kind: str = "steps"
    value: float = 200


@dataclass
class BudgetPlan:
    """What the trainer runs: `max_steps` optimizer steps, or until `max_time_s` seconds (steps unknown)."""

    max_steps: int | None
    max_time_s: float | None
    description: str


def _field(cfg: Any, key: str) -> Any:
    return cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None)


def validate_budget(budget_cfg: Any) -> tuple[str, float]:
    """(kind, value) of a budget config (dataclass, DictConfig or dict), or BudgetError naming the key.

    Call it first thing in a run: it needs no model or data.
    """
    kind, value = _field(budget_cfg, "kind"), _field(budget_cfg, "value")
    if kind not in BUDGET_KINDS:
        raise BudgetError(f"budget.kind={kind!r} is unknown; allowed values: {', '.join(BUDGET_KINDS)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise BudgetError(f"budget.value={value!r} for budget.kind={kind}; allowed values: a number > 0 "
                          f"({UNITS[kind]})")
    if kind == "steps" and float(value) != int(value):
        raise BudgetError(f"budget.value={value!r} for budget.kind=steps; allowed values: an integer >= 1")
    return str(kind), float(value)


def _too_small(key: str, value: float, unit_cost: float, tokens_per_step: int,
               flops_per_step: float | None) -> BudgetError:
    cost = f"{tokens_per_step:,} tokens" + (f" / {flops_per_step:.4g} FLOPs" if flops_per_step else "")
    return BudgetError(f"{key}={value:.6g} is smaller than one optimizer step ({cost}); "
                       f"allowed: >= {unit_cost:.6g}")


def no_formula_error(family: str | None) -> FlopFormulaError:
    """The error of a FLOP budget for a backbone family without a FLOP formula."""
    return FlopFormulaError(f"budget.kind=flops needs a FLOP formula, but backbone family {family or '?'!r} has none; "
                            f"families with one: {', '.join(SUPPORTED_FAMILIES)}; "
                            "or use budget=steps, budget=tokens or budget=time")


@dataclass
class BudgetSpec:
    """The budget a run honours after aliases: kind, value, and the config key the value came from."""

    kind: str
    value: float
    key: str = "budget.value"  # or trainer.max_steps / trainer.max_tokens


def effective_budget(trainer_cfg: Any, budget_cfg: Any) -> BudgetSpec:
    """The run's budget: `trainer.max_tokens` if set, else `trainer.max_steps` if set, else the `budget` group.

    The two trainer keys are kept as aliases (`trainer=smoke` sets max_steps: 4); each overrides the budget
    group when not null. Raises BudgetError naming the key for a value below 1 or an invalid budget.
    """
    for key, kind in (("max_tokens", "tokens"), ("max_steps", "steps")):
        value = _field(trainer_cfg, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BudgetError(f"trainer.{key}={value!r}; allowed values: an integer >= 1, or null to use the "
                              f"budget group (budget=steps|tokens|flops|time)")
        return BudgetSpec(kind, float(value), f"trainer.{key}")
    kind, value = validate_budget(budget_cfg)
    return BudgetSpec(kind, value)


def resolve_budget(budget_cfg: Any, tokens_per_step: int, flops_per_step: float | None,
                   family: str | None = None, key: str | None = None) -> BudgetPlan:
    """Turn a budget into a step or time limit.

    tokens_per_step: corpus tokens one optimizer step reads (batch_size x block_len x accumulation).
    flops_per_step:  analytic training FLOPs of one optimizer step (`training_flops(...).training` x
                     accumulation), or None when the backbone has no FLOP formula.
    family:          the backbone family, named in the error when a FLOP budget has no formula.
    key:             the config key named in a too-small error (default `budget.value`; a BudgetSpec's own).

    steps -> value steps; tokens -> ceil(value / tokens_per_step); flops -> ceil(value / flops_per_step);
    time -> max_time_s = value, max_steps None. Raises BudgetError when the budget buys less than one
    step, FlopFormulaError for a FLOP budget without a formula.
    """
    if isinstance(budget_cfg, BudgetSpec):
        kind, value, key = budget_cfg.kind, budget_cfg.value, key or budget_cfg.key
    else:
        kind, value = validate_budget(budget_cfg)
    key = key or "budget.value"
    if tokens_per_step < 1:
        raise ValueError(f"resolve_budget: tokens_per_step={tokens_per_step}; allowed values: >= 1")
    if kind == "steps":
        steps = int(value)
        return BudgetPlan(steps, None, f"{steps:,} optimizer steps ({steps * tokens_per_step:,} tokens)")
    if kind == "tokens":
        if value < tokens_per_step:
            raise _too_small(key, value, tokens_per_step, tokens_per_step, flops_per_step)
        steps = math.ceil(value / tokens_per_step)
        return BudgetPlan(steps, None, f"{value:,.0f} tokens = {steps:,} optimizer steps of {tokens_per_step:,} "
                                       f"tokens ({steps * tokens_per_step:,} tokens)")
    if kind == "flops":
        if flops_per_step is None:
            raise no_formula_error(family)
        if not flops_per_step > 0:
            raise ValueError(f"resolve_budget: flops_per_step={flops_per_step!r}; allowed values: > 0")
        if value < flops_per_step:
            raise _too_small(key, value, flops_per_step, tokens_per_step, flops_per_step)
        steps = math.ceil(value / flops_per_step)
        return BudgetPlan(steps, None, f"{value:.4g} FLOPs = {steps:,} optimizer steps of {flops_per_step:.4g} "
                                       f"FLOPs ({steps * flops_per_step:.4g} FLOPs)")
    return BudgetPlan(None, value, f"{value:g} s of training; steps unknown, learning-rate schedule on elapsed time")


def time_based_lr_factor(elapsed_s: float, max_time_s: float, warmup_fraction: float, schedule: str,
                         step_s: float = 0.0) -> float:
    """Multiplier of the base learning rate `elapsed_s` seconds into a `max_time_s` training budget.

    The step schedule (lmbench.train.module.lr_lambda) with progress measured in time: linear warmup
    over the first `warmup_fraction` of the budget, then linear or cosine decay reaching 0 exactly at
    `max_time_s` (constant: 1 after warmup). Warmup is evaluated at the end of the coming step,
    elapsed_s + step_s (pass the last step's duration), so the first step trains, as the step
    schedule's (step + 1) / warmup_steps does; decay at its start, so no step before the budget's end
    gets 0.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"trainer.optim.schedule={schedule!r}; allowed values: {', '.join(SCHEDULES)}")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"trainer.optim.warmup_fraction={warmup_fraction!r}; allowed values: [0, 1)")
    if not max_time_s > 0:
        raise ValueError(f"time_based_lr_factor: max_time_s={max_time_s!r}; allowed values: > 0")
    progress = min(max(elapsed_s / max_time_s, 0.0), 1.0)
    if warmup_fraction > 0 and progress < warmup_fraction:
        return min(1.0, max(elapsed_s + step_s, 0.0) / max_time_s / warmup_fraction)
    if schedule == "constant":
        return 1.0
    decay = (progress - warmup_fraction) / (1.0 - warmup_fraction)
    if schedule == "linear":
        return 1.0 - decay
    return 0.5 * (1.0 + math.cos(math.pi * decay))
