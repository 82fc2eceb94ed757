"""The pretraining recipe: compose -> check -> tokenize -> pack -> build -> train -> save -> record.

This is the driver `lmbench` runs for every job of a sweep. Every check a user could fail (objective
name, its config, backbone kind, data source, output directory and its free space, budget, the
checkpoint to resume from) happens before the corpus is read or a model is built, so a bad command
fails within seconds with a message naming the key. results.json says `running` from the start and
only a finished run says `completed`; `resume=auto` continues a killed run exactly.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytorch_lightning as pl
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lmbench.audit import audit_corruption, raise_if_failed
from lmbench.backbones import build_backbone, describe, parameter_count, resolve_kind
from lmbench.data.blocks import BlockView, build_token_stream
from lmbench.data.datamodule import PretrainDataModule, TrainBatches
from lmbench.data.sources import make_source
from lmbench.data.tokenizer import load_or_train_tokenizer
from lmbench.eval.runner import check_tasks, check_tasks_tokenizer, evaluate_into
from lmbench.loggers import build_loggers, check_logger_config, sweep_group
from lmbench.objectives.base import Batch, Blocks, Objective, ObjectiveConfig, TokenInfo
from lmbench.objectives.registry import ObjectiveRegistry, default_registry
from lmbench.results import config_hash, now_iso, run_config, write_results
from lmbench.train.budget import (TrainClock, check_budget_at_start, compute_summary, log_summary,
                                  measure_peak_flops, plan_budget)
from lmbench.train.checkpointing import AtomicCheckpointIO
from lmbench.train.fit_summary import FitSummary, FitSummaryCallback, read_fit_summary
from lmbench.train.module import PretrainModule
from lmbench.train.nonfinite import NonFiniteGuard
from lmbench.train.resume import (ResumePlan, RunState, check_compatible, keep_metrics_history, model_config_dict,
                                  plan_resume, run_identity)
from lmbench.backbones.attention import use_cpu_attention
from lmbench.train.precision import describe_hardware, resolve_precision
from lmbench.train.trainer import build_trainer, check_devices, check_reliability_settings


log = logging.getLogger(__name__)


class OutputDirError(OSError):
    """The output directory cannot be written; raised before any expensive work."""


def check_writable(output_dir: Path) -> None:
    """Create output_dir and prove a file can be written there (disk full / read-only fail here)."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".lmbench-write-probe-{os.getpid()}"  # per process: Slurm starts every rank here
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise OutputDirError(f"output directory {str(output_dir)!r} is not writable: {exc.strerror or exc}; "
                             "choose another with output_dir=... or hydra.run.dir=...") from exc


def check_free_space(output_dir: Path, need_bytes: int, what: str) -> None:
    """Raise `OutputDirError` when the file system of output_dir has less than `need_bytes` free."""
    free = shutil.disk_usage(output_dir).free
    if free < need_bytes:
        raise OutputDirError(f"output directory {str(output_dir)!r} has {free / 2**20:.0f} MiB free, but {what} "
                             f"needs {need_bytes / 2**20:.0f} MiB; free some space, choose another directory "
                             "with output_dir=... / hydra.run.dir=..., or lower min_free_disk_mb (0: no check)")


def checkpoint_bytes(module: PretrainModule) -> int:
    """Rough size of one checkpoint: every parameter three times (weights, AdamW's two moments), buffers once."""
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    return 3 * params + buffers


