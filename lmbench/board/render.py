"""Leaderboard outputs for people and for programs: a rich terminal table, Markdown, and a long CSV.

All three say the same things: each metric as "mean [95% CI]" over pretraining seeds, the paired
difference to the baseline with raw and Holm-adjusted p-values, and every failed run with its error.
The CSV is long (one row per objective x metric, then one per failed run, told apart by `status`) so
it loads straight into pandas or a spreadsheet.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lmbench.board import Leaderboard, Row
from lmbench.board.stats import CONFIDENCE, N_RESAMPLES, Comparison, fmt, lower_is_better, min_attainable_p

CSV_NAME = "leaderboard.csv"
MD_NAME = "leaderboard.md"
CSV_FIELDS = ["status", "objective", "backbone_kind", "seeds", "metric", "direction", "n", "mean", "ci_low",
              "ci_high", "baseline", "n_matched", "n_unmatched", "diff_mean", "diff_ci_low", "diff_ci_high",
              "p_value", "p_holm", "run_dir", "error"]


def _arrow(metric: str) -> str:
    return "↓" if lower_is_better(metric) else "↑"


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.3g}"


def _delta(c: Comparison) -> str:
    if c.diff is None:
        return f"no matched seeds ({c.unmatched} unmatched)"
    test = f"p={_p(c.p_value)} holm={_p(c.p_holm)}" if c.p_value is not None else "untested"
    text = f"Δ {fmt(c.diff.mean, sign=True)} {test} n={len(c.seeds)}"
    return text + (f" ({c.unmatched} unmatched)" if c.unmatched else "")


def method_note(lb: Leaderboard) -> str:
    """One paragraph saying how every number was computed."""
    n_tests = sum(c.p_value is not None for c in lb.comparisons)
    n_min = min((len(c.seeds) for c in lb.comparisons if c.p_value is not None), default=0)
    text = (f"Cells: mean over pretraining seeds [{CONFIDENCE:.0%} percentile bootstrap CI, {N_RESAMPLES} resamples]; "
            "n=1 means a single seed and no interval. Scores with several fine-tuning seeds are averaged per "
            "pretraining seed first. Δ: mean paired difference (row - baseline) over matched seeds; p: exact "
            "two-sided paired permutation test (scipy.stats.permutation_test, permutation_type='samples'); "
            f"holm: Holm-adjusted over all {n_tests} comparisons. ↓ lower is better, ↑ higher is better.")
    if any(m in ("val_loss", "train_loss") for m in lb.metrics) and len({r.objective for r in lb.rows}) > 1:
        text += (" val_loss/train_loss are each objective's own loss (an MLM loss is not a CLM loss): compare them "
                 "across objectives only as a sanity check, not as a ranking.")
    if n_min:
        text += f" With {n_min} matched seeds the smallest attainable p is {min_attainable_p(n_min):.3g}."
    return text


def render_table(lb: Leaderboard) -> Table:
    """A rich Table: one row per objective@kind, metric cells 'mean [lo, hi]' with Δ vs baseline below."""
    table = Table(title=f"lmbench leaderboard: {lb.root}  (baseline {lb.baseline})", show_lines=True)
    for col in ["#", "objective", "backbone", "seeds"]:
        table.add_column(col, overflow="fold")
    for metric in lb.metrics:
        table.add_column(f"{metric} {_arrow(metric)}", overflow="fold")
    for rank, row in enumerate(lb.rows, 1):
        cells = [str(rank), row.objective, row.backbone_kind, ",".join(map(str, row.seeds)) or "-"]
        for metric in lb.metrics:
            est = row.estimates.get(metric)
            text = est.text() if est else "-"
            if row.key == lb.baseline:
                text += "\n[dim]baseline[/dim]"
            elif metric in row.comparisons:
                c = row.comparisons[metric]
                colour = {True: "green", False: "red", None: "dim"}[c.improved]
                text += f"\n[{colour}]{_delta(c)}[/{colour}]"
            cells.append(text)
        table.add_row(*cells)
    if lb.failed:
        lines = [f"[red]{f.status.upper()}[/red] {f.path}  {f.objective or '?'}@{f.backbone_kind or '?'} "
                 f"seed {f.seed if f.seed is not None else '?'}: {f.error}" for f in lb.failed]
        table.caption = f"{len(lb.failed)} run(s) without results:\n" + "\n".join(lines)
        table.caption_justify = "left"
    return table


def print_leaderboard(lb: Leaderboard, console: Console | None = None) -> None:
    """Print the table, then warnings and the method note."""
    console = console or Console()
    console.print(render_table(lb))
    for warning in lb.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"[dim]{method_note(lb)}[/dim]")


def _num(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def _csv_rows(lb: Leaderboard) -> list[dict[str, str]]:
    out = []
    for row in lb.rows:
        for metric in lb.metrics:
            est, c = row.estimates.get(metric), row.comparisons.get(metric)
            out.append({
                "status": "completed", "objective": row.objective, "backbone_kind": row.backbone_kind,
                "seeds": ";".join(map(str, row.seeds)), "metric": metric,
                "direction": "lower" if lower_is_better(metric) else "higher",
                "n": str(est.n) if est else "0", "mean": _num(est and est.mean),
                "ci_low": _num(est and est.low), "ci_high": _num(est and est.high), "baseline": lb.baseline or "",
                "n_matched": str(len(c.seeds)) if c else "", "n_unmatched": str(c.unmatched) if c else "",
                "diff_mean": _num(c and c.diff and c.diff.mean), "diff_ci_low": _num(c and c.diff and c.diff.low),
                "diff_ci_high": _num(c and c.diff and c.diff.high), "p_value": _num(c and c.p_value),
                "p_holm": _num(c and c.p_holm), "run_dir": "", "error": "",
            })
    for f in lb.failed:
        blank = dict.fromkeys(CSV_FIELDS, "")
        out.append(blank | {"status": f.status, "objective": f.objective or "", "backbone_kind": f.backbone_kind or "",
                            "seeds": "" if f.seed is None else str(f.seed), "run_dir": str(f.path), "error": f.error})
    return out


def write_csv(lb: Leaderboard, path: Path) -> Path:
    """Long-format CSV: completed rows per objective x metric, then failed runs (status != completed)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(_csv_rows(lb))
    return path


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(_md(c) for c in r) + " |" for r in rows]


