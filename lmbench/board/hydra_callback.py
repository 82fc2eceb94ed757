"""The leaderboard at the end of every multirun: a Hydra callback, so no sweep ends without its ranking.

`conf/config.yaml` registers `LeaderboardCallback` under `hydra.callbacks.leaderboard`. When a sweep
ends, `on_multirun_end` reads every job under the sweep dir (failed ones included), prints the rich
table and writes leaderboard.csv, leaderboard.md and the PNG plots there, exactly as
`lmbench-board <sweep dir>` would. The lmbench sweeper calls it too before it raises for failed jobs,
so a sweep with failures still ranks the jobs that finished and lists the ones that did not.

It also says whether the comparison separates anything (`separation_note`): with one seed there are no
intervals, and with overlapping 95% intervals on every metric the honest answer is "the budget or the
number of seeds is too small to rank these objectives", not a ranking read off noise.

Hydra instantiates callbacks at the start of every run, single runs too, so the heavy imports (scipy,
matplotlib) happen only inside `on_multirun_end`. A failure to build the leaderboard is logged and
never turns a finished sweep into a failed one.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from lmbench.board import Leaderboard

log = logging.getLogger(__name__)
GRID_SWEEPERS = (".LmbenchSweeper", ".BasicSweeper")  # sweeps whose jobs form a grid worth ranking


def _disjoint(a: Any, b: Any) -> bool:
    """True when two Estimates have intervals and those intervals do not overlap."""
    if None in (a.low, a.high, b.low, b.high):
        return False
    return a.high < b.low or b.high < a.low


def separated_metrics(lb: Leaderboard) -> dict[str, list[str]]:
    """metric -> rows (objective@kind) whose 95% interval is disjoint from every other row's interval
    on that metric; metrics where no row stands apart are left out."""
    out: dict[str, list[str]] = {}
    for metric in lb.metrics:
        rows = [(row.key, row.estimates[metric]) for row in lb.rows if metric in row.estimates]
        apart = [key for key, est in rows
                 if len(rows) > 1 and all(_disjoint(est, other) for k, other in rows if k != key)]
        if apart:
            out[metric] = apart
    return out


def separation_note(lb: Leaderboard) -> str:
    """One honest sentence on whether the leaderboard ranks anything beyond noise."""
    if len(lb.rows) < 2:
        return "Fewer than two objectives completed: nothing to separate."
    seeds = min((len(row.seeds) for row in lb.rows), default=0)
    if seeds < 2:
        return ("Single seed: the table has no intervals, so it cannot say whether any difference is more than "
                "seed noise; rerun with seed=0,1,2 (or more) to get 95% intervals and paired tests.")
    apart = separated_metrics(lb)
    scores = {m: rows for m, rows in apart.items() if m not in ("val_loss", "train_loss")}
    if not scores:
        losses = f" (only the objectives' own losses differ: {', '.join(apart)}, not comparable across objectives)" \
            if apart else ""
        return (f"No objective's 95% interval is disjoint from the others on any downstream score with {seeds} "
                f"seeds{losses}: this budget is too small to separate the objectives. Raise budget.value, "
                "the corpus size or the number of seeds.")
    parts = [f"{m}: {', '.join(rows)}" for m, rows in scores.items()]
    return ("Separated (95% interval disjoint from every other objective's) on " + "; ".join(parts) + ". "
            "Other differences are within seed noise.")


class LeaderboardCallback(Callback):
    """Build, print and write the leaderboard of the sweep dir when a multirun ends.

    enabled: false turns it off (`hydra.callbacks.leaderboard.enabled=false`). plots: write the PNGs.
    baseline, metrics: as `lmbench-board --baseline/--metric`. wandb: also push the leaderboard to W&B
    (`lmbench-board --wandb`; offline unless WANDB_MODE / logger settings say otherwise).
    """

    def __init__(self, enabled: bool = True, plots: bool = True, baseline: Optional[str] = None,
                 metrics: Optional[list[str]] = None, wandb: bool = False) -> None:
        self.enabled, self.plots, self.baseline, self.wandb = enabled, plots, baseline, wandb
        self.metrics = list(metrics) if metrics else None
        self.done = False
        self.leaderboard: Leaderboard | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A preset that declares a sweep (`hydra.sweeper.params`) run without -m runs one job only: say so."""
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
        swept = {k: v for k, v in (params or {}).items() if v is not None}
        if swept:
            choice = OmegaConf.select(config, "hydra.runtime.choices.experiment", default=None)
            what = f"experiment={choice}" if choice else "hydra.sweeper.params"
            log.warning("%s defines a sweep (%s) that only runs with -m; this single run trains one job. "
                        "For the whole comparison: lmbench -m %s", what,
                        " ".join(f"{k}={v}" for k, v in swept.items()), what)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or self.done:
            return
        self.done = True  # the sweeper calls this before raising; never twice for one sweep
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default="") or "")
        if sweeper and not sweeper.endswith(GRID_SWEEPERS):
            log.info("%s is a search, not a grid of objectives: no leaderboard (`lmbench-board %s` builds one)",
                     sweeper.rsplit(".", 1)[-1], sweep_dir)
            return
        try:
            self.leaderboard = build_and_report(sweep_dir, baseline=self.baseline, metrics=self.metrics,
                                                plots=self.plots, wandb=self.wandb)
        except Exception as exc:  # noqa: BLE001 - the sweep's jobs are done; a board failure must not hide them
            log.error("could not build the leaderboard of %s: %s: %s\n%s(rebuild it with `lmbench-board %s`)",
                      sweep_dir, type(exc).__name__, exc, traceback.format_exc(limit=4), sweep_dir)