def save_model_atomically(model: Any, tokenizer: Any, model_dir: Path) -> None:
    """save_pretrained into a temporary folder beside `model_dir`, then swap it in: a crash or a full disk
    never leaves a half-written model where a finished one is expected."""
    for stale in [*model_dir.parent.glob(".tmp-model-*"), *model_dir.parent.glob(f".old-{model_dir.name}-*")]:
        shutil.rmtree(stale, ignore_errors=True)  # left by a run killed while saving
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-model-", dir=model_dir.parent))
    old = model_dir.with_name(f".old-{model_dir.name}-{time.time_ns()}")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if model_dir.exists():
            model_dir.rename(old)
        tmp.rename(model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not model_dir.exists():
            old.rename(model_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


@dataclass
class ResolvedObjective:
    """The objective class, its validated config and the backbone kind it will train."""

    cls: type[Objective]
    config: ObjectiveConfig
    kind: str
    package: str


def resolve_objective(cfg: DictConfig, registry: ObjectiveRegistry | None = None) -> ResolvedObjective:
    """Look the objective up, validate its config (dataclass __post_init__), and pick the backbone kind."""
    registry = registry or default_registry()
    name = cfg.objective.get("name") if isinstance(cfg.objective, DictConfig) else None
    if not name:
        raise ValueError(f"objective has no name; choose one with objective=<name>: {', '.join(registry.names())}")
    cls = registry.get(name)
    config = OmegaConf.to_object(cfg.objective)
    if not isinstance(config, cls.config_class):  # a plain dict node: build the dataclass to validate it
        config = cls.config_class(**OmegaConf.to_container(cfg.objective, resolve=True))
    kind = resolve_kind(cfg.backbone, name, tuple(cls.backbone_kinds))
    package = next((r.package for r in registry.records() if r.name == name), "?")
    return ResolvedObjective(cls, config, kind, package)


def run_pretraining(cfg: DictConfig, record: dict[str, Any],
                    callbacks: Sequence[pl.Callback] = ()) -> dict[str, Any]:
    """Run one pretraining job described by `cfg`, filling `record` (results.json) as it goes.

    `callbacks` are extra Lightning callbacks (tests and tools observe training through them).
    """
    started = time.perf_counter()
    output_dir = Path(cfg.output_dir)
    check_writable(output_dir)
    check_free_space(output_dir, int(cfg.min_free_disk_mb) * 2**20, "min_free_disk_mb")
    resolved_cfg = OmegaConf.to_container(cfg, resolve=True)
    record["config_hash"] = config_hash(resolved_cfg)
    record["seed"] = int(cfg.seed)

    resolved = resolve_objective(cfg)
    tasks = check_tasks(cfg)  # downstream task names, modes, files, labels, prompts: before any tokenizer work
    record["objective"] = {"name": resolved.cls.name, "config": resolved.config.to_dict()}
    check_logger_config(cfg.logger)  # W&B online without a login fails here, before any work
    source = make_source(cfg.data)
    check_budget_at_start(cfg, resolved.kind)  # a bad budget, or FLOPs without a formula, fails before any work
    check_reliability_settings(cfg.trainer)
    check_devices(cfg.trainer)  # GPU-only settings on a machine without CUDA
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)  # what will run, aliases resolved
    record.update(precision=precision.name, precision_detail=precision.to_record(),
                  hardware=describe_hardware(precision.device))
    plan = plan_resume(cfg.get("resume"), output_dir, checkpointing=bool(cfg.trainer.checkpoint))
    record["rejected_checkpoints"] = plan.rejected
    if rank_zero_only.rank == 0:  # one writer when Slurm or Lightning starts every rank with this recipe
        write_results(output_dir, record)  # status "running": a killed run never leaves an older result here
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)

    cache_dir = Path(cfg.data.cache_dir).expanduser()
    tokenizer, tok_hash = load_or_train_tokenizer(cfg.data.tokenizer, source, cache_dir)
    check_tasks_tokenizer(tasks, tokenizer)  # verbalizer words the tokenizer cannot spell: before training
    record["tokenizer_hash"] = tok_hash
    tokens = TokenInfo.from_tokenizer(tokenizer)
    objective = resolved.cls(resolved.config, tokens)
    objective.backbone_kind = resolved.kind

    stream = build_token_stream(source, tokenizer, tok_hash, cache_dir)
    train_part, val_part = stream.split(cfg.data.val_fraction)
    block_len = objective.block_length(cfg.data.seq_len)
    train_view, val_view = BlockView(train_part, block_len), BlockView(val_part, block_len)
    record["data"] = {
        "source": cfg.data.source, "fingerprint": source.fingerprint(), "n_tokens": int(stream.n_tokens),
        "train_tokens": int(train_part.n_tokens), "val_tokens": int(val_part.n_tokens),
        "seq_len": int(cfg.data.seq_len), "block_len": int(block_len), "batch_size": int(cfg.data.batch_size),
    }

    model = build_backbone(cfg.backbone, resolved.kind, tokens, max_positions=max(block_len, cfg.data.seq_len) + 2)
    use_cpu_attention(model, precision.device, precision.compute_dtype)  # float32 attention core on bf16 CPUs
    record["backbone"] = {**describe(model), "size": cfg.backbone.size, "pretrained": cfg.backbone.pretrained,
                          "parameters": parameter_count(model)}
    identity = run_identity(run_config(resolved_cfg), model_config_dict(model))
    if plan.checkpoint is not None:  # before any training: a checkpoint of another setup names what differs
        check_compatible(plan.checkpoint, identity["config"], identity["model_config"])
    budget = plan_budget(cfg, model, objective, train_view)  # FLOPs of batch 0; budget -> steps or time
    record["budget"] = budget.to_record()
    datamodule = PretrainDataModule(
        train_view, val_view, objective, batch_size=cfg.data.batch_size, seed=int(cfg.seed),
        total_batches=budget.total_batches,
        num_workers=cfg.data.num_workers, val_batches=cfg.trainer.limit_val_batches)
    if cfg.audit_batches > 0:  # contract check of real batches, then promised statistics (if any)
        audit = audit_corruption(objective, audit_pairs(datamodule.train_batches, cfg.audit_batches),
                                 resolved.package)
        record["audit"] = audit.to_dict()
        log.info("corruption audit (%d batches): %s", audit.batches,
                 ", ".join(f"{k}={v['measured']} (promised {v['promised']})" for k, v in audit.stats.items()))
        raise_if_failed(audit, resolved.package)
    clock = TrainClock(budget.max_time_s, cfg.trainer.optim.warmup_fraction, cfg.trainer.optim.schedule)
    module = PretrainModule(model, objective, cfg.trainer.optim, budget.max_steps or 1,
                            tokens_per_batch=budget.tokens_per_batch, flops_per_batch=budget.flops_per_batch,
                            lr_schedule=clock.lr_schedule())
    record["objective_parameters"] = objective_parameter_count(module)
    if cfg.min_free_disk_mb > 0:
        check_free_space(output_dir, run_disk_bytes(cfg, module), f"this run's checkpoints "
                         f"({cfg.trainer.keep_checkpoints} kept + 1 being written) and model")
    run_state = RunState(plan.checkpoint)
    loggers = build_loggers(cfg.logger, output_dir, run_name=output_dir.name, group=sweep_group(),
                            job_type=resolved.cls.name, config=resolved_cfg)
    trainer = build_trainer(cfg.trainer, output_dir, budget.max_steps, precision, identity=identity,
                            callbacks=[run_state, clock, FitSummaryCallback(), *callbacks], loggers=loggers)
    peaks = measure_peak_flops(trainer.strategy.root_device, precision.compute_dtype, trainer.world_size,
                               nodes=trainer.num_nodes)
    module.peak_flops = peaks.compute
    fit = fit_or_resume(trainer, module, datamodule, plan, run_state, record)
    record.update(
        steps=fit.steps, tokens_seen=fit.tokens_seen, supervised_tokens=fit.supervised_tokens,
        train_loss=fit.train_loss, val_loss=fit.val_loss, wall_time_s=round(time.perf_counter() - started, 3),
        **compute_summary(budget, fit.steps, fit.tokens_seen, fit.train_s, peaks),
    )
    log_summary(record, fit.steps)
    if cfg.save_model and trainer.is_global_zero:
        model_dir = output_dir / "model"
        save_model_atomically(model, tokenizer, model_dir)
        record["model_dir"] = str(model_dir)
    if tasks and trainer.is_global_zero:  # downstream scores into record["scores"] (lmbench.eval.runner)
        evaluate_into(record, model, tokenizer, tasks, seed=int(cfg.seed))
    record.update(status="completed", finished_at=now_iso())
    if trainer.is_global_zero:
        write_results(output_dir, record)
    return record


