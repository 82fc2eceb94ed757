"""Budgets and compute accounting wired into a run: steps, tokens, FLOPs or time, and MFU.

lmbench.budget holds the formulas (analytic FLOPs, measured peak, budget arithmetic); this module
applies them to one run. Before any data is read, `check_budget_at_start` validates the budget (and
the `trainer.max_steps` / `trainer.max_tokens` aliases), rejects a token budget that cannot buy one
step, and a FLOP budget for a backbone family without a FLOP formula. Once the model exists,
`plan_budget` counts the analytic FLOPs of the run's first real batch and resolves the budget into a
step count (or a time limit). `TrainClock` times training (validation excluded), stops a time budget
after the step that reaches it and drives the time-based learning-rate schedule; `compute_summary`
turns steps, time and the device's measured peak into the FLOP and MFU fields of results.json.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from transformers import PreTrainedModel

from lmbench.backbones import resolve_family
from lmbench.budget.flops import SUPPORTED_FAMILIES, mfu, peak_matmul_flops, training_flops
from lmbench.budget.plan import (BudgetError, BudgetPlan, BudgetSpec, effective_budget, no_formula_error,
                                 resolve_budget, time_based_lr_factor)
from lmbench.data.blocks import BlockView
from lmbench.data.datamodule import TrainBatches
from lmbench.objectives.base import Objective

log = logging.getLogger(__name__)

TIME_BUDGET_BATCHES = 10**9  # a time budget's stream length: never reached, the clock stops first


# ---- before any data is read ---------------------------------------------------------------------
def backbone_family(cfg: Any, kind: str) -> Optional[str]:
    """The model family (`model_type`) the backbone config will build, without building it; None when
    it cannot be told cheaply (a pretrained directory without a readable config.json, an unknown class:
    building the model names that problem)."""
    try:
        if cfg.get("pretrained"):
            config_file = Path(str(cfg.pretrained)).expanduser() / "config.json"
            return str(json.loads(config_file.read_text(encoding="utf-8"))["model_type"])
        if cfg.get("model_class"):
            import transformers

            model_class = getattr(transformers, str(cfg.model_class), None)
            return getattr(getattr(model_class, "config_class", None), "model_type", None)
        return resolve_family(cfg, kind)
    except (OSError, ValueError, KeyError, AttributeError, ImportError):
        return None


def check_budget_at_start(cfg: DictConfig, kind: str) -> BudgetSpec:
    """Validate the run's budget before the tokenizer or corpus is touched; return it (aliases applied).

    A token budget must buy one optimizer step: data.batch_size x trainer.accumulate_grad_batches x the
    objective's block length, which is only known once the tokenizer exists; here it is bounded below
    by half of data.seq_len (every built-in objective's block is longer), and `plan_budget` checks
    exactly. A FLOP budget needs a FLOP formula for the backbone family.
    """
    spec = effective_budget(cfg.trainer, cfg.budget)
    if spec.kind == "tokens":
        batch, accum, seq_len = int(cfg.data.batch_size), int(cfg.trainer.accumulate_grad_batches), int(cfg.data.seq_len)
        least = batch * accum * max(1, seq_len // 2)
        if spec.value < least:
            raise BudgetError(f"{spec.key}={spec.value:.6g} is smaller than one optimizer step, which reads "
                              f"data.batch_size x trainer.accumulate_grad_batches x the objective's block length "
                              f"(about data.seq_len) = {batch} x {accum} x ~{seq_len} tokens; allowed: about "
                              f">= {batch * accum * seq_len:,}")
    if spec.kind == "flops":
        family = backbone_family(cfg.backbone, kind)
        if family is not None and family not in SUPPORTED_FAMILIES:
            raise no_formula_error(family)
    return spec


# ---- once the model exists -----------------------------------------------------------------------
@dataclass
class RunBudget:
    """A resolved budget and what one step costs.

    spec:             the budget honoured (kind, value, the config key it came from).
    plan:             its step limit (max_steps) or time limit (max_time_s).
    tokens_per_batch: corpus tokens of one micro-batch (batch_size x block_len).
    accumulate:       micro-batches per optimizer step.
    flops_per_batch:  analytic training FLOPs of one micro-batch (the run's batch 0); None without a formula.
    family:           the model's `model_type`.
    """

    spec: BudgetSpec
    plan: BudgetPlan
    tokens_per_batch: int
    accumulate: int
    flops_per_batch: Optional[float]
    family: str

    @property
    def tokens_per_step(self) -> int:
        return self.tokens_per_batch * self.accumulate

    @property
    def flops_per_step(self) -> Optional[float]:
        return None if self.flops_per_batch is None else self.flops_per_batch * self.accumulate

    @property
    def flops_per_token(self) -> Optional[float]:
        """Training FLOPs per corpus token read."""
        return None if self.flops_per_batch is None else self.flops_per_batch / self.tokens_per_batch

    @property
    def max_steps(self) -> Optional[int]:
        return self.plan.max_steps

    @property
    def max_time_s(self) -> Optional[float]:
        return self.plan.max_time_s

    @property
    def total_batches(self) -> int:
        """Length of the training stream: every micro-batch of the budget (a time budget: unbounded)."""
        return TIME_BUDGET_BATCHES if self.max_steps is None else self.max_steps * self.accumulate

    def to_record(self) -> dict[str, Any]:
        """results.json's `budget` entry."""
        value = int(self.spec.value) if self.spec.kind == "steps" else self.spec.value
        return {"kind": self.spec.kind, "value": value, "key": self.spec.key, "description": self.plan.description,
                "max_steps": self.max_steps, "max_time_s": self.max_time_s, "tokens_per_step": self.tokens_per_step}


def plan_budget(cfg: DictConfig, model: PreTrainedModel, objective: Objective, view: BlockView) -> RunBudget:
    """Count the analytic training FLOPs of the run's first training batch (shapes only, no forward) and
    resolve the budget with the exact block length; raises BudgetError for a budget below one step and
    FlopFormulaError for a FLOP budget on a family without a formula."""
    spec = effective_budget(cfg.trainer, cfg.budget)
    batch_size, accumulate = int(cfg.data.batch_size), int(cfg.trainer.accumulate_grad_batches)
    tokens_per_batch = batch_size * view.block_len
    family = str(getattr(model.config, "model_type", type(model).__name__))
    name = getattr(objective, "name", None)
    flops_per_batch = None
    if family in SUPPORTED_FAMILIES:
        first = TrainBatches(view, objective, batch_size, int(cfg.seed), 1)[0]  # the run's batch 0
        flops_per_batch = training_flops(model, first, name, tokens=tokens_per_batch).training
    elif spec.kind != "flops":
        log.warning("backbone family %r has no FLOP formula (families with one: %s): results.json reports "
                    "no flops and no mfu for this run", family, ", ".join(SUPPORTED_FAMILIES))
    flops_per_step = None if flops_per_batch is None else flops_per_batch * accumulate
    plan = resolve_budget(spec, tokens_per_batch * accumulate, flops_per_step, family=family)
    budget = RunBudget(spec, plan, tokens_per_batch, accumulate, flops_per_batch, family)
    log.info("budget (%s): %s", spec.key, plan.description)
    return budget


# ---- during training -----------------------------------------------------------------------------
class TrainClock(pl.Callback):
    """Seconds spent training: inside `fit`, validation excluded, carried across resumes in checkpoints.

    It is the denominator of MFU and, with `max_time_s`, the time budget: training stops after the
    optimizer step that reaches the limit (so a run ends within one step of it), and `lr_schedule()`
    gives the time-based learning-rate multiplier (`time_based_lr_factor`), which reaches 0 at the limit.
    The first step of a time budget with warmup runs at learning rate 0 (its duration, which warmup
    needs, is not known yet); it still primes AdamW's moment estimates.
    """

    def __init__(self, max_time_s: Optional[float] = None, warmup_fraction: float = 0.0,
                 schedule: str = "linear") -> None:
        self.max_time_s, self.warmup_fraction, self.schedule = max_time_s, float(warmup_fraction), schedule
        if max_time_s is not None:  # validate now, not at the first step
            time_based_lr_factor(0.0, max_time_s, self.warmup_fraction, schedule)
        self.banked_s = 0.0  # time of finished segments (earlier runs, before the last pause)
        self.last_step_s = 0.0
        self._start: Optional[float] = None  # perf_counter() when the running segment began; None: paused
        self._last_mark = 0.0  # perf_counter() at the end of the last optimizer step (pauses excluded)
        self._paused_at = 0.0
        self._val_paused = False
        self._seen_step = 0

    @property
    def train_s(self) -> float:
        """Training seconds so far."""
        running = time.perf_counter() - self._start if self._start is not None else 0.0
        return self.banked_s + running

    def _pause(self) -> None:
        if self._start is not None:
            self._paused_at = time.perf_counter()
            self.banked_s += self._paused_at - self._start
            self._start = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._last_mark = time.perf_counter()
        self._seen_step = int(trainer.global_step)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_paused = self._start is not None  # only fit's validation: trainer.validate() finds it stopped
        self._pause()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._val_paused:
            self._start, self._val_paused = time.perf_counter(), False
            self._last_mark += self._start - self._paused_at

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if int(trainer.global_step) == self._seen_step:
            return  # a micro-batch that accumulated: no optimizer step yet
        now = time.perf_counter()
        self.last_step_s, self._last_mark, self._seen_step = now - self._last_mark, now, int(trainer.global_step)
        if self.max_time_s is not None:
            done = trainer.strategy.reduce_boolean_decision(self.train_s >= self.max_time_s, all=False)
            trainer.should_stop = trainer.should_stop or done

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pause()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._pause()

    def lr_factor(self) -> float:
        """The time-based learning-rate multiplier for the coming step (1.0 without a time budget)."""
        if self.max_time_s is None:
            return 1.0
        step_s = time.perf_counter() - self._last_mark if self._start is not None else self.last_step_s
        return time_based_lr_factor(self.train_s, self.max_time_s, self.warmup_fraction, self.schedule, step_s=step_s)

    def lr_schedule(self) -> Optional[Callable[[int], float]]:
        """A LambdaLR multiplier driven by this clock, or None without a time budget (use the step schedule)."""
        return None if self.max_time_s is None else functools.partial(_clock_factor, self)

    def state_dict(self) -> dict[str, Any]:
        return {"train_s": self.train_s, "last_step_s": self.last_step_s}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.banked_s = float(state_dict.get("train_s", 0.0))
        self.last_step_s = float(state_dict.get("last_step_s", 0.0))


def _clock_factor(clock: TrainClock, step: int) -> float:
    """LambdaLR's multiplier from the clock (a partial of a module-level function: picklable for spawned
    processes, and LambdaLR checkpoints only its empty __dict__, never the clock)."""
    return clock.lr_factor()


# ---- after training ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PeakFlops:
    """Measured peak matmul FLOP/s of the run's devices: in its compute dtype and in fp32, so MFU of runs
    in different precisions can be compared (against the fp32 peak) as well as judged (against their own)."""

    compute: float
    fp32: float
    dtype: str  # the compute dtype, e.g. "bfloat16"


def measure_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32, devices: int = 1,
                       nodes: int = 1) -> PeakFlops:
    """Peak matmul FLOP/s of the run: `device`'s, in `dtype` (the precision's compute dtype) and in fp32,
    times the number of such devices (the FLOPs counted are the global batch's): `devices` data-parallel
    processes on GPUs; on CPUs the processes of a node share its cores, so only `nodes` multiply.
    Measured once per process and dtype: 2048^2 products for about 0.5 s on a CPU (1024^2 in 0.25 s
    read 45% low for AMX bf16), 8192^2 for 0.5 s on a GPU."""
    size, seconds = (8192, 0.5) if device.type == "cuda" else (2048, 0.5)
    copies = max(1, int(devices if device.type == "cuda" else nodes))
    fp32 = peak_matmul_flops(device, torch.float32, seconds=seconds, size=size) * copies
    compute = fp32 if dtype == torch.float32 else peak_matmul_flops(device, dtype, seconds=seconds, size=size) * copies
    return PeakFlops(compute=compute, fp32=fp32, dtype=str(dtype).removeprefix("torch."))


def compute_summary(budget: RunBudget, steps: int, tokens_seen: int, train_s: float,
                    peak: Optional[PeakFlops]) -> dict[str, Any]:
    """results.json's compute fields: FLOPs spent (steps x FLOPs per step), throughput and MFU against
    the compute-dtype peak (`mfu`) and the fp32 peak (`mfu_fp32`)."""
    train_s = round(train_s, 3)  # as recorded, so the rates below are exactly those of the record
    flops = None if budget.flops_per_step is None else float(steps) * budget.flops_per_step
    achieved = flops / train_s if flops is not None and train_s > 0 else None
    return {
        "train_time_s": train_s,
        "tokens_per_s": tokens_seen / train_s if train_s > 0 else None,
        "flops": flops,
        "flops_per_step": budget.flops_per_step,
        "flops_per_token": budget.flops_per_token,
        "flops_per_s": achieved,
        "peak_flops": peak.compute if peak else None,
        "peak_flops_dtype": peak.dtype if peak else None,
        "peak_flops_fp32": peak.fp32 if peak else None,
        "mfu": mfu(achieved, peak.compute) if achieved is not None and peak else None,
        "mfu_fp32": mfu(achieved, peak.fp32) if achieved is not None and peak else None,
    }


def log_summary(summary: dict[str, Any], steps: int) -> None:
    """One INFO line: steps, training time, tokens/s, FLOP/s and MFU."""
    rate = summary["tokens_per_s"] or 0.0
    if summary["mfu"] is None:
        log.info("trained %d steps in %.1f s: %.0f tokens/s (no FLOP formula: no MFU)", steps,
                 summary["train_time_s"], rate)
        return
    log.info("trained %d steps in %.1f s: %.0f tokens/s, %.3g FLOP/s, MFU %.2f%% of the measured %s peak %.3g FLOP/s "
             "(%.2f%% of the fp32 peak %.3g)", steps, summary["train_time_s"], rate, summary["flops_per_s"],
             100 * summary["mfu"], summary["peak_flops_dtype"], summary["peak_flops"], 100 * summary["mfu_fp32"],
             summary["peak_flops_fp32"])
