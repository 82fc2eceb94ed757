"""Build the Lightning Trainer from the `trainer` config group.

Kept apart from the module so the recipe in `lmbench.pretrain` can check the device and reliability
settings before any model exists, and so tests can build trainers cheaply. The step or time limit comes
from the budget (lmbench.train.budget).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar
from pytorch_lightning.loggers import CSVLogger, Logger

from lmbench.config import TrainerConfig
from lmbench.train.checkpointing import AtomicCheckpointIO
from lmbench.train.nonfinite import NonFiniteGuard, check_policy
from lmbench.train.precision import PrecisionChoice, build_precision_plugin
from lmbench.train.resume import CHECKPOINT_DIR

GPU_ONLY_STRATEGIES = ("fsdp", "deepspeed")


def check_devices(cfg: TrainerConfig) -> None:
    """A GPU accelerator or a GPU-only strategy (Lightning's FSDP, DeepSpeed) on a machine without CUDA fails
    here, at start, instead of in Lightning after the tokenizer, data and model are built."""
    if torch.cuda.is_available():
        return
    strategy = str(cfg.strategy or "auto")
    if any(strategy.startswith(name) for name in GPU_ONLY_STRATEGIES):
        raise ValueError(f"trainer.strategy={strategy!r} runs on CUDA GPUs only (Lightning's rule) and this machine "
                         "has none; on CPUs use trainer=ddp (data parallel, gloo) or trainer.strategy=auto")
    if str(cfg.accelerator) in ("gpu", "cuda"):
        raise ValueError(f"trainer.accelerator={cfg.accelerator!r} but no CUDA GPU is available here; allowed values "
                         "on this machine: auto, cpu")


def check_reliability_settings(cfg: TrainerConfig) -> None:
    """Validate the checkpoint and non-finite keys before any work (messages name key and allowed values)."""
    check_policy(cfg.nonfinite, cfg.max_consecutive_skips)
    if cfg.checkpoint_every_n_steps is not None and cfg.checkpoint_every_n_steps < 1:
        raise ValueError(f"trainer.checkpoint_every_n_steps={cfg.checkpoint_every_n_steps}; allowed values: "
                         ">= 1, or null for every val_check_interval steps")
    if cfg.keep_checkpoints < 1:
        raise ValueError(f"trainer.keep_checkpoints={cfg.keep_checkpoints}; allowed values: >= 1 "
                         "(set trainer.checkpoint=false for none)")


def checkpoint_interval(cfg: TrainerConfig) -> int:
    """Optimizer steps between checkpoints: `checkpoint_every_n_steps`, else `val_check_interval`."""
    return int(cfg.checkpoint_every_n_steps or max(1, cfg.val_check_interval))


def build_trainer(cfg: TrainerConfig, output_dir: Path, total_steps: Optional[int], precision: PrecisionChoice, *,
                  identity: Optional[dict[str, Any]] = None, callbacks: Sequence[pl.Callback] = (),
                  loggers: Optional[Sequence[Logger]] = None) -> pl.Trainer:
    """A Trainer that runs exactly `total_steps` optimizer steps (None: no step limit, for a time budget
    whose TrainClock callback stops it), logs CSV, and checkpoints under
    output_dir/checkpoints every `checkpoint_interval(cfg)` steps: `step-NNNNNNN.ckpt` (the newest
    `keep_checkpoints` kept), each written atomically with a manifest carrying `identity`, and
    `last.ckpt` linking to the newest. The non-finite policy guard is always installed. `precision`
    (lmbench.train.precision.resolve_precision) runs through lmbench's autocast plugin, so gradient
    clipping works with fused AdamW. `loggers` default: a CSVLogger writing output_dir/logs/metrics.csv."""
    check_reliability_settings(cfg)
    all_callbacks: list[pl.Callback] = [NonFiniteGuard(cfg.nonfinite, cfg.max_consecutive_skips,
                                                       check_every=cfg.log_every_n_steps), *callbacks]
    if cfg.checkpoint:
        all_callbacks.append(ModelCheckpoint(
            dirpath=output_dir / CHECKPOINT_DIR, filename="step-{step:07d}", auto_insert_metric_name=False,
            monitor="step", mode="max", save_top_k=cfg.keep_checkpoints, save_last="link",
            every_n_train_steps=checkpoint_interval(cfg), enable_version_counter=False))
    if cfg.progress_bar:
        all_callbacks.append(RichProgressBar(leave=True))
    precision_plugin = build_precision_plugin(precision, str(cfg.strategy or "auto"))
    val_every = min(cfg.val_check_interval, total_steps or cfg.val_check_interval) * cfg.accumulate_grad_batches
    return pl.Trainer(
        max_steps=-1 if total_steps is None else total_steps,
        max_epochs=-1,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=None if precision_plugin else precision.name,
        gradient_clip_val=cfg.gradient_clip_val,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        val_check_interval=val_every,
        check_val_every_n_epoch=None,
        limit_val_batches=cfg.limit_val_batches,
        num_sanity_val_steps=0,
        log_every_n_steps=cfg.log_every_n_steps,
        logger=list(loggers) if loggers else CSVLogger(save_dir=str(output_dir), name="", version="logs"),
        callbacks=all_callbacks,
        plugins=[AtomicCheckpointIO(identity), *([precision_plugin] if precision_plugin else [])],
        enable_checkpointing=cfg.checkpoint,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        deterministic=False,
        default_root_dir=str(output_dir),
    )
