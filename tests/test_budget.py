"""Budgets: conf/budget/*.yaml against the schema, steps/tokens/FLOPs/time resolved into limits, errors
at start for budgets below one step or FLOP budgets without a formula, and the time-based LR schedule
against the step schedule it mirrors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from lmbench.budget import (
    BUDGET_KINDS,
    BudgetConfig,
    BudgetError,
    FlopFormulaError,
    resolve_budget,
    time_based_lr_factor,
    validate_budget,
)
from lmbench.budget.plan import SCHEDULES
from lmbench.train.module import SCHEDULES as TRAINER_SCHEDULES
from lmbench.train.module import lr_lambda

CONF = Path(__file__).resolve().parents[1] / "conf" / "budget"
TOKENS_PER_STEP = 32 * 128


def load(name: str):
    return OmegaConf.merge(OmegaConf.structured(BudgetConfig), OmegaConf.load(CONF / f"{name}.yaml"))


def test_every_kind_has_a_config_file_that_matches_the_schema() -> None:
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(BUDGET_KINDS)
    for kind in BUDGET_KINDS:
        cfg = load(kind)
        assert cfg.kind == kind and isinstance(cfg.value, float)
        plan = resolve_budget(cfg, TOKENS_PER_STEP, flops_per_step=3.6e10)
        assert (plan.max_steps is None) == (kind == "time") and (plan.max_time_s is None) == (kind != "time")
    with pytest.raises(ValidationError):
        OmegaConf.merge(OmegaConf.structured(BudgetConfig), {"value": "ten"})
    with pytest.raises(Exception, match="unit"):
        OmegaConf.merge(OmegaConf.structured(BudgetConfig), {"unit": "s"})


def test_steps_budget() -> None:
    plan = resolve_budget(BudgetConfig("steps", 250), TOKENS_PER_STEP, None)
    assert (plan.max_steps, plan.max_time_s) == (250, None) and "250 optimizer steps" in plan.description
    with pytest.raises(BudgetError, match=r"budget.value=2.5 .*integer >= 1"):
        resolve_budget(BudgetConfig("steps", 2.5), TOKENS_PER_STEP, None)


def test_tokens_budget_rounds_up_to_whole_steps() -> None:
    assert resolve_budget(BudgetConfig("tokens", 10 * TOKENS_PER_STEP), TOKENS_PER_STEP, None).max_steps == 10
    assert resolve_budget(BudgetConfig("tokens", 10 * TOKENS_PER_STEP + 1), TOKENS_PER_STEP, None).max_steps == 11
    assert resolve_budget({"kind": "tokens", "value": TOKENS_PER_STEP}, TOKENS_PER_STEP, None).max_steps == 1
    with pytest.raises(BudgetError, match=r"budget.value=4095 is smaller than one optimizer step \(4,096 tokens"
                                          r" / 1e\+09 FLOPs\); allowed: >= 4096"):
        resolve_budget(BudgetConfig("tokens", TOKENS_PER_STEP - 1), TOKENS_PER_STEP, 1e9)


def test_flops_budget_rounds_up_and_needs_a_formula() -> None:
    per_step = 3.6e10
    plan = resolve_budget(BudgetConfig("flops", 1e13), TOKENS_PER_STEP, per_step)
    assert plan.max_steps == math.ceil(1e13 / per_step) == 278
    assert resolve_budget(BudgetConfig("flops", 2 * per_step), TOKENS_PER_STEP, per_step).max_steps == 2
    with pytest.raises(BudgetError, match=r"budget.value=1e\+10 is smaller than one optimizer step \(4,096 tokens"
                                          r" / 3.6e\+10 FLOPs\); allowed: >= 3.6e\+10"):
        resolve_budget(BudgetConfig("flops", 1e10), TOKENS_PER_STEP, per_step)
    with pytest.raises(FlopFormulaError, match=r"family 'distilbert' has none.*bert, roberta, gpt2, llama, t5, bart"):
        resolve_budget(BudgetConfig("flops", 1e13), TOKENS_PER_STEP, None, family="distilbert")


def test_time_budget_has_no_step_count() -> None:
    plan = resolve_budget(BudgetConfig("time", 90), TOKENS_PER_STEP, None)
    assert (plan.max_steps, plan.max_time_s) == (None, 90.0)


@pytest.mark.parametrize("cfg,match", [
    (BudgetConfig("epochs", 3), r"budget.kind='epochs' is unknown; allowed values: steps, tokens, flops, time"),
    (BudgetConfig("tokens", 0), r"budget.value=0 for budget.kind=tokens; allowed values: a number > 0"),
    (BudgetConfig("time", -5), r"budget.value=-5 .*> 0 \(seconds\)"),
    (BudgetConfig("flops", float("inf")), r"budget.value=inf"),
    ({"kind": "steps", "value": True}, r"budget.value=True"),
])
def test_invalid_budgets_fail_before_any_work(cfg, match: str) -> None:
    with pytest.raises(BudgetError, match=match):
        validate_budget(cfg)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_time_schedule_follows_the_step_schedule_and_ends_at_the_budget(schedule: str) -> None:
    assert SCHEDULES == TRAINER_SCHEDULES
    total, warmup_fraction, step_s = 1000, 0.1, 0.36  # 1000 steps of 0.36 s in a 360 s budget
    budget = total * step_s
    step_factor = lr_lambda(schedule, int(warmup_fraction * total), total)
    for step in range(0, total, 7):
        timed = time_based_lr_factor(step * step_s, budget, warmup_fraction, schedule, step_s=step_s)
        assert timed == pytest.approx(step_factor(step), abs=1e-9), step
    assert time_based_lr_factor(0.0, budget, warmup_fraction, schedule, step_s=step_s) > 0  # first step trains
    end = 0.0 if schedule != "constant" else 1.0
    assert time_based_lr_factor(budget, budget, warmup_fraction, schedule) == pytest.approx(end)
    assert time_based_lr_factor(2 * budget, budget, warmup_fraction, schedule) == pytest.approx(end)


def test_time_schedule_without_warmup_and_bad_arguments() -> None:
    assert time_based_lr_factor(0.0, 100.0, 0.0, "linear") == 1.0
    assert time_based_lr_factor(25.0, 100.0, 0.0, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    with pytest.raises(ValueError, match=r"schedule='step'; allowed values: linear, cosine, constant"):
        time_based_lr_factor(0.0, 100.0, 0.1, "step")
    with pytest.raises(ValueError, match=r"warmup_fraction=1.0; allowed values: \[0, 1\)"):
        time_based_lr_factor(0.0, 100.0, 1.0, "linear")


def test_trainer_aliases_override_the_budget_group() -> None:
    from types import SimpleNamespace

    from lmbench.budget import BudgetSpec, effective_budget

    group = BudgetConfig("flops", 1e13)
    trainer = SimpleNamespace(max_steps=None, max_tokens=None)
    assert effective_budget(trainer, group) == BudgetSpec("flops", 1e13, "budget.value")
    assert effective_budget(SimpleNamespace(max_steps=4, max_tokens=None), group) == BudgetSpec("steps", 4.0,
                                                                                                "trainer.max_steps")
    both = SimpleNamespace(max_steps=4, max_tokens=9000)  # max_tokens first, as before the budget group existed
    spec = effective_budget(both, group)
    assert spec == BudgetSpec("tokens", 9000.0, "trainer.max_tokens")
    assert resolve_budget(spec, TOKENS_PER_STEP, None).max_steps == 3
    with pytest.raises(BudgetError, match=r"trainer.max_tokens=100 is smaller than one optimizer step \(4,096"):
        resolve_budget(BudgetSpec("tokens", 100.0, "trainer.max_tokens"), TOKENS_PER_STEP, None)
    with pytest.raises(BudgetError, match=r"trainer.max_steps=0; allowed values: an integer >= 1, or null"):
        effective_budget(SimpleNamespace(max_steps=0, max_tokens=None), group)
    with pytest.raises(BudgetError, match=r"budget.kind='epochs' is unknown"):
        effective_budget(trainer, BudgetConfig("epochs", 3))
