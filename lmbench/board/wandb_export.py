"""Push a leaderboard to Weights & Biases: one run per leaderboard, a `wandb.Table` per view.

`lmbench-board DIR --wandb` (and the multirun callback with `wandb=true`) call `push_leaderboard`. The
run joins the sweep's W&B group (the sweep dir name, as the job runs of `logger=wandb` do) with
job_type `leaderboard`, and holds:

- `leaderboard`: the long table of leaderboard.csv (one row per objective x metric, then failed runs,
  told apart by `status`), so W&B shows failures next to the numbers, as every other view does;
- `ranking`: one row per objective@kind with each metric's mean (the table to sort and plot in the UI);
- the summary: best row per metric, counts of completed and failed runs; the PNG plots as images.

The mode follows lmbench.loggers' rule (never online unless asked): `mode` argument, else WANDB_MODE,
else disabled under CI, else offline, with files under DIR/wandb/ (upload later with `wandb sync`).
Online mode without a W&B login fails before wandb is started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from lmbench.board import Leaderboard
from lmbench.board.render import CSV_FIELDS, _csv_rows
from lmbench.board.stats import lower_is_better
from lmbench.loggers import LoggerConfig, check_logger_config

JOB_TYPE = "leaderboard"


def ranking_rows(lb: Leaderboard) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of the ranking table: rank, objective, backbone kind, seeds, then per metric its
    mean and 95% interval (None where a row lacks the metric or has a single seed)."""
    columns = ["rank", "objective", "backbone_kind", "seeds"]
    for metric in lb.metrics:
        columns += [metric, f"{metric} ci_low", f"{metric} ci_high"]
    rows = []
    for rank, row in enumerate(lb.rows, 1):
        cells: list[Any] = [rank, row.objective, row.backbone_kind, ",".join(map(str, row.seeds))]
        for metric in lb.metrics:
            est = row.estimates.get(metric)
            cells += [est.mean, est.low, est.high] if est else [None, None, None]
        rows.append(cells)
    return columns, rows


def summary(lb: Leaderboard) -> dict[str, Any]:
    """Run summary: counts, baseline, and for every metric the best row and its mean."""
    out: dict[str, Any] = {"completed_runs": len(lb.runs), "failed_runs": len(lb.failed),
                           "objectives": len(lb.rows), "baseline": lb.baseline or ""}
    for metric in lb.metrics:
        rows = [(row.key, row.estimates[metric].mean) for row in lb.rows if metric in row.estimates]
        if rows:
            key, mean = (min if lower_is_better(metric) else max)(rows, key=lambda kv: kv[1])
            out[f"best/{metric}"] = key
            out[f"best/{metric}/mean"] = mean
    return out


def _csv_cell(field: str, value: str) -> Any:
    """leaderboard.csv cells are text; numeric columns go to W&B as numbers (None when empty)."""
    if field in ("mean", "ci_low", "ci_high", "diff_mean", "diff_ci_low", "diff_ci_high", "p_value", "p_holm"):
        return float(value) if value else None
    if field in ("n", "n_matched", "n_unmatched"):
        return int(value) if value else None
    return value


def push_leaderboard(lb: Leaderboard, run_dir: Path, *, mode: Optional[str] = None, project: str = "lmbench",
                     entity: Optional[str] = None, plots: Optional[list[Path]] = None) -> str:
    """Log `lb` to a new W&B run (job_type `leaderboard`, group = run_dir's name, files under
    run_dir/wandb/) and finish it; returns where it went (the offline run folder or the run's URL), or
    why nothing was logged when the mode resolves to disabled. `plots`: PNGs to attach (default: the
    leaderboard_*.png files in run_dir). Raises LoggerConfigError for a bad mode or online without login."""
    cfg = LoggerConfig(name="wandb", mode=mode, project=project, entity=entity)
    resolved = check_logger_config(cfg)
    if resolved == "disabled":
        return "disabled (WANDB_MODE=disabled or CI is set): nothing logged"
    import wandb

    run_dir = Path(run_dir)
    run = wandb.init(project=project, entity=entity, group=run_dir.resolve().name, job_type=JOB_TYPE,
                     name=f"leaderboard-{run_dir.resolve().name}", dir=str(run_dir), mode=resolved,
                     config={"root": str(lb.root), "metrics": list(lb.metrics), "baseline": lb.baseline,
                             "compute_kind": lb.compute_kind},
                     settings=wandb.Settings(console="off", init_timeout=60.0), reinit="create_new")
    try:
        long_rows = [[_csv_cell(f, row[f]) for f in CSV_FIELDS] for row in _csv_rows(lb)]
        columns, ranking = ranking_rows(lb)
        images = plots if plots is not None else sorted(run_dir.glob("leaderboard_*.png"))
        run.log({"leaderboard": wandb.Table(columns=list(CSV_FIELDS), data=long_rows),
                 "ranking": wandb.Table(columns=columns, data=ranking),
                 **{f"plots/{p.stem}": wandb.Image(str(p)) for p in images}})
        run.summary.update(summary(lb))
        where = run.url if resolved == "online" else str(Path(run.dir).parent)
    finally:
        run.finish()
    return where
