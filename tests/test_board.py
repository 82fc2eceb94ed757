"""Leaderboards from synthetic run trees: grouping, CIs, paired comparisons, failed runs, CSV/MD/PNG, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import image as mpimg
from rich.console import Console

from lmbench.board import BoardError, build_leaderboard
from lmbench.board.collect import read_val_curve
from lmbench.board.plots import write_plots
from lmbench.board.render import markdown, render_table, write_csv
from lmbench.board.stats import bootstrap_ci
from lmbench.cli.board import main

KINDS = {"mlm": "encoder", "clm": "decoder", "t5_span": "encoder-decoder"}
ACC_SHIFT = {"mlm": 0.0, "clm": 0.05, "t5_span": 0.10}  # consistent per-seed gains over mlm
# Copied from a real run (logs/metrics.csv of an mlm smoke run): NaNs are empty fields; validation rows
# have no tokens_seen; the last row repeats the final validation at the end of fit.
REAL_METRICS_CSV = """epoch,pretrain/loss,pretrain/lr,pretrain/mlm_accuracy,pretrain/supervised_tokens,pretrain/tokens_per_s,pretrain/tokens_seen,step,val/loss
0,6.859989166259766,,0.0,,,,0,
0,6.737634658813477,0.0006666666595265269,0.0,159.0,915.2670288085938,1024.0,1,
0,,,,,,,1,6.677524566650391
0,6.680079460144043,0.00033333332976326346,0.03529411926865578,244.0,386.93212890625,1536.0,2,
0,6.589694023132324,0.0,0.06172839552164078,325.0,1846.78369140625,2048.0,3,
0,,,,,,,3,6.598377704620361
1,,,,,,,4,6.598377704620361
"""


def sentiment(objective: str, seed: int) -> float:
    return 0.70 + 0.01 * seed + ACC_SHIFT[objective]


def write_run(root: Path, name: str, objective: str, seed: int, *, status: str = "completed",
              scores: dict[str, Any] | None = None, val_loss: float = 5.0, error: dict | None = None,
              **extra: Any) -> Path:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / "logs").mkdir()
    (job / "logs" / "metrics.csv").write_text(REAL_METRICS_CSV.replace("6.598377704620361", str(val_loss)))
    record = {"schema_version": 1, "status": status, "error": error,
              "objective": {"name": objective, "config": {}}, "backbone": {"kind": KINDS[objective], "size": "tiny"},
              "seed": seed, "steps": 4, "tokens_seen": 2048, "train_loss": val_loss + 0.1, "val_loss": val_loss,
              "data": {"fingerprint": "abc", "seq_len": 64}, "tokenizer_hash": "t0", "finished_at": "2026-01-01"}
    if scores is not None:
        record["scores"] = scores
    record |= extra
    (job / "results.json").write_text(json.dumps(record))
    return job


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """3 objectives x 3 seeds with scores (t5_span with 2 fine-tuning seeds), one failed run, one dead job."""
    root = tmp_path / "sweep"
    n = 0
    for objective in KINDS:
        for seed in range(3):
            acc = sentiment(objective, seed)
            f1 = [0.55 + 0.02 * seed, 0.57 + 0.02 * seed] if objective == "t5_span" else 0.51 + 0.02 * seed
            write_run(root, f"{n}_{objective}_s{seed}", objective, seed, val_loss=5.0 - 0.1 * seed,
                      scores={"sentiment/zeroshot/acc": acc, "ner/finetune/f1": f1})
            n += 1
    write_run(root, f"{n}_clm_s3", "clm", 3, status="failed",
              error={"type": "RuntimeError", "message": "CUDA out of memory | tried 2 GiB"})
    dead = root / f"{n + 1}_mlm_s3"
    (dead / ".hydra").mkdir(parents=True)
    (dead / ".hydra" / "config.yaml").write_text("objective:\n  name: mlm\nbackbone:\n  kind: encoder\nseed: 3\n")
    return root


def test_leaderboard_rows_estimates_and_comparisons(tree: Path) -> None:
    lb = build_leaderboard(tree, baseline="mlm")
    assert lb.metrics == ["ner/finetune/f1", "sentiment/zeroshot/acc", "val_loss"]
    assert [r.key for r in lb.rows] == ["t5_span@encoder-decoder", "clm@decoder", "mlm@encoder"]  # ranked on f1
    assert all(r.seeds == [0, 1, 2] for r in lb.rows) and lb.baseline == "mlm@encoder"
    assert lb.compute_kind == "tokens_seen" and not lb.warnings
    t5 = lb.rows[0]
    assert t5.values["ner/finetune/f1"] == pytest.approx({0: 0.56, 1: 0.58, 2: 0.60})  # fine-tuning seeds averaged
    acc = [sentiment("clm", s) for s in range(3)]
    assert lb.rows[1].estimates["sentiment/zeroshot/acc"] == bootstrap_ci(acc)
    c = lb.rows[1].comparisons["sentiment/zeroshot/acc"]
    assert c.diff is not None and c.diff.mean == pytest.approx(0.05) and c.seeds == [0, 1, 2] and c.unmatched == 0
    assert c.p_value == 0.25 and c.improved  # 3 consistent gains: exact p = 2/2**3, the smallest possible
    assert t5.comparisons["ner/finetune/f1"].p_value == 0.25 and t5.comparisons["ner/finetune/f1"].improved
    same = lb.rows[1].comparisons["val_loss"]  # identical losses for every objective
    assert same.p_value == 1.0 and same.improved is None
    assert len(lb.comparisons) == 6  # (clm, t5_span) x 3 metrics; never the baseline against itself
    assert "mlm@encoder" not in {x.objective for x in lb.comparisons}
    assert all(x.p_holm == 1.0 for x in lb.comparisons)  # 3 tests at p=0.25 among 6: Holm 6*0.25 > 1
    two = build_leaderboard(tree, baseline="mlm", metrics=["sentiment/*"]).comparisons
    assert [x.p_holm for x in two] == [pytest.approx(0.5), pytest.approx(0.5)]  # 2 tests: 2*0.25, then max(0.25, 0.5)
    by_status = {f.status: f for f in lb.failed}
    assert set(by_status) == {"failed", "missing"}
    assert by_status["failed"].error == "RuntimeError: CUDA out of memory | tried 2 GiB"
    assert (by_status["missing"].objective, by_status["missing"].seed) == ("mlm", 3)  # from .hydra/config.yaml
    assert build_leaderboard(tree).baseline == "clm@decoder"  # default: first alphabetically


def test_matched_and_unmatched_seeds(tmp_path: Path) -> None:
    for seed in range(4):
        write_run(tmp_path, f"mlm{seed}", "mlm", seed, val_loss=5.0 + seed)
    for seed in (1, 2, 7):
        write_run(tmp_path, f"clm{seed}", "clm", seed, val_loss=4.0 + seed)
    lb = build_leaderboard(tmp_path, baseline="mlm@encoder")
    assert lb.metrics == ["val_loss", "train_loss"]  # pretraining-only runs
    c = next(r for r in lb.rows if r.objective == "clm").comparisons["val_loss"]
    assert c.seeds == [1, 2] and c.unmatched == 3  # clm seed 7, mlm seeds 0 and 3
    assert c.diff is not None and c.diff.mean == pytest.approx(-1.0) and c.p_value == 0.5
    assert next(r for r in lb.rows if r.objective == "clm").estimates["val_loss"].n == 3  # means use every seed


def test_duplicates_fairness_and_compute_axis(tmp_path: Path) -> None:
    write_run(tmp_path, "old", "mlm", 0, finished_at="2026-01-01", flops=1e12, scores={"a/b/acc": [0.5, None, 0.7]})
    write_run(tmp_path, "new", "mlm", 0, finished_at="2026-02-01", flops=1e12, scores={"a/b/acc": 0.9})
    write_run(tmp_path, "clm", "clm", 0, flops={"training": 2e12}, data={"fingerprint": "other", "seq_len": 64})
    lb = build_leaderboard(tmp_path)
    mlm = next(r for r in lb.rows if r.objective == "mlm")
    assert [r.path.name for r in mlm.runs] == ["new"] and mlm.values["a/b/acc"] == {0: 0.9}
    text = "\n".join(lb.warnings)
    assert "mlm@encoder seed 0 completed twice" in text and "ignoring " + str(tmp_path / "old") in text
    assert "1 missing/non-numeric value(s) of 3" in text  # the None fine-tuning score of the old run
    assert "runs differ in data.fingerprint" in text
    assert lb.compute_kind == "flops" and mlm.compute("flops") == 1e12
    assert next(r for r in lb.rows if r.objective == "clm").compute("flops") == 2e12


def test_bad_metric_and_baseline_name_choices(tree: Path) -> None:
    with pytest.raises(BoardError, match="available: ner/finetune/f1, sentiment/zeroshot/acc, train_loss, val_loss"):
        build_leaderboard(tree, metrics=["sst2/acc"])
    with pytest.raises(BoardError, match="choose one of: clm@decoder, mlm@encoder, t5_span@encoder-decoder"):
        build_leaderboard(tree, baseline="bart_infill")
    assert build_leaderboard(tree, metrics=["sentiment/*", "train_loss"]).metrics == ["sentiment/zeroshot/acc",
                                                                                      "train_loss"]


def test_val_curve_maps_steps_to_tokens(tree: Path) -> None:
    run = next(r for r in build_leaderboard(tree).runs if r.seed == 0)
    curve = read_val_curve(run)
    assert curve is not None and curve.x_kind == "tokens"
    np.testing.assert_allclose(curve.x, [1024.0, 2048.0])  # step 1 and 3; the end-of-fit repeat is merged
    np.testing.assert_allclose(curve.val_loss, [6.677524566650391, 5.0])


def test_csv_markdown_and_table(tree: Path) -> None:
    lb = build_leaderboard(tree, baseline="mlm")
    path = write_csv(lb, tree / "leaderboard.csv")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * 3 + 2
    done = [r for r in rows if r["status"] == "completed"]
    clm_acc = next(r for r in done if r["objective"] == "clm" and r["metric"] == "sentiment/zeroshot/acc")
    est = lb.rows[1].estimates["sentiment/zeroshot/acc"]
    assert float(clm_acc["mean"]) == est.mean and float(clm_acc["ci_low"]) == est.low
    assert clm_acc["seeds"] == "0;1;2" and clm_acc["direction"] == "higher" and float(clm_acc["p_value"]) == 0.25
    assert float(clm_acc["p_holm"]) == 1.0 and clm_acc["n_matched"] == "3"
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["error"] == "RuntimeError: CUDA out of memory | tried 2 GiB" and failed["objective"] == "clm"
    assert failed["run_dir"].endswith("9_clm_s3") and failed["seeds"] == "3"
    assert any(r["status"] == "missing" and "no results.json" in r["error"] for r in rows)

    md = markdown(lb)
    assert f"| 2 | clm | decoder | 0,1,2 | {lb.rows[1].estimates['ner/finetune/f1'].text()} | {est.text()} |" in md
    assert "## Failed runs" in md and "CUDA out of memory \\| tried 2 GiB" in md  # pipe escaped
    assert "| clm@decoder | sentiment/zeroshot/acc | 3 | 0 |" in md and "0.25 | 1 | better |" in md

    console = Console(record=True, width=250)
    console.print(render_table(lb))
    text = " ".join(console.export_text().split())  # the caption wraps at the table's width
    assert est.text() in text and "baseline" in text and "FAILED" in text and "CUDA out of memory" in text
    assert "MISSING" in text


def test_plots_are_valid_pngs(tree: Path) -> None:
    lb = build_leaderboard(tree)
    out = write_plots(lb, tree / "plots")
    assert [p.name for p in out] == ["leaderboard_val_loss.png", "leaderboard_score_vs_compute.png",
                                     "leaderboard_bars.png"]
    for p in out:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
        assert img[..., :3].std() > 0.01  # something was drawn


def test_cli_writes_files_and_exit_codes(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tree), "--baseline", "mlm"]) == 0
    out = capsys.readouterr().out
    assert "t5_span" in out and "CUDA out of memory" in out
    for name in ("leaderboard.csv", "leaderboard.md", "leaderboard_val_loss.png", "leaderboard_bars.png",
                 "leaderboard_score_vs_compute.png"):
        assert (tree / name).is_file(), name
    assert "![leaderboard_bars](leaderboard_bars.png)" in (tree / "leaderboard.md").read_text()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 1
    assert "no runs under" in capsys.readouterr().out

    only_failed = tmp_path / "only_failed"
    write_run(only_failed, "x", "mlm", 0, status="failed", error={"type": "ValueError", "message": "bad key"})
    assert main([str(only_failed), "--no-plots"]) == 1
    assert "no completed runs" in capsys.readouterr().out
    assert "ValueError: bad key" in (only_failed / "leaderboard.csv").read_text()
    assert not list(only_failed.glob("*.png"))

    for argv in ([str(tmp_path / "nope")], [str(tree), "--metric", "nope"], [str(tree), "--baseline", "nope"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "matches no metric" in capsys.readouterr().err


def test_mfu_is_ranked_only_within_one_precision(tmp_path: Path) -> None:
    """Each run's `mfu` is against its own dtype's peak: across precisions the board refuses it and says why,
    and ranks `mfu_fp32` (one yardstick) instead; differing precisions are flagged as not like for like."""
    write_run(tmp_path, "a", "mlm", 0, precision="bf16-mixed", peak_flops_dtype="bfloat16", mfu=0.10, mfu_fp32=0.60)
    write_run(tmp_path, "b", "clm", 0, precision="32-true", peak_flops_dtype="float32", mfu=0.40, mfu_fp32=0.40)
    with pytest.raises(BoardError, match=r"--metric mfu: .*bfloat16: mlm@encoder; float32: clm@decoder.*mfu_fp32"):
        build_leaderboard(tmp_path, metrics=["mfu"])
    lb = build_leaderboard(tmp_path, metrics=["mfu_fp32"])
    assert [r.objective for r in lb.rows] == ["mlm", "clm"]  # 0.60 > 0.40 on the common fp32 yardstick
    assert any("runs differ in precision" in w for w in lb.warnings)
    same = tmp_path / "same"
    write_run(same, "a", "mlm", 0, precision="bf16-mixed", peak_flops_dtype="bfloat16", mfu=0.10)
    write_run(same, "b", "clm", 0, precision="bf16-mixed", peak_flops_dtype="bfloat16", mfu=0.30)
    assert [r.objective for r in build_leaderboard(same, metrics=["mfu"]).rows] == ["clm", "mlm"]
