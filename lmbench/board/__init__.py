"""Leaderboards: from a directory of runs to ranked objectives with CIs and paired tests.

`build_leaderboard(dir)` reads every job under `dir` (lmbench.board.collect), groups completed runs by
objective and backbone kind, summarises each metric over pretraining seeds with a bootstrap CI, and
compares every objective with a baseline over matched seeds (lmbench.board.stats). Rendering lives in
lmbench.board.render (terminal, CSV, Markdown) and lmbench.board.plots (PNGs).

Metrics: every score in `results["scores"]` plus `val_loss`; with no scores anywhere (pretraining-only
runs) `val_loss` and `train_loss`. Losses of different objectives measure different tasks (an MLM loss
is not a CLM loss), so the scores are what the ranking should be read on when they exist.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmbench.board.collect import FailedRun, Run, collect_runs
from lmbench.board.stats import Comparison, Estimate, apply_holm, bootstrap_ci, compare, lower_is_better

__all__ = ["Leaderboard", "Row", "Run", "FailedRun", "BoardError", "build_leaderboard", "default_metrics"]

FAIRNESS_KEYS = (("data", "fingerprint"), ("tokenizer_hash",), ("backbone", "size"), ("data", "seq_len"),
                 ("precision",))


class BoardError(ValueError):
    """A leaderboard request the runs cannot satisfy (unknown metric or baseline); the message lists choices."""


@dataclass
class Row:
    """One objective on one backbone kind: per-metric estimates over its pretraining seeds."""

    objective: str
    backbone_kind: str
    runs: list[Run]
    estimates: dict[str, Estimate] = field(default_factory=dict)
    values: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> seed -> value
    comparisons: dict[str, Comparison] = field(default_factory=dict)  # metric -> vs baseline

    @property
    def key(self) -> str:
        return f"{self.objective}@{self.backbone_kind}"

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs if r.seed is not None)

    def compute(self, kind: str) -> float | None:
        """Mean `flops` or `tokens_seen` over the row's runs (None if any run lacks it)."""
        vals = [r.flops if kind == "flops" else r.tokens_seen for r in self.runs]
        return None if any(v is None for v in vals) else float(np.mean(vals))


@dataclass
class Leaderboard:
    """Ranked rows (best first on the first metric), failed runs, and everything needed to render them."""

    root: Path
    metrics: list[str]
    baseline: str | None
    rows: list[Row]
    failed: list[FailedRun]
    warnings: list[str]
    compute_kind: str  # "flops" when every run records it, else "tokens_seen"

    @property
    def comparisons(self) -> list[Comparison]:
        return [row.comparisons[m] for row in self.rows for m in self.metrics if m in row.comparisons]

    @property
    def runs(self) -> list[Run]:
        return [run for row in self.rows for run in row.runs]


HEADLINE_METRICS = ("acc", "acc_calibrated", "f1")  # last part of a score key shown by default


def default_metrics(runs: list[Run]) -> list[str]:
    """The headline score of every task/mode (accuracy, calibrated accuracy, span or macro F1 as
    reported; not spreads, dev-selection numbers, precision or recall: `--metric` selects those), then
    val_loss; val_loss and train_loss when no run has scores."""
    names = {name for run in runs for name in run.scores}
    headline = sorted(n for n in names if n.rsplit("/", 1)[-1] in HEADLINE_METRICS)
    scores = headline or sorted(names)
    present = {name for run in runs for name in run.metric_names()}
    pretrain = ["val_loss"] if scores else ["val_loss", "train_loss"]
    return scores + [m for m in pretrain if m in present]


def _select_metrics(runs: list[Run], patterns: list[str] | None) -> list[str]:
    available = sorted({name for run in runs for name in run.metric_names()})
    if not patterns:
        return default_metrics(runs)
    chosen: list[str] = []
    for pattern in patterns:
        hits = [m for m in available if fnmatch.fnmatchcase(m, pattern)]
        if not hits:
            raise BoardError(f"--metric {pattern!r} matches no metric of these runs; available: {', '.join(available)}")
        chosen += [m for m in hits if m not in chosen]
    return chosen


