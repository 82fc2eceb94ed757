"""Build the Lightning Trainer from the `trainer` config group, and resolve the step budget.

Kept apart from the module so the recipe in `lmbench.pretrain` can read the budget (steps from a
token budget) and precision choice before any model exists, and so tests can build trainers cheaply.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar
from pytorch_lightning.loggers import CSVLogger

from lmbench.config import TrainerConfig

PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true")


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX-512 BF16 / AMX); emulated bf16 is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(cfg: TrainerConfig) -> str:
    """`auto` -> bf16-mixed where the hardware runs bf16 natively (CUDA with bf16, or a bf16 CPU), else fp32."""
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"trainer.precision={cfg.precision!r}; allowed values: {', '.join(PRECISIONS)}")
    if cfg.precision != "auto":
        return cfg.precision
    use_cuda = cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if use_cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"


def resolve_total_steps(cfg: TrainerConfig, tokens_per_step: int) -> int:
    """Optimizer steps to run: `max_tokens / tokens_per_step` (rounded up) when a token budget is set."""
    if cfg.max_tokens is not None:
        if cfg.max_tokens < tokens_per_step:
            raise ValueError(f"trainer.max_tokens={cfg.max_tokens} is smaller than one optimizer step "
                             f"({tokens_per_step} tokens); allowed values: >= {tokens_per_step}")
        return math.ceil(cfg.max_tokens / tokens_per_step)
    if cfg.max_steps < 1:
        raise ValueError(f"trainer.max_steps={cfg.max_steps}; allowed values: >= 1")
    return cfg.max_steps


def build_trainer(cfg: TrainerConfig, output_dir: Path, total_steps: int, precision: str) -> pl.Trainer:
    """A Trainer that runs exactly `total_steps` optimizer steps, logs CSV, checkpoints under output_dir."""
    callbacks: list[pl.Callback] = []
    if cfg.checkpoint:
        callbacks.append(ModelCheckpoint(dirpath=output_dir / "checkpoints", save_last=True, save_top_k=0,
                                         every_n_train_steps=max(1, cfg.val_check_interval)))
    if cfg.progress_bar:
        callbacks.append(RichProgressBar(leave=True))
    val_every = min(cfg.val_check_interval, total_steps) * cfg.accumulate_grad_batches
    return pl.Trainer(
        max_steps=total_steps,
        max_epochs=-1,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=precision,
        gradient_clip_val=cfg.gradient_clip_val,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        val_check_interval=val_every,
        check_val_every_n_epoch=None,
        limit_val_batches=cfg.limit_val_batches,
        num_sanity_val_steps=0,
        log_every_n_steps=cfg.log_every_n_steps,
        logger=CSVLogger(save_dir=str(output_dir), name="", version="logs"),
        callbacks=callbacks,
        enable_checkpointing=cfg.checkpoint,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        deterministic=False,
        default_root_dir=str(output_dir),
    )
