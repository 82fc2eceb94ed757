"""Read a directory of lmbench runs into typed records, keeping every failure visible.

A leaderboard is only as honest as its inputs: a job that crashed, is still running, or died before it
could write `results.json` must show up next to the numbers, never vanish from them. So a "job" is any
directory holding a `results.json` or a Hydra `.hydra/` folder, and each one ends up either as a
completed `Run` or as a `FailedRun` with its status and error.

Downstream scores live in `results["scores"]` as `{"<task>/<mode>/<metric>": value}`. A value may be a
list, one entry per fine-tuning seed: those are averaged here, per pretraining seed, so every later
statistic runs over pretraining seeds only (the unit the objectives were trained with).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lmbench.results import RESULTS_FILE

# top-level results.json numbers usable as metrics (`mfu` only among runs of one precision: see build_leaderboard)
PRETRAIN_METRICS = ("val_loss", "train_loss", "tokens_per_s", "mfu", "mfu_fp32")
METRICS_CSV = Path("logs") / "metrics.csv"


@dataclass(frozen=True)
class Run:
    """One completed run: identified by objective name, backbone kind and pretraining seed."""

    path: Path
    objective: str
    backbone_kind: str
    seed: int | None
    record: dict[str, Any]
    scores: dict[str, float] = field(default_factory=dict)  # fine-tuning seeds already averaged
    finetune_counts: dict[str, int] = field(default_factory=dict)  # how many fine-tuning seeds each score averages

    @property
    def key(self) -> str:
        """The leaderboard row this run belongs to: `objective@backbone_kind`."""
        return f"{self.objective}@{self.backbone_kind}"

    def metric(self, name: str) -> float | None:
        """A score, or `val_loss`/`train_loss` from the record; None when absent or not finite."""
        value = self.scores.get(name) if name not in PRETRAIN_METRICS else self.record.get(name)
        return _finite(value)

    def metric_names(self) -> list[str]:
        return [m for m in PRETRAIN_METRICS if self.metric(m) is not None] + sorted(self.scores)

    @property
    def tokens_seen(self) -> float | None:
        return _finite(self.record.get("tokens_seen"))

    @property
    def flops(self) -> float | None:
        """Training FLOPs: a number under `flops`, or `flops.training` / `flops.total` when it is a dict."""
        raw = self.record.get("flops")
        if isinstance(raw, dict):
            raw = raw.get("training", raw.get("total"))
        return _finite(raw)


@dataclass(frozen=True)
class FailedRun:
    """A job that produced no usable result. status: failed | running | missing | unreadable."""

    path: Path
    status: str
    error: str
    objective: str | None = None
    backbone_kind: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Curve:
    """Validation loss over training; x is tokens seen, or optimizer steps when tokens were never logged."""

    x: np.ndarray  # (P,)
    val_loss: np.ndarray  # (P,)
    x_kind: str  # "tokens" | "step"


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _parse_scores(raw: Any, path: Path, warnings: list[str]) -> tuple[dict[str, float], dict[str, int]]:
    """`scores` -> (metric -> mean over fine-tuning seeds, metric -> number of fine-tuning seeds)."""
    if raw is None:
        return {}, {}
    if not isinstance(raw, dict):
        warnings.append(f"{path}: 'scores' must be a dict of metric -> number or list, got {type(raw).__name__}; ignored")
        return {}, {}
    scores, counts = {}, {}
    for name, value in raw.items():
        values = value if isinstance(value, list) else [value]
        finite = [v for v in (_finite(x) for x in values) if v is not None]
        if len(finite) < len(values):
            warnings.append(f"{path}: scores[{name!r}] has {len(values) - len(finite)} missing/non-numeric "
                            f"value(s) of {len(values)}; averaged the rest")
        if finite:
            scores[str(name)], counts[str(name)] = float(np.mean(finite)), len(finite)
    return scores, counts


def _hydra_identity(job: Path) -> tuple[str | None, str | None, int | None]:
    """Best-effort (objective, backbone kind, seed) from .hydra/config.yaml, for jobs without results."""
    try:
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None, None, None
    objective = (cfg.get("objective") or {}).get("name") if isinstance(cfg.get("objective"), dict) else None
    kind = (cfg.get("backbone") or {}).get("kind") if isinstance(cfg.get("backbone"), dict) else None
    seed = cfg.get("seed") if isinstance(cfg.get("seed"), int) else None
    return objective, kind, seed


def _read_job(job: Path, warnings: list[str]) -> Run | FailedRun:
    results = job / RESULTS_FILE
    if not results.is_file():
        return FailedRun(job, "missing", f"no {RESULTS_FILE} (the job died before writing one, or never started)",
                         *_hydra_identity(job))
    try:
        record = json.loads(results.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError(f"top level is {type(record).__name__}, expected an object")
    except (OSError, ValueError) as exc:
        return FailedRun(job, "unreadable", f"{results}: {exc}", *_hydra_identity(job))
    objective = (record.get("objective") or {}).get("name")
    kind = (record.get("backbone") or {}).get("kind")
    seed = record.get("seed") if isinstance(record.get("seed"), int) else None
    status = str(record.get("status"))
    if status != "completed":
        err = record.get("error") or {}
        error = f"{err.get('type', 'Error')}: {err.get('message', '')}" if err else \
            "no error recorded (still running, or killed before it could record one)"
        return FailedRun(job, status, error, objective, kind, seed)
    if not objective or not kind:
        return FailedRun(job, "unreadable", f"{results}: completed but 'objective.name' or 'backbone.kind' is empty",
                         objective, kind, seed)
    if seed is None:
        warnings.append(f"{job}: no integer 'seed'; the run counts in means but in no paired test")
    scores, counts = _parse_scores(record.get("scores"), results, warnings)
    return Run(job, str(objective), str(kind), seed, record, scores, counts)


def collect_runs(root: Path) -> tuple[list[Run], list[FailedRun], list[str]]:
    """Every job under `root` -> (completed runs, failed runs, warnings).

    A job is a directory with a `results.json` or a `.hydra/` folder. When the same objective, backbone
    kind and seed completed more than once, the newest (by `finished_at`) is kept and a warning names both.
    """
    jobs = {p.parent for p in root.rglob(RESULTS_FILE) if p.is_file()}
    jobs |= {p.parent for p in root.rglob(".hydra") if p.is_dir()}
    warnings: list[str] = []
    kept: dict[tuple[str, str, int | None | Path], Run] = {}
    failed: list[FailedRun] = []
    for job in sorted(jobs):
        item = _read_job(job, warnings)
        if isinstance(item, FailedRun):
            failed.append(item)
            continue
        ident = (item.objective, item.backbone_kind, item.seed if item.seed is not None else item.path)
        old = kept.get(ident)
        if old is not None:
            newer, older = sorted([old, item], key=lambda r: str(r.record.get("finished_at") or ""), reverse=True)
            warnings.append(f"{item.key} seed {item.seed} completed twice: using {newer.path}, ignoring {older.path}")
            item = newer
        kept[ident] = item
    return list(kept.values()), failed, warnings


def read_val_curve(run: Run) -> Curve | None:
    """Validation loss against tokens seen, from the run's `logs/metrics.csv` (Lightning CSVLogger).

    Validation rows carry `val/loss` and `step` but an empty `pretrain/tokens_seen` (CSVLogger writes
    each logging call as its own row, NaNs as empty fields), so tokens are mapped from the step by a
    linear fit through the training rows that did log them (a fixed number of tokens per batch), capped
    at the run's final `tokens_seen`. Returns None when the file or the `val/loss` column is missing.
    """
    path = run.path / METRICS_CSV
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return None
    if not rows or "val/loss" not in rows[0]:
        return None

    def num(row: dict[str, str], key: str) -> float:
        try:
            return float(row.get(key) or "nan")
        except ValueError:
            return math.nan

    steps = np.array([num(r, "step") for r in rows])  # (R,)
    val = np.array([num(r, "val/loss") for r in rows])  # (R,)
    tokens = np.array([num(r, "pretrain/tokens_seen") for r in rows])  # (R,)
    has_val = np.isfinite(val) & np.isfinite(steps)
    if not has_val.any():
        return None
    known = np.isfinite(tokens) & np.isfinite(steps)
    if len(np.unique(steps[known])) >= 2:
        slope, intercept = np.polyfit(steps[known], tokens[known], 1)
        x = slope * steps[has_val] + intercept  # (P,)
        cap = run.tokens_seen if run.tokens_seen is not None else float(np.nanmax(tokens))
        x, kind = np.clip(x, 0.0, cap), "tokens"
    else:
        x, kind = steps[has_val], "step"
    y = val[has_val]
    _, last = np.unique(x[::-1], return_index=True)  # the last row logged at each x (end-of-fit repeats)
    keep = np.sort(len(x) - 1 - last)
    return Curve(x[keep], y[keep], kind)
