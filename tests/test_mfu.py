"""FLOP and MFU accounting of every run: results.json's compute fields against torch's FLOP counter on the
run's own first batch, their arithmetic, the logged `pretrain/mfu`, the INFO summary line, the peak
measured once per process, and a backbone without a FLOP formula that trains with no FLOP fields."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.flop_counter import FlopCounterMode

from lmbench.config import compose_config
from lmbench.pretrain import run_pretraining
from lmbench.results import empty_record
from lmbench.train.budget import measure_peak_flops

# Eager attention: on CPU the fused sdpa kernel has no FLOP formula in torch's counter.
SMALL = ["data.builtin_documents=300", "data.tokenizer.vocab_size=800", "data.seq_len=32", "data.batch_size=4",
         "trainer=smoke", "audit_batches=0", "save_model=false", "task=[]", "backbone.attn_implementation=eager"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FirstBatchFlops(pl.Callback):
    """Counts, with torch's FlopCounterMode, the FLOPs of one training step on the run's batch 0."""

    batch: Any = None
    counted = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0 and self.batch is None:
            self.batch = {k: v.clone() for k, v in batch.items()}

    def on_train_end(self, trainer, pl_module) -> None:
        with FlopCounterMode(display=False) as counter:
            pl_module.objective.loss(pl_module.model, self.batch).loss.backward()
        self.counted = counter.get_total_flops()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("mfu")
    out: dict[str, Any] = {}
    for objective in ("mlm", "t5_span"):
        counter = FirstBatchFlops()
        cfg = compose_config([*SMALL, f"objective={objective}", f"data.cache_dir={root / 'cache'}",
                              f"output_dir={root / objective}"])
        out[objective] = (run_pretraining(cfg, empty_record(), callbacks=[counter]), counter, root / objective)
    return out


@pytest.mark.parametrize("objective", ["mlm", "t5_span"])
def test_flops_per_step_matches_torch_flop_counter(runs: dict[str, Any], objective: str) -> None:
    record, counter, _ = runs[objective]
    ratio = record["flops_per_step"] / counter.counted
    assert abs(ratio - 1) < 0.10, f"{objective}: analytic/FlopCounterMode = {ratio:.4f} (issue: within 10%)"


@pytest.mark.parametrize("objective", ["mlm", "t5_span"])
def test_results_record_flops_spent_and_mfu(runs: dict[str, Any], objective: str) -> None:
    r, _, _ = runs[objective]
    assert r["steps"] == 4 and r["budget"]["key"] == "trainer.max_steps"
    assert r["flops"] == r["steps"] * r["flops_per_step"]
    assert r["flops_per_token"] == pytest.approx(r["flops_per_step"] / r["budget"]["tokens_per_step"])
    assert 0 < r["train_time_s"] < r["wall_time_s"]
    assert r["flops_per_s"] == pytest.approx(r["flops"] / r["train_time_s"], rel=1e-3)
    assert r["tokens_per_s"] == pytest.approx(r["tokens_seen"] / r["train_time_s"], rel=1e-3)
    assert r["peak_flops"] > 1e8
    assert 0 < r["mfu"] <= 1 and r["mfu"] == pytest.approx(r["flops_per_s"] / r["peak_flops"])


def test_mfu_is_logged_in_the_training_window(runs: dict[str, Any]) -> None:
    _, _, out = runs["mlm"]
    with open(out / "logs" / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("pretrain/mfu")]
    assert len(rows) >= 2
    for row in rows:
        assert 0 < float(row["pretrain/mfu"]) <= 1 and float(row["pretrain/flops_per_s"]) > 0
        assert float(row["pretrain/tokens_per_s"]) > 0


def test_peak_is_measured_once_per_process(runs: dict[str, Any]) -> None:
    peaks = {r["peak_flops"] for r, _, _ in runs.values()}
    assert len(peaks) == 1  # the second run reused the first run's measurement
    start = time.perf_counter()
    peak = peaks.pop()
    record = runs["mlm"][0]
    dtype = getattr(torch, record["peak_flops_dtype"])  # auto: bfloat16 on a native-bf16 CPU, else float32
    measured = measure_peak_flops(torch.device("cpu"), dtype)
    assert (measured.compute, measured.fp32) == (peak, record["peak_flops_fp32"])
    assert time.perf_counter() - start < 0.05
    # CPU data-parallel processes share the node's cores: only nodes multiply the peak, not processes
    assert measure_peak_flops(torch.device("cpu"), dtype, devices=2).compute == peak
    assert measure_peak_flops(torch.device("cpu"), dtype, devices=4, nodes=2).compute == 2 * peak


def test_summary_is_logged_and_a_family_without_formula_still_trains(
        tmp_path: Path, runs: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    cache = next(iter(runs.values()))[2].parent / "cache"
    cfg = compose_config([*SMALL, "objective=mlm", "trainer.max_steps=2", f"data.cache_dir={cache}",
                          "backbone.model_class=DistilBertForMaskedLM", "+backbone.config_overrides.hidden_dim=128",
                          f"output_dir={tmp_path}"])
    with caplog.at_level(logging.INFO, logger="lmbench.train.budget"):
        r = run_pretraining(cfg, empty_record())
    assert r["steps"] == 2 and r["status"] == "completed"
    assert r["flops"] is r["mfu"] is r["flops_per_step"] is None and r["peak_flops"] > 0
    assert "'distilbert' has no FLOP formula" in caplog.text
    assert "trained 2 steps in" in caplog.text and "tokens/s (no FLOP formula: no MFU)" in caplog.text


def test_summary_line_names_mfu(tmp_path: Path, runs: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    cache = next(iter(runs.values()))[2].parent / "cache"
    cfg = compose_config([*SMALL, "objective=clm", "trainer.max_steps=1", f"data.cache_dir={cache}",
                          f"output_dir={tmp_path}"])
    with caplog.at_level(logging.INFO, logger="lmbench.train.budget"):
        run_pretraining(cfg, empty_record())
    assert "budget (trainer.max_steps): 1 optimizer steps" in caplog.text
    assert "trained 1 steps in" in caplog.text and "MFU" in caplog.text and "of the measured" in caplog.text and "of the fp32 peak" in caplog.text