def _check_mfu_comparable(runs: list[Run], metrics: list[str]) -> None:
    """`mfu` is each run's FLOP/s over its own compute dtype's peak (bf16 peaks are several times fp32's on
    AMX CPUs and GPUs), so it ranks only runs of one precision; `mfu_fp32` shares one yardstick."""
    if "mfu" not in metrics:
        return
    by_dtype: dict[str, list[str]] = {}
    for run in runs:
        by_dtype.setdefault(str(run.record.get("peak_flops_dtype") or run.record.get("precision")), []).append(run.key)
    if len(by_dtype) > 1:
        detail = "; ".join(f"{d}: {', '.join(sorted(set(k)))}" for d, k in sorted(by_dtype.items()))
        raise BoardError(f"--metric mfu: these runs measured MFU against peaks of different dtypes ({detail}), "
                         "so their MFU values are not comparable; rank on mfu_fp32 (every run against its "
                         "device's fp32 peak) or compare runs of one precision")


def _pick_baseline(rows: list[Row], baseline: str | None) -> str | None:
    keys = sorted(row.key for row in rows)
    if not keys:
        return None
    if baseline is None:
        return keys[0]
    hits = [k for k in keys if k == baseline or k.split("@")[0] == baseline]
    if len(hits) != 1:
        why = "matches several rows" if hits else "matches no row"
        raise BoardError(f"--baseline {baseline!r} {why}; choose one of: {', '.join(keys)} "
                         "(an objective name is enough when it runs on one backbone kind)")
    return hits[0]


def _fairness_warnings(runs: list[Run]) -> list[str]:
    out = []
    for path in FAIRNESS_KEYS:
        seen: dict[str, list[str]] = {}
        for run in runs:
            value = run.record
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            seen.setdefault(str(value), []).append(run.key)
        if len(seen) > 1:
            detail = "; ".join(f"{v[:12]}: {', '.join(sorted(set(k)))}" for v, k in seen.items())
            out.append(f"runs differ in {'.'.join(path)} ({detail}): the comparison is not like for like")
    return out


def _rank_key(row: Row, metric: str | None) -> tuple[int, float, str]:
    est = row.estimates.get(metric) if metric else None
    if est is None:
        return 1, 0.0, row.key
    return 0, est.mean if lower_is_better(metric) else -est.mean, row.key


def build_leaderboard(run_dir: Path | str, *, baseline: str | None = None, metrics: list[str] | None = None,
                      seed: int = 0) -> Leaderboard:
    """Read every run under `run_dir` and summarise it.

    baseline: objective name or `objective@kind` every other row is compared with (default: the first
    row alphabetically). metrics: names or fnmatch patterns (default: `default_metrics`). seed: fixes
    bootstrap and permutation resampling. Raises BoardError for an unknown metric or baseline.
    """
    root = Path(run_dir)
    runs, failed, warnings = collect_runs(root)
    chosen = _select_metrics(runs, metrics) if runs else []
    _check_mfu_comparable(runs, chosen)
    groups: dict[str, Row] = {}
    for run in runs:
        groups.setdefault(run.key, Row(run.objective, run.backbone_kind, [])).runs.append(run)
    rows = list(groups.values())
    for row in rows:
        row.runs.sort(key=lambda r: (r.seed is None, r.seed or 0, str(r.path)))
        for metric in chosen:
            pairs = [(r.seed, r.metric(metric)) for r in row.runs]
            vals = [v for _, v in pairs if v is not None]
            if vals:
                row.estimates[metric] = bootstrap_ci(vals, seed=seed)
                row.values[metric] = {s: v for s, v in pairs if v is not None and s is not None}
    base_key = _pick_baseline(rows, baseline)
    if base_key is not None:
        base = groups[base_key]
        comps = [compare(row.key, base_key, m, row.values[m], base.values[m], seed=seed)
                 for row in rows if row.key != base_key for m in chosen if m in row.values and m in base.values]
        for c in apply_holm(comps):
            groups[c.objective].comparisons[c.metric] = c
    rows.sort(key=lambda r: _rank_key(r, chosen[0] if chosen else None))
    compute_kind = "flops" if runs and all(r.flops is not None for r in runs) else "tokens_seen"
    return Leaderboard(root, chosen, base_key, rows, failed, warnings + _fairness_warnings(runs), compute_kind)
