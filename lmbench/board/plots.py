"""Leaderboard plots as PNG files: learning curves, score against compute, per-metric bars with CIs.

The score-against-compute plot is the Pareto view: each objective's mean score (with its interval) at
the training FLOPs it spent (tokens seen when FLOPs were not recorded), with the Pareto front, the
objectives no other one beats on both score and compute, joined by a dashed line.

Figures are built with matplotlib's object API (`Figure` + the Agg canvas), never pyplot, so plotting
needs no display, touches no global backend state and works the same in CI and on a laptop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lmbench.board import Leaderboard, Row
from lmbench.board.collect import Curve, Run, read_val_curve
from lmbench.board.stats import Estimate, lower_is_better

CURVES_PNG = "leaderboard_val_loss.png"
COMPUTE_PNG = "leaderboard_score_vs_compute.png"
BARS_PNG = "leaderboard_bars.png"


def _colour(i: int) -> str:
    return f"C{i % 10}"


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return (n + cols - 1) // cols, cols


def _yerr(estimates: list[Estimate | None]) -> np.ndarray:
    """Asymmetric error bars (2, K); zero where there is no interval (n=1 or missing)."""
    err = np.zeros((2, len(estimates)))
    for k, e in enumerate(estimates):
        if e is not None and e.low is not None and e.high is not None:
            err[:, k] = [e.mean - e.low, e.high - e.mean]
    return err


def plot_val_curves(lb: Leaderboard, path: Path) -> Path | None:
    """Validation loss against tokens seen, one line per run, one colour per objective@kind.

    Returns None when no run has a usable logs/metrics.csv. If any run never logged tokens, every
    curve is drawn against optimizer steps instead, and the axis says so.
    """
    curves = [(i, row, run, read_val_curve(run)) for i, row in enumerate(lb.rows) for run in row.runs]
    curves = [(i, row, run, c) for i, row, run, c in curves if c is not None and c.x.size]
    if not curves:
        return None
    by_step = any(c.x_kind == "step" for *_, c in curves)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    labelled: set[str] = set()
    for i, row, run, c in curves:
        x = c.x if not by_step else _steps_of(run, c)
        label = None if row.key in labelled else f"{row.key} (n={len(row.runs)})"
        labelled.add(row.key)
        ax.plot(x, c.val_loss, color=_colour(i), marker="o", markersize=3, linewidth=1.2, alpha=0.8, label=label)
    ax.set_xlabel("optimizer step (tokens seen not logged)" if by_step else "tokens seen (pretraining)")
    ax.set_ylabel("validation loss (each objective's own loss)")
    ax.set_title("Pretraining validation loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _steps_of(run: Run, curve: Curve) -> np.ndarray:
    """Curves with x in tokens are re-expressed in steps when another run forces a step axis."""
    if curve.x_kind == "step":
        return curve.x
    steps, tokens = run.record.get("steps") or 0, run.tokens_seen or 0
    return curve.x * (steps / tokens) if steps and tokens else curve.x


def _score_metrics(lb: Leaderboard) -> list[str]:
    """Downstream metrics to plot; the pretraining losses when there are none."""
    scores = [m for m in lb.metrics if m not in ("val_loss", "train_loss")]
    return scores or list(lb.metrics)


def pareto_front(x: np.ndarray, y: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Indices of the points no other point dominates (at most the compute x and at least as good a score
    y, strictly better on one), ordered by x. x, y: (K,)."""
    good = y if higher_is_better else -y  # (K,) larger is better
    keep = []
    for k in range(len(x)):  # K objectives: a handful, never tokens
        dominated = (x <= x[k]) & (good >= good[k]) & ((x < x[k]) | (good > good[k]))  # (K,)
        if not dominated.any():
            keep.append(k)
    return np.array(sorted(keep, key=lambda k: (x[k], -good[k])), dtype=int)


def plot_score_vs_compute(lb: Leaderboard, path: Path) -> Path | None:
    """Each metric's mean (with CI) against compute (`flops` from results.json, else tokens seen), with
    the Pareto front of the objectives drawn as a dashed line."""
    metrics = _score_metrics(lb)
    if not metrics or not lb.rows:
        return None
    nrows, ncols = _grid(len(metrics))
    fig = Figure(figsize=(4.2 * ncols, 3.6 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    xlabel = "FLOPs (results.json 'flops')" if lb.compute_kind == "flops" else "tokens seen (no FLOPs recorded)"
    for ax, metric in zip(axes, metrics):
        points = []
        for i, row in enumerate(lb.rows):
            est, x = row.estimates.get(metric), row.compute(lb.compute_kind)
            if est is None or x is None:
                continue
            ax.errorbar([x], [est.mean], yerr=_yerr([est]), fmt="o", color=_colour(i), capsize=4, label=row.key)
            points.append((x, est.mean))
        if len(points) > 1:
            xs, ys = np.array(points).T  # (K,), (K,)
            front = pareto_front(xs, ys, not lower_is_better(metric))
            ax.plot(xs[front], ys[front], "--", color="0.4", linewidth=1, zorder=0,
                    label="Pareto front" if ax is axes[0] else None)
            if xs.max() > 10 * xs.min() > 0:
                ax.set_xscale("log")
        ax.set_title(f"{metric} ({'lower' if lower_is_better(metric) else 'higher'} is better)", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def plot_bars(lb: Leaderboard, path: Path) -> Path | None:
    """One panel per metric, one bar per objective@kind, 95% bootstrap CI as error bars."""
    metrics = list(lb.metrics)
    if not metrics or not lb.rows:
        return None
    nrows, ncols = _grid(len(metrics))
    fig = Figure(figsize=(4.2 * ncols, 3.6 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    rows: list[Row] = lb.rows
    pos = np.arange(len(rows))  # (K,)
    for ax, metric in zip(axes, metrics):
        ests = [row.estimates.get(metric) for row in rows]
        heights = np.array([e.mean if e is not None else np.nan for e in ests])  # (K,)
        ax.bar(pos, heights, yerr=_yerr(ests), capsize=4, color=[_colour(i) for i in range(len(rows))])
        ax.set_xticks(pos, [r.key for r in rows], rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{metric} ({'lower' if lower_is_better(metric) else 'higher'} is better)", fontsize=9)
        finite = heights[np.isfinite(heights)]
        if finite.size and lower_is_better(metric):  # losses sit far from 0: zoom on the differences
            lo = np.nanmin([e.low if e and e.low is not None else e.mean for e in ests if e is not None])
            hi = np.nanmax([e.high if e and e.high is not None else e.mean for e in ests if e is not None])
            pad = 0.1 * (hi - lo) or 0.05 * abs(hi) or 1.0
            ax.set_ylim(lo - pad, hi + pad)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    return _save(fig, path)


def write_plots(lb: Leaderboard, out_dir: Path) -> list[Path]:
    """All leaderboard PNGs into out_dir; returns the files written (plots with nothing to show are skipped)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    made = [plot_val_curves(lb, out_dir / CURVES_PNG), plot_score_vs_compute(lb, out_dir / COMPUTE_PNG),
            plot_bars(lb, out_dir / BARS_PNG)]
    return [p for p in made if p is not None]
