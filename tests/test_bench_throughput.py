"""The throughput benchmark (benchmarks/bench_throughput.py) at a tiny size: its report has the promised
structure, and the HF Trainer arm and lmbench's arm trained the same model on the same number of tokens
(a speed-up bought by doing less would show here). Timing values themselves are not asserted."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate", reason="the HF Trainer arm needs accelerate (pip install -e '.[bench]')")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_throughput.py"


def load_bench():
    sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("bench_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> dict:
    bench = load_bench()
    out = tmp_path_factory.mktemp("bench")
    return bench.main(["--tiny", "--in-process", "--objectives", "mlm", "--arms", "a", "c", "--reps", "1",
                       "--steps", "5", "--warmup", "1", "--vocab", "300", "--seq-len", "32", "--batch", "4",
                       "--quality", "--quality-steps", "3", "--cache-dir", str(out / "cache"),
                       "--json", str(out / "report.json")])


def test_summary_rows_and_ratio(report: dict) -> None:
    rows = {(r["objective"], r["arm"]): r for r in report["summary"]}
    assert set(rows) == {("mlm", "a"), ("mlm", "c")}
    for row in rows.values():
        assert row["runs"] == 1
        assert 0 < row["min_tokens_per_s"] <= row["median_tokens_per_s"] <= row["max_tokens_per_s"]
    c, a = rows[("mlm", "c")], rows[("mlm", "a")]
    assert c["ratio_name"] == "c/a" and math.isclose(c["ratio"], c["median_tokens_per_s"] / a["median_tokens_per_s"])
    assert "ratio" not in a and "target" not in c  # fp32 has no target; only d/b does
    assert a["precision"] == c["precision"] == "32-true"  # pinned, whatever this machine's auto would pick
    # MFU of both arms from the same analytic FLOPs of the step (the same useful work) and the fp32 peak
    assert c["mfu"] / a["mfu"] == pytest.approx(c["ratio"]) and c["mfu"] == pytest.approx(c["mfu_fp32"])
    assert report["hardware"]["cpu"] and "cpu_native_bf16" in report["hardware"]


def test_same_model_same_tokens(report: dict) -> None:
    runs = {r["arm"]: r for r in report["runs"]}
    a, c = runs["a"], runs["c"]
    assert a["steps"] == c["steps"] == 5
    assert a["input_tokens"] == c["input_tokens"] == 5 * 4 * 32  # steps x batch x seq_len, both sides
    assert a["parameters"] == c["parameters"] > 0
    assert a["precision"] == c["precision"] == "32-true"
    assert len(a["step_s"]) == len(c["step_s"]) == 5 - 1 - 1  # intervals after the untimed warm-up


def test_quality_runs_score_the_same_validation_batches(report: dict) -> None:
    hf, lm = report["quality"]
    assert hf["arm"] == "a" and lm["arm"] == "c" and hf["steps"] == lm["steps"] == 3
    # the benchmark's evaluator reproduces lmbench's own val/loss on lmbench's saved model
    assert math.isclose(lm["val_loss"], lm["lmbench_val_loss"], rel_tol=1e-4)
    assert 0 < hf["val_loss"] < 2 * math.log(300 + 110) and 0 < lm["val_loss"] < 2 * math.log(300 + 110)


def test_bf16_targets_only_count_on_native_bf16() -> None:
    bench = load_bench()
    runs = [{"objective": "clm", "arm": arm, "rep": 0, "tokens_per_s": tps, "parameters": 1, "tokens_per_step": 10,
             "flops_per_step": 1e9, "peak_flops": 4e12, "peak_flops_fp32": 1e12} for arm, tps in (("b", 100.0),
                                                                                                  ("d", 160.0))]
    native = {r["arm"]: r for r in bench.summarize(runs, native_bf16=True)}
    assert native["d"]["ratio"] == pytest.approx(1.6) and native["d"]["target"] == 1.5 and native["d"]["target_met"]
    emulated = {r["arm"]: r for r in bench.summarize(runs, native_bf16=False)}
    assert emulated["d"]["emulated"] and emulated["d"]["target_met"] is None  # left out of the targets
    assert native["d"]["mfu"] == pytest.approx(1e9 * 16 / 4e12)  # 16 steps/s x FLOPs per step / bf16 peak
