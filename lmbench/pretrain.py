"""The pretraining recipe: compose -> check -> tokenize -> pack -> build -> train -> save -> record.

This is the driver `lmbench` runs for every job of a sweep. Every check a user could fail (objective
name, its config, backbone kind, data source, output directory, budget) happens before the corpus is
read or a model is built, so a bad command fails within seconds with a message naming the key.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from lmbench.audit import audit_corruption, raise_if_failed
from lmbench.backbones import build_backbone, describe, parameter_count, resolve_kind
from lmbench.data.blocks import BlockView, build_token_stream
from lmbench.data.datamodule import PretrainDataModule, TrainBatches
from lmbench.data.sources import make_source
from lmbench.data.tokenizer import load_or_train_tokenizer
from lmbench.objectives.base import Batch, Blocks, Objective, ObjectiveConfig, TokenInfo
from lmbench.objectives.registry import ObjectiveRegistry, default_registry
from lmbench.results import config_hash, now_iso, write_results
from lmbench.train.module import PretrainModule
from lmbench.train.trainer import build_trainer, resolve_precision, resolve_total_steps


log = logging.getLogger(__name__)


class OutputDirError(OSError):
    """The output directory cannot be written; raised before any expensive work."""


def check_writable(output_dir: Path) -> None:
    """Create output_dir and prove a file can be written there (disk full / read-only fail here)."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".lmbench-write-probe"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise OutputDirError(f"output directory {str(output_dir)!r} is not writable: {exc.strerror or exc}; "
                             "choose another with output_dir=... or hydra.run.dir=...") from exc


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


def run_pretraining(cfg: DictConfig, record: dict[str, Any]) -> dict[str, Any]:
    """Run one pretraining job described by `cfg`, filling `record` (results.json) as it goes."""
    started = time.perf_counter()
    output_dir = Path(cfg.output_dir)
    check_writable(output_dir)
    resolved_cfg = OmegaConf.to_container(cfg, resolve=True)
    record["config_hash"] = config_hash(resolved_cfg)
    record["seed"] = int(cfg.seed)

    resolved = resolve_objective(cfg)
    record["objective"] = {"name": resolved.cls.name, "config": resolved.config.to_dict()}
    source = make_source(cfg.data)
    tokens_per_step_guess = cfg.data.batch_size * cfg.data.seq_len * cfg.trainer.accumulate_grad_batches
    resolve_total_steps(cfg.trainer, tokens_per_step_guess)  # fail on a bad budget before any work
    precision = resolve_precision(cfg.trainer)
    record["precision"] = precision
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)

    cache_dir = Path(cfg.data.cache_dir).expanduser()
    tokenizer, tok_hash = load_or_train_tokenizer(cfg.data.tokenizer, source, cache_dir)
    record["tokenizer_hash"] = tok_hash
    tokens = TokenInfo.from_tokenizer(tokenizer)
    objective = resolved.cls(resolved.config, tokens)
    objective.backbone_kind = resolved.kind

    stream = build_token_stream(source, tokenizer, tok_hash, cache_dir)
    train_part, val_part = stream.split(cfg.data.val_fraction)
    block_len = objective.block_length(cfg.data.seq_len)
    train_view, val_view = BlockView(train_part, block_len), BlockView(val_part, block_len)
    tokens_per_step = cfg.data.batch_size * block_len * cfg.trainer.accumulate_grad_batches
    total_steps = resolve_total_steps(cfg.trainer, tokens_per_step)
    record["data"] = {
        "source": cfg.data.source, "fingerprint": source.fingerprint(), "n_tokens": int(stream.n_tokens),
        "train_tokens": int(train_part.n_tokens), "val_tokens": int(val_part.n_tokens),
        "seq_len": int(cfg.data.seq_len), "block_len": int(block_len), "batch_size": int(cfg.data.batch_size),
    }

    model = build_backbone(cfg.backbone, resolved.kind, tokens, max_positions=max(block_len, cfg.data.seq_len) + 2)
    record["backbone"] = {**describe(model), "size": cfg.backbone.size, "pretrained": cfg.backbone.pretrained,
                          "parameters": parameter_count(model)}
    datamodule = PretrainDataModule(
        train_view, val_view, objective, batch_size=cfg.data.batch_size, seed=int(cfg.seed),
        total_batches=total_steps * cfg.trainer.accumulate_grad_batches,
        num_workers=cfg.data.num_workers, val_batches=cfg.trainer.limit_val_batches)
    if cfg.audit_batches > 0:  # contract check of real batches, then promised statistics (if any)
        audit = audit_corruption(objective, audit_pairs(datamodule.train_batches, cfg.audit_batches),
                                 resolved.package)
        record["audit"] = audit.to_dict()
        log.info("corruption audit (%d batches): %s", audit.batches,
                 ", ".join(f"{k}={v['measured']} (promised {v['promised']})" for k, v in audit.stats.items()))
        raise_if_failed(audit, resolved.package)
    module = PretrainModule(model, objective, cfg.trainer.optim, total_steps,
                            tokens_per_batch=cfg.data.batch_size * block_len)
    record["objective_parameters"] = objective_parameter_count(module)
    trainer = build_trainer(cfg.trainer, output_dir, total_steps, precision)
    trainer.fit(module, datamodule=datamodule)
    train_loss = _metric(trainer, "pretrain/loss")
    trainer.validate(module, datamodule=datamodule, verbose=False)  # the final model's validation loss

    record.update(
        steps=int(trainer.global_step),
        tokens_seen=int(module.tokens_seen),
        supervised_tokens=int(module.supervised_tokens),
        train_loss=train_loss,
        val_loss=module.last_val_loss,
        wall_time_s=round(time.perf_counter() - started, 3),
    )
    if cfg.save_model and trainer.is_global_zero:
        model_dir = output_dir / "model"
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        record["model_dir"] = str(model_dir)
    record.update(status="completed", finished_at=now_iso())
    if trainer.is_global_zero:
        write_results(output_dir, record)
    return record


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