def _md_ranking(lb: Leaderboard, row: Row, rank: int) -> list[str]:
    cells = [str(rank), row.objective + (" (baseline)" if row.key == lb.baseline else ""), row.backbone_kind,
             ",".join(map(str, row.seeds)) or "-"]
    return cells + [row.estimates[m].text() if m in row.estimates else "-" for m in lb.metrics]


def markdown(lb: Leaderboard, plots: list[str] | None = None) -> str:
    """The leaderboard as a Markdown document (ranking, paired comparisons, failed runs, warnings).

    plots: image links (paths relative to the document) to embed at the end.
    """
    lines = ["# lmbench leaderboard", "", f"Runs under `{lb.root}`: {len(lb.runs)} completed, {len(lb.failed)} "
             f"without results. Baseline: `{lb.baseline}`. Ranked on `{lb.metrics[0] if lb.metrics else '-'}`.", ""]
    lines += _md_table(["#", "objective", "backbone", "seeds"] + [f"{m} {_arrow(m)}" for m in lb.metrics],
                       [_md_ranking(lb, row, i) for i, row in enumerate(lb.rows, 1)])
    lines += ["", method_note(lb), "", f"## Paired comparisons vs `{lb.baseline}`", ""]
    comp_rows = [[c.objective, c.metric, str(len(c.seeds)), str(c.unmatched), c.diff.text() if c.diff else "-",
                  _p(c.p_value), _p(c.p_holm), {True: "better", False: "worse", None: "-"}[c.improved]]
                 for c in lb.comparisons]
    lines += _md_table(["objective", "metric", "matched seeds", "unmatched", "Δ mean [95% CI]", "p", "p (Holm)",
                        "direction"], comp_rows) if comp_rows else ["No comparisons (a single objective)."]
    lines += ["", "## Failed runs", ""]
    lines += _md_table(["run", "objective", "backbone", "seed", "status", "error"],
                       [[f"`{f.path}`", f.objective or "?", f.backbone_kind or "?", "?" if f.seed is None else str(f.seed),
                         f.status, f.error] for f in lb.failed]) if lb.failed else ["None."]
    if lb.warnings:
        lines += ["", "## Warnings", ""] + [f"- {_md(w)}" for w in lb.warnings]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def write_markdown(lb: Leaderboard, path: Path, plots: list[Path] | None = None) -> Path:
    """Write `markdown(lb)` to `path`, linking `plots` relative to the document's folder."""
    links = [os.path.relpath(p, path.parent) for p in plots or []]
    path.write_text(markdown(lb, links), encoding="utf-8")
    return path
