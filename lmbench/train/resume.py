"""Exact resumption: which checkpoint to continue from, whether it fits this run, and the state
Lightning does not save.

Lightning restores weights, optimizer, LR schedule, loop counters and (through the datamodule) the
data position, but not the global random generators (torch, CUDA, numpy, Python `random`), and it
loads any checkpoint it is given. `RunState` saves and restores those generators, keeps validation from
consuming them (so a run that validates at different points draws the same training randomness), and
carries the resume history into results.json. `plan_resume` turns `resume=` into a verified checkpoint
before any work; `check_compatible` refuses a checkpoint whose model or run config differs from this
run's, naming every key that differs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from transformers import PreTrainedModel

from lmbench.train.checkpointing import (CheckpointError, CheckpointInfo, remove_stale_temporaries,
                                         scan_checkpoints, verify_checkpoint)

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
# Config keys that may differ between a checkpoint's run and the resuming run: they change how the run
# is executed or reported, never a number in results.json. Prefixes match whole dotted components.
RESUME_TOLERATED = (
    "resume", "output_dir", "hydra", "logger", "data.num_workers", "data.cache_dir", "trainer.progress_bar",
    "trainer.log_every_n_steps", "trainer.checkpoint", "trainer.checkpoint_every_n_steps",
    "trainer.keep_checkpoints", "trainer.nonfinite", "trainer.max_consecutive_skips", "save_model",
    "audit_batches", "min_free_disk_mb",
)
# transformers config keys that describe the file, not the model.
MODEL_CONFIG_IGNORED = ("transformers_version", "_name_or_path", "dtype", "torch_dtype", "_commit_hash",
                        "_attn_implementation_autoset", "output_hidden_states", "output_attentions", "use_cache")


# ---- global random state -----------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """Every global generator's state, as tensors and plain values (loadable with weights_only=True)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Set every global generator to `state` (from `capture_rng`)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))