def fit_or_resume(trainer: pl.Trainer, module: PretrainModule, datamodule: PretrainDataModule, plan: ResumePlan,
        run_state: RunState, record: dict[str, Any]) -> FitSummary:
    """trainer.fit, from `plan`'s checkpoint if any, ending with the final model's validation loss.

    Records resumes and skips also when fit fails. The counters come from `FitSummary`, which rank 0
    sends back also under a spawning strategy (where this process's module never trains)."""
    checkpoint = plan.checkpoint
    if checkpoint is not None:
        if checkpoint.step is not None:
            keep_metrics_history(Path(trainer.default_root_dir) / "logs", checkpoint.step)
        checkpoint_io = trainer.strategy.checkpoint_io
        if isinstance(checkpoint_io, AtomicCheckpointIO) and checkpoint.manifest is not None:
            checkpoint_io.mark_verified(checkpoint.path)  # verified in plan_resume: no second hash
    guard = next(c for c in trainer.callbacks if isinstance(c, NonFiniteGuard))
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(checkpoint.path) if checkpoint else None)
    finally:
        record.update(resumes=list(run_state.resumes), skipped_steps=guard.skipped_steps,
                      skipped_at=list(guard.skipped_at), steps=int(trainer.global_step))
    fit = read_fit_summary(trainer)
    if fit is None:  # fit returned without on_fit_end (an interrupt Lightning handled): what this process saw
        next(c for c in trainer.callbacks if isinstance(c, FitSummaryCallback)).on_fit_end(trainer, module)
        fit = read_fit_summary(trainer)
        assert fit is not None
    record.update(resumes=fit.resumes, skipped_steps=fit.skipped_steps, skipped_at=fit.skipped_at, steps=fit.steps)
    if fit.val_step != fit.steps:  # no validation of the final model inside fit (resumed at the last step)
        loggers, trainer.loggers = trainer.loggers, []  # a spawned validate's fresh CSV logger would delete the log
        try:
            trainer.validate(module, datamodule=datamodule, verbose=False)
        finally:
            trainer.loggers = loggers
        fit.val_loss, fit.val_step = _metric(trainer, "val/loss"), fit.steps
    return fit


