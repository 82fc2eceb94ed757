"""`lmbench-board DIR`: the leaderboard of every run under DIR, in the terminal and as files in DIR.

Writes DIR/leaderboard.csv, DIR/leaderboard.md and (unless --no-plots) DIR/leaderboard_*.png; with
--wandb also a W&B run holding the leaderboard as tables (offline unless asked: files under DIR/wandb/).
Exit codes: 0 a leaderboard was built (failed runs are listed, not fatal); 1 DIR holds no completed
run; 2 bad arguments (missing DIR, unknown --metric or --baseline).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from lmbench.board import BoardError, Leaderboard, build_leaderboard
from lmbench.board.render import CSV_NAME, MD_NAME, print_leaderboard, write_csv, write_markdown


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (kept separate so other front ends can add options, e.g. --wandb)."""
    parser = argparse.ArgumentParser(prog="lmbench-board", description=__doc__.splitlines()[0],
                                     epilog="Cells are mean [95%% bootstrap CI] over pretraining seeds; Δ rows are "
                                            "paired over matched seeds with Holm-adjusted p-values.")
    parser.add_argument("dir", type=Path, metavar="DIR", help="a run or sweep directory (searched recursively)")
    parser.add_argument("--baseline", metavar="NAME",
                        help="objective (or objective@kind) the others are compared with; default: first alphabetically")
    parser.add_argument("--metric", action="append", metavar="NAME",
                        help="metric to show, repeatable; fnmatch patterns allowed ('sentiment/*'). "
                             "Default: each task/mode's headline score (acc, acc_calibrated, f1) + val_loss, "
                             "or val_loss + train_loss without scores")
    parser.add_argument("--no-plots", action="store_true", help="do not write the PNG plots")
    parser.add_argument("--seed", type=int, default=0, help="seed for bootstrap/permutation resampling (default 0)")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the leaderboard to Weights & Biases as tables (job_type leaderboard, group = "
                             "DIR's name); offline by default, files under DIR/wandb/ (upload: wandb sync)")
    parser.add_argument("--wandb-mode", choices=("offline", "online", "disabled"),
                        help="W&B mode for --wandb (default: WANDB_MODE, else disabled under CI, else offline)")
    parser.add_argument("--wandb-project", default="lmbench", help="W&B project for --wandb (default lmbench)")
    return parser


def write_outputs(lb: Leaderboard, out_dir: Path, plots: bool = True) -> list[Path]:
    """CSV, Markdown and (optionally) PNGs into out_dir; returns the paths written."""
    pngs: list[Path] = []
    if plots:
        from lmbench.board.plots import write_plots  # matplotlib import is slow: only when plotting
        pngs = write_plots(lb, out_dir)
    return [write_csv(lb, out_dir / CSV_NAME), write_markdown(lb, out_dir / MD_NAME, pngs), *pngs]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 120))
    if not args.dir.is_dir():
        parser.error(f"DIR {args.dir}: not a directory")
    try:
        lb = build_leaderboard(args.dir, baseline=args.baseline, metrics=args.metric, seed=args.seed)
    except BoardError as exc:
        parser.error(str(exc))
    if not lb.rows and not lb.failed:
        console.print(f"[red]no runs under {args.dir}[/red]: found no results.json and no Hydra job folder (.hydra/). "
                      "Point DIR at an lmbench output or multirun directory.")
        return 1
    print_leaderboard(lb, console)
    if not lb.rows:
        console.print(f"[red]no completed runs under {args.dir}[/red]: {len(lb.failed)} run(s) failed (listed above); "
                      "nothing to rank.")
    else:
        from lmbench.board.hydra_callback import separation_note

        console.print(separation_note(lb))
    written = write_outputs(lb, args.dir, plots=not args.no_plots)
    console.print("wrote " + ", ".join(str(p) for p in written))
    if args.wandb:
        from lmbench.board.wandb_export import push_leaderboard
        from lmbench.loggers import LoggerConfigError

        try:
            where = push_leaderboard(lb, args.dir, mode=args.wandb_mode, project=args.wandb_project,
                                     plots=[p for p in written if p.suffix == ".png"])
        except LoggerConfigError as exc:
            console.print(f"[red]--wandb: {exc}[/red]")
            return 2
        console.print(f"W&B: {where}")
    return 0 if lb.rows else 1


if __name__ == "__main__":
    sys.exit(main())