def matching_patterns(run_dir: Path, patterns: Optional[list[str]]) -> Optional[list[str]]:
    """The metric patterns that match some completed run's metric (a preset lists patterns for every task
    it may run; a sweep with task=[] or without zero-shot has fewer); None when none match."""
    if not patterns:
        return None
    import fnmatch

    from lmbench.board.collect import collect_runs

    runs, _, _ = collect_runs(run_dir)
    names = {name for run in runs for name in run.metric_names()}
    kept = [p for p in patterns if any(fnmatch.fnmatchcase(n, p) for n in names)]
    return kept or None


def build_and_report(run_dir: Path, *, baseline: Optional[str] = None, metrics: Optional[list[str]] = None,
                     plots: bool = True, wandb: bool = False) -> Optional[Leaderboard]:
    """Build the leaderboard of `run_dir`, print it with its separation note, write its files; None when
    the directory holds no job at all."""
    from rich.console import Console

    from lmbench.board import build_leaderboard
    from lmbench.board.render import print_leaderboard
    from lmbench.cli.board import write_outputs

    from lmbench.board import BoardError

    console = Console(width=max(Console().width, 120))
    try:
        lb = build_leaderboard(run_dir, baseline=baseline, metrics=matching_patterns(run_dir, metrics))
    except BoardError as exc:  # e.g. a preset's metric patterns that no run reported (every job failed)
        if metrics is None and baseline is None:
            raise
        console.print(f"[yellow]warning:[/yellow] {exc}; showing the default metrics and baseline instead")
        lb = build_leaderboard(run_dir)
    if not lb.rows and not lb.failed:
        console.print(f"[yellow]no jobs under {run_dir}: no leaderboard[/yellow]")
        return None
    print_leaderboard(lb, console)
    console.print(separation_note(lb))
    written = write_outputs(lb, run_dir, plots=plots and bool(lb.rows))
    console.print("wrote " + ", ".join(str(p) for p in written))
    if wandb:
        from lmbench.board.wandb_export import push_leaderboard

        console.print(f"W&B: {push_leaderboard(lb, run_dir)}")
    return lb