class RunState(pl.Callback):
    """Checkpointed run state beyond Lightning's: global RNG, resume history, last training loss.

    The RNG captured when a checkpoint is written (end of step k) is restored just before the first
    training step after a resume, so step k+1 draws exactly what it drew in the uninterrupted run.
    Validation runs between a save and a restore, and at places that differ between runs, so it must
    not move the training generators: they are put back after every validation loop of `fit`.
    """

    def __init__(self, resumed_from: Optional[CheckpointInfo] = None) -> None:
        self.resumes: list[dict[str, Any]] = []
        self.train_loss: Optional[float] = None
        self._new_resume = ([{"from_checkpoint": str(resumed_from.path), "step": resumed_from.step}]
                            if resumed_from is not None else [])
        self._pending_rng: Optional[dict[str, Any]] = None
        self._trainer: Optional[pl.Trainer] = None
        self.resumes = list(self._new_resume)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer
        if stage == "fit":
            self._isolate_validation(trainer)

    @staticmethod
    def _isolate_validation(trainer: pl.Trainer) -> None:
        """Run fit's validation loop between a capture and a restore of every generator. The whole loop is
        wrapped, not its hooks: creating the DataLoader iterator already draws from torch's generator,
        before `on_validation_start` fires."""
        val_loop = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "val_loop", None)
        if val_loop is None or getattr(val_loop.run, "_lmbench_isolated", False):
            if val_loop is None:
                log.warning("this Lightning version has no fit_loop.epoch_loop.val_loop: validation may shift "
                            "the training RNG, and a resume may then differ from the uninterrupted run")
            return
        run = val_loop.run

        def isolated_run() -> Any:
            state = capture_rng()
            try:
                return run()
            finally:
                restore_rng(state)

        isolated_run._lmbench_isolated = True  # type: ignore[attr-defined]
        val_loop.run = isolated_run

    def state_dict(self) -> dict[str, Any]:
        loss = self._trainer.callback_metrics.get("pretrain/loss") if self._trainer is not None else None
        return {"rng": capture_rng(), "resumes": list(self.resumes),
                "train_loss": float(loss) if loss is not None else self.train_loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_rng = state_dict["rng"]
        self.resumes = list(state_dict.get("resumes", [])) + self._new_resume
        self.train_loss = state_dict.get("train_loss")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._pending_rng is not None:
            restore_rng(self._pending_rng)
            self._pending_rng = None


def keep_metrics_history(log_dir: Path, step: int) -> Optional[Path]:
    """Before a resume from `step`: move log_dir/metrics.csv to metrics.until-step-NNNNNNN.csv, keeping only
    rows up to `step` (Lightning's CSV logger deletes metrics.csv; the steps after the checkpoint rerun)."""
    source = Path(log_dir) / "metrics.csv"
    if not source.is_file():
        return None
    with open(source, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames or [], [r for r in reader if _row_step(r) <= step]
    target = source.with_name(f"metrics.until-step-{step:07d}.csv")
    with open(target, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    source.unlink()
    return target


def _row_step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "inf")
    except ValueError:
        return float("inf")


# ---- choosing and checking the checkpoint -----------------------------------------------------
@dataclass
class ResumePlan:
    """The checkpoint a run continues from (None: start from scratch) and the files rejected on the way."""

    checkpoint: Optional[CheckpointInfo]
    rejected: list[dict[str, str]] = field(default_factory=list)


def plan_resume(resume: Optional[str], output_dir: Path, checkpointing: bool = True) -> ResumePlan:
    """Turn `resume=` into a verified checkpoint before any work.

    None: start from scratch; refused when checkpointing would write into a checkpoints/ folder that
    already holds checkpoints (another run's or this one's). `auto`: the newest valid checkpoint in
    output_dir/checkpoints, or scratch when there is none; invalid newer ones are reported. A path: that
    checkpoint file, or the newest valid checkpoint of a run directory or checkpoints folder.
    """
    ckpt_dir = Path(output_dir) / CHECKPOINT_DIR
    if resume is None or str(resume).strip() == "":
        existing = sorted(ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []
        if checkpointing and existing:
            raise CheckpointError(
                f"output directory {str(output_dir)!r} already holds checkpoints ({existing[0].name}, ...) from an "
                "earlier run; continue it with resume=auto, or choose a new output_dir / hydra.run.dir")
        return ResumePlan(None)
    if str(resume) == "auto":
        remove_stale_temporaries(ckpt_dir)
        scan = scan_checkpoints(ckpt_dir)
        if scan.newest is None:
            log.info("resume=auto: no valid checkpoint in %s; starting from scratch", ckpt_dir)
        else:
            log.info("resume=auto: continuing from %s (step %s)", scan.newest.path, scan.newest.step)
        return ResumePlan(scan.newest, scan.rejected)
    target = Path(str(resume)).expanduser()
    if target.is_dir():
        folder = target / CHECKPOINT_DIR if (target / CHECKPOINT_DIR).is_dir() else target
        scan = scan_checkpoints(folder)
        if scan.newest is None:
            reasons = "; ".join(r["error"] for r in scan.rejected) or "it holds no *.ckpt files"
            raise CheckpointError(f"resume={resume}: no valid checkpoint in {folder}: {reasons}")
        return ResumePlan(scan.newest, scan.rejected)
    if not target.exists():
        raise CheckpointError(f"resume={resume}: checkpoint {target} does not exist; allowed values: auto, a "
                              "checkpoint file, or a run directory")
    info = verify_checkpoint(target, require_manifest=False)
    if info.manifest is None:
        log.warning("resume=%s has no manifest: its integrity and config cannot be checked", target)
    return ResumePlan(info)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def _normalise(tree: Any) -> Any:
    """JSON round trip, so tuples and lists (and other JSON-equal values) compare equal."""
    return json.loads(json.dumps(tree, sort_keys=True, default=str))


def tree_hash(tree: Any) -> str:
    return hashlib.sha256(json.dumps(_normalise(tree), sort_keys=True).encode()).hexdigest()


def diff_keys(saved: dict[str, Any], current: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """`key: old -> new` for every dotted key whose value differs (`<absent>` for a missing side)."""
    old, new = _flatten(_normalise(saved)), _flatten(_normalise(current))

    def ignored(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in ignore)

    lines = []
    for key in sorted(set(old) | set(new)):
        if ignored(key) or old.get(key, "<absent>") == new.get(key, "<absent>"):
            continue
        lines.append(f"{key}: {old.get(key, '<absent>')} -> {new.get(key, '<absent>')}")
    return lines


def model_config_dict(model: PreTrainedModel) -> dict[str, Any]:
    """The backbone's transformers config as plain data, without keys that describe the file."""
    config = model.config.to_dict()
    return _normalise({k: v for k, v in config.items() if k not in MODEL_CONFIG_IGNORED})


def run_identity(run_config: dict[str, Any], model_config: dict[str, Any]) -> dict[str, Any]:
    """What every manifest records about the run that wrote it."""
    return {"config": _normalise(run_config), "config_hash": tree_hash(run_config),
            "model_config": model_config, "model_config_hash": tree_hash(model_config)}


def check_compatible(info: CheckpointInfo, run_config: dict[str, Any], model_config: dict[str, Any]) -> None:
    """Raise `CheckpointError` naming every model-config and run-config key that differs between the
    checkpoint's run and this one (keys in `RESUME_TOLERATED` may differ). No manifest: nothing to check."""
    manifest = info.manifest
    if manifest is None:
        return
    problems = []
    if manifest.get("model_config_hash") != tree_hash(model_config):
        changed = diff_keys(manifest.get("model_config", {}), model_config)
        problems.append("model config: " + "; ".join(changed or ["(hash differs)"]))
    changed = diff_keys(manifest.get("config", {}), run_config, RESUME_TOLERATED)
    if changed:
        problems.append("run config: " + "; ".join(changed))
    if problems:
        raise CheckpointError(
            f"checkpoint {info.path} was written by a different setup, so resuming would not continue that run: "
            + " | ".join(problems) + ". Resume with the checkpoint's settings, or start a new run in another "
            "output_dir.")
