"""`lmbench-board DIR --wandb`: the leaderboard as W&B tables, offline by default, readable back from disk.

The offline run is read back from its files: the tables wandb writes under files/media/table/ (JSON)
and the run's `.wandb` log (group, job type, summary), parsed with the reader of tests/test_loggers.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lmbench.board import build_leaderboard
from lmbench.board.render import CSV_FIELDS
from lmbench.board.wandb_export import ranking_rows, summary
from lmbench.cli.board import main
from test_loggers import finished_records, items  # the .wandb record reader (a test helper module)

KINDS = {"mlm": "encoder", "clm": "decoder"}


@pytest.fixture
def sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """2 objectives x 2 seeds with a sentiment score (clm better by 0.1), one failed run; no W&B env."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "CI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    root = tmp_path / "sweep-42"
    for k, (objective, seed) in enumerate([(o, s) for o in KINDS for s in (0, 1)]):
        job = root / f"{k}_{objective}_s{seed}"
        job.mkdir(parents=True)
        acc = 0.6 + (0.1 if objective == "clm" else 0.0) + 0.01 * seed
        (job / "results.json").write_text(json.dumps({
            "status": "completed", "objective": {"name": objective}, "backbone": {"kind": KINDS[objective]},
            "seed": seed, "val_loss": 4.0 + seed, "tokens_seen": 1000, "scores": {"sentiment/probe/acc": acc}}))
    failed = root / "4_mlm_s2"
    failed.mkdir()
    (failed / "results.json").write_text(json.dumps({
        "status": "failed", "objective": {"name": "mlm"}, "backbone": {"kind": "encoder"}, "seed": 2,
        "error": {"type": "ValueError", "message": "data.batch_size=0"}}))
    return root


def test_tables_and_summary_from_a_leaderboard(sweep: Path) -> None:
    lb = build_leaderboard(sweep, baseline="mlm")
    columns, rows = ranking_rows(lb)
    assert columns[:4] == ["rank", "objective", "backbone_kind", "seeds"]
    assert [r[1] for r in rows] == ["clm", "mlm"]  # ranked on the score
    clm = dict(zip(columns, rows[0]))
    assert clm["sentiment/probe/acc"] == pytest.approx(0.705) and clm["seeds"] == "0,1"
    assert clm["sentiment/probe/acc ci_low"] <= 0.705 <= clm["sentiment/probe/acc ci_high"]
    s = summary(lb)
    assert s["best/sentiment/probe/acc"] == "clm@decoder" and s["best/sentiment/probe/acc/mean"] == pytest.approx(0.705)
    assert s["best/val_loss"] in ("clm@decoder", "mlm@encoder")  # equal losses: either, but one
    assert (s["completed_runs"], s["failed_runs"], s["objectives"]) == (4, 1, 2)


def test_cli_wandb_offline_run_is_written_and_readable(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(sweep), "--baseline", "mlm", "--wandb"]) == 0
    out = capsys.readouterr().out
    (run_dir,) = (sweep / "wandb").glob("offline-run-*")
    assert f"W&B: {run_dir}" in " ".join(out.split())

    tables = run_dir / "files" / "media" / "table"
    (board_file,) = tables.glob("leaderboard_*.table.json")
    board = json.loads(board_file.read_text())
    assert board["columns"] == list(CSV_FIELDS)
    with open(sweep / "leaderboard.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert len(board["data"]) == len(csv_rows) == 2 * 2 + 1  # objective x metric, then the failed run
    failed = [dict(zip(board["columns"], r)) for r in board["data"] if r[0] == "failed"]
    assert failed[0]["error"] == "ValueError: data.batch_size=0" and failed[0]["objective"] == "mlm"
    clm_acc = next(dict(zip(board["columns"], r)) for r in board["data"]
                   if r[1] == "clm" and r[4] == "sentiment/probe/acc")
    assert clm_acc["mean"] == pytest.approx(0.705) and clm_acc["diff_mean"] == pytest.approx(0.1)
    (ranking_file,) = tables.glob("ranking_*.table.json")
    assert [r[1] for r in json.loads(ranking_file.read_text())["data"]] == ["clm", "mlm"]
    images = sorted(p.name.rsplit("_", 2)[0] for p in (run_dir / "files" / "media" / "images" / "plots").glob("*.png"))
    assert images == ["leaderboard_bars", "leaderboard_score_vs_compute"]  # the PNGs lmbench-board wrote

    (run_file,) = run_dir.glob("run-*.wandb")
    records = finished_records(run_file)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.project, run.run_group, run.job_type, run.display_name) == (
        "lmbench", "sweep-42", "leaderboard", "leaderboard-sweep-42")
    summary_items = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary_items.update(items(r.summary.update))
    assert summary_items["best/sentiment/probe/acc"] == "clm@decoder" and summary_items["failed_runs"] == 1


def test_cli_wandb_disabled_under_ci_and_online_needs_login(sweep: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CI", "true")
    assert main([str(sweep), "--no-plots", "--wandb"]) == 0
    assert "disabled" in capsys.readouterr().out and not (sweep / "wandb").exists()
    monkeypatch.delenv("CI")
    assert main([str(sweep), "--no-plots", "--wandb", "--wandb-mode", "online"]) == 2
    assert "W&B online mode needs a login" in " ".join(capsys.readouterr().out.split())
    assert not (sweep / "wandb").exists()