def run_disk_bytes(cfg: DictConfig, module: PretrainModule) -> int:
    """Disk the run will need at its peak: keep_checkpoints + 1 checkpoints and the saved model."""
    ckpt = checkpoint_bytes(module)
    need = (cfg.trainer.keep_checkpoints + 1) * ckpt if cfg.trainer.checkpoint else 0
    return need + (ckpt // 3 if cfg.save_model else 0)


def audit_pairs(batches: TrainBatches, n: int) -> Iterator[tuple[Blocks, Batch]]:
    """The first `n` batches of the run's training stream (also past a short run's last step: the same
    seed, data and objective), each with the raw blocks it was corrupted from."""
    stream = TrainBatches(batches.view, batches.objective, batches.batch_size, batches.seed, n)
    for k in range(n):
        yield stream.view.get(stream.block_indices(k)), stream[k]


def objective_parameter_count(module: PretrainModule) -> int:
    """Trainable parameters the objective adds beside the backbone (e.g. ELECTRA's generator),
    not counting tensors it shares with the backbone, so comparisons can report the full cost."""
    backbone = {p.data_ptr() for p in module.model.parameters()}
    own = {p.data_ptr(): p.numel() for p in module.objective_modules.parameters() if p.data_ptr() not in backbone}
    return int(sum(own.values()))


def _metric(trainer: pl.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)
