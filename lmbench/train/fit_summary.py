"""What `trainer.fit` did, carried back to the process that writes results.json.

With a spawning strategy (`ddp_spawn`, Lightning's multiprocessing launcher) training runs in child
processes: the main process's module, callbacks and `trainer.global_step` never move. Lightning sends
one thing back from rank 0: `trainer.callback_metrics`. So at the end of fit, on every strategy, this
callback packs the run's counters (steps, tokens, training seconds, skipped steps, the last validation)
into one uint8 tensor there, and `read_fit_summary` unpacks it in the caller — a single code path for
one process and many.

It also makes fit end with a validation at its final step (`trainer.should_stop` at `max_steps`, which
Lightning answers with a validation run), so the final model's loss is measured inside fit, by the
same processes and logger as the training rows; a separate `trainer.validate` under spawn would start
new processes whose fresh CSV logger deletes metrics.csv.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import pytorch_lightning as pl
import torch

from lmbench.train.budget import TrainClock
from lmbench.train.nonfinite import NonFiniteGuard
from lmbench.train.resume import RunState

KEY = "lmbench/fit_summary"


@dataclass
class FitSummary:
    """Counters of a finished (or stopped) fit, as rank 0 saw them."""

    steps: int = 0
    tokens_seen: int = 0
    supervised_tokens: int = 0
    train_s: float = 0.0
    skipped_steps: int = 0
    skipped_at: list[int] = field(default_factory=list)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    train_loss: Optional[float] = None
    val_loss: Optional[float] = None
    val_step: Optional[int] = None  # global step of the last validation inside fit (None: none ran)


class FitSummaryCallback(pl.Callback):
    """Validate at the final step, and publish a `FitSummary` through `trainer.callback_metrics`.

    The counters come from the module (`tokens_seen`, `supervised_tokens`) and from the `TrainClock`,
    `NonFiniteGuard` and `RunState` callbacks of the same trainer.
    """

    def __init__(self) -> None:
        self.val_step: Optional[int] = None
        self.val_loss: Optional[float] = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True  # Lightning validates when a stop is requested: the final model's loss

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:  # after the module logged val/loss
            loss = trainer.callback_metrics.get("val/loss")
            self.val_step = int(trainer.global_step)
            self.val_loss = None if loss is None else float(loss)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        summary = FitSummary(steps=int(trainer.global_step), val_step=self.val_step, val_loss=self.val_loss)
        summary.tokens_seen = int(getattr(pl_module, "tokens_seen", 0))
        supervised = getattr(pl_module, "supervised_tokens", 0)
        summary.supervised_tokens = int(supervised.item() if torch.is_tensor(supervised) else supervised)
        loss = trainer.callback_metrics.get("pretrain/loss")
        summary.train_loss = None if loss is None else float(loss)
        for callback in trainer.callbacks:
            if isinstance(callback, TrainClock):
                summary.train_s = float(callback.train_s)
            elif isinstance(callback, NonFiniteGuard):
                summary.skipped_steps, summary.skipped_at = int(callback.skipped_steps), list(callback.skipped_at)
            elif isinstance(callback, RunState):
                summary.resumes = list(callback.resumes)
                if summary.train_loss is None:
                    summary.train_loss = callback.train_loss
        payload = json.dumps(asdict(summary)).encode("utf-8")
        trainer.callback_metrics[KEY] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)  # (n_bytes,)


def read_fit_summary(trainer: pl.Trainer) -> Optional[FitSummary]:
    """Take the summary out of `trainer.callback_metrics` (None if fit stopped before `on_fit_end`)."""
    packed = trainer.callback_metrics.pop(KEY, None)
    if packed is None:
        return None
    return FitSummary(**json.loads(bytes(packed.tolist()).decode("utf-8")))
