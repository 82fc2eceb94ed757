"""What a NaN or infinite training loss does: fail the run clearly, or skip the step.

Lightning trains on through NaN (the weights become NaN and every later number is meaningless) and a
checkpoint written afterwards poisons every resume. `NonFiniteGuard` implements `trainer.nonfinite`:

- `fail` (default): the first non-finite loss is recorded on the device (no host sync per step) and
  checked every `log_every_n_steps` steps, before every checkpoint (a checkpoint is never written from
  a poisoned state, so the last one on disk is good) and at the end of training. The run stops with
  `NonFiniteLossError` naming the step.
- `skip`: a step whose loss or gradients are non-finite changes nothing: gradients are dropped before
  the optimizer sees them, so parameters and optimizer state (moments, step count) stay as they were;
  the batch is consumed and the LR schedule advances. Deciding needs one host sync per step.
  `max_consecutive_skips` skipped steps in a row stop the run; `skipped_steps` goes to results.json.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor

log = logging.getLogger(__name__)

POLICIES = ("fail", "skip")


class NonFiniteLossError(FloatingPointError):
    """Training produced a non-finite loss (or gradients) and the policy says stop; names the step."""


def check_policy(policy: str, max_consecutive_skips: int) -> None:
    """Validate `trainer.nonfinite` and `trainer.max_consecutive_skips` (raises naming the key)."""
    if policy not in POLICIES:
        raise ValueError(f"trainer.nonfinite={policy!r}; allowed values: {', '.join(POLICIES)}")
    if int(max_consecutive_skips) < 1:
        raise ValueError(f"trainer.max_consecutive_skips={max_consecutive_skips}; allowed values: >= 1")


class NonFiniteGuard(pl.Callback):
    """Apply the non-finite policy; its counters are checkpointed so a resume continues them."""

    def __init__(self, policy: str = "fail", max_consecutive_skips: int = 10, check_every: int = 10) -> None:
        check_policy(policy, max_consecutive_skips)
        self.policy, self.max_consecutive_skips = policy, int(max_consecutive_skips)
        self.check_every = max(1, int(check_every))
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self.skipped_at: list[int] = []  # the first 100 skipped steps, for the log and results.json
        self._step_bad: Optional[Tensor] = None  # () bool on the device: this step saw a non-finite loss
        self._first_bad: Optional[Tensor] = None  # () int64 on the device: first bad step, -1 if none

    # ---- detection (no host sync) ----------------------------------------------------------------
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        bad = ~torch.isfinite(loss.detach())  # ()
        self._step_bad = bad if self._step_bad is None else self._step_bad | bad

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        bad, self._step_bad = self._step_bad, None
        if bad is None:
            return
        step = int(trainer.global_step)
        if self.policy == "skip":
            self._skip_if_bad(bad, step, optimizer)
            return
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=bad.device)
        self._first_bad = torch.where(bad & (self._first_bad < 0), step, self._first_bad)  # ()

    # ---- skip ----------------------------------------------------------------------------------
    def _skip_if_bad(self, bad: Tensor, step: int, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            norms = torch.stack([n.float() for n in torch._foreach_norm(grads)])  # (P,)
            bad = bad | ~torch.isfinite(norms).all().to(bad.device)
        if not bool(bad):  # the one host sync per step of this policy
            self.consecutive_skips = 0
            return
        optimizer.zero_grad(set_to_none=True)  # no gradient: AdamW leaves weights, moments and step alone
        self.skipped_steps += 1
        self.consecutive_skips += 1
        if len(self.skipped_at) < 100:
            self.skipped_at.append(step)
        log.warning("non-finite loss or gradients at step %d: step skipped (trainer.nonfinite=skip; %d in a "
                    "row, %d in all)", step, self.consecutive_skips, self.skipped_steps)
        if self.consecutive_skips >= self.max_consecutive_skips:
            raise NonFiniteLossError(
                f"non-finite loss or gradients in {self.consecutive_skips} consecutive steps (steps "
                f"{step - self.consecutive_skips + 1}..{step}), trainer.max_consecutive_skips="
                f"{self.max_consecutive_skips}: training has diverged; lower trainer.optim.lr or raise "
                "trainer.optim.warmup_fraction")

    # ---- fail ----------------------------------------------------------------------------------
    def raise_if_failed(self, when: str) -> None:
        """Host sync: raise `NonFiniteLossError` if any step so far had a non-finite loss."""
        if self.policy != "fail" or self._first_bad is None:
            return
        step = int(self._first_bad)
        if step >= 0:
            raise NonFiniteLossError(
                f"non-finite training loss at step {step} (0-based optimizer step), detected {when}; "
                "trainer.nonfinite=fail stops the run, and every checkpoint on disk predates that step. Lower "
                "trainer.optim.lr, raise trainer.optim.warmup_fraction, or set trainer.nonfinite=skip")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step % self.check_every == 0:
            self.raise_if_failed(f"after {trainer.global_step} steps")

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self.raise_if_failed(f"before writing the checkpoint of step {trainer.global_step}, which was not written")
        params = [p.detach() for p in pl_module.parameters()]
        if params and not bool(torch.isfinite(torch.stack([n.float() for n in torch._foreach_norm(params)])).all()):
            raise NonFiniteLossError(f"parameters are non-finite at step {trainer.global_step}; the checkpoint "
                                     "was not written. Lower trainer.optim.lr or set trainer.nonfinite=skip")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.raise_if_failed("at the end of training")

    # ---- checkpointed counters -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps, "consecutive_skips": self.consecutive_skips,
                "skipped_at": list(self.skipped_at)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))
        self.consecutive_skips = int(state_dict.get("consecutive_skips", 0))
        self.skipped_at = list(state_dict.get("skipped_at", []))
