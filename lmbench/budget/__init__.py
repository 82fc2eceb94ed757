"""Budgets and compute accounting: analytic training FLOPs, measured peak FLOP/s and MFU, and the
`budget` config group (steps, tokens, FLOPs or time) resolved into a step or time limit."""

from lmbench.budget.flops import (
    SUPPORTED_FAMILIES,
    FlopEstimate,
    FlopFormulaError,
    check_family,
    mfu,
    peak_matmul_flops,
    training_flops,
)
from lmbench.budget.plan import (
    BUDGET_KINDS,
    BudgetConfig,
    BudgetError,
    BudgetPlan,
    BudgetSpec,
    effective_budget,
    no_formula_error,
    resolve_budget,
    time_based_lr_factor,
    validate_budget,
)

__all__ = [
    "BUDGET_KINDS", "SUPPORTED_FAMILIES", "BudgetConfig", "BudgetError", "BudgetPlan", "BudgetSpec", "FlopEstimate",
    "FlopFormulaError", "check_family", "effective_budget", "mfu", "no_formula_error", "peak_matmul_flops",
    "resolve_budget", "time_based_lr_factor", "training_flops", "validate_budget",
]
