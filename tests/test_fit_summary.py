"""The run's record comes from what fit did: the final model is validated inside fit (also when the last
step is not a validation step), and a run resumed at its last step validates once more without touching
the training log. Spawned ranks are covered by tests/test_ddp.py (slow)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from lmbench.config import compose_config
from lmbench.pretrain import run_pretraining
from lmbench.results import empty_record, read_results
from lmbench.train.fit_summary import KEY, FitSummary, read_fit_summary

TINY = ["objective=mlm", "task=[]", "data.builtin_documents=200", "data.tokenizer.vocab_size=400", "data.seq_len=32",
        "data.batch_size=8", "trainer=smoke", "trainer.max_steps=5", "trainer.val_check_interval=3",
        "audit_batches=0", "save_model=false"]


def run(out: Path, cache: Path, extra: list[str] = ()) -> dict:
    cfg = compose_config([*TINY, f"data.cache_dir={cache}", f"output_dir={out}", *extra])
    return run_pretraining(cfg, empty_record())


def val_rows(out: Path) -> list[tuple[int, float]]:
    with open(out / "logs" / "metrics.csv", newline="") as fh:
        return [(int(r["step"]), float(r["val/loss"])) for r in csv.DictReader(fh) if r.get("val/loss")]


def test_final_model_is_validated_inside_fit(tmp_path: Path) -> None:
    record = run(tmp_path / "run", tmp_path / "cache")
    rows = val_rows(tmp_path / "run")
    assert [step for step, _ in rows] == [2, 4]  # after step 3 (the interval) and step 5 (the last), once each
    assert record["val_loss"] == pytest.approx(rows[-1][1], abs=1e-6)
    assert record["steps"] == 5 and record["tokens_seen"] == 5 * 8 * record["data"]["block_len"]
    assert 0 < record["supervised_tokens"] < record["tokens_seen"]  # mlm supervises ~15% of positions
    assert record["train_time_s"] > 0 and record["train_loss"] is not None
    assert read_results(tmp_path / "run" / "results.json")["val_loss"] == record["val_loss"]


def test_resumed_at_the_last_step_validates_without_rewriting_the_log(tmp_path: Path) -> None:
    extra = ["trainer.max_steps=6", "trainer.checkpoint=true", "trainer.checkpoint_every_n_steps=3"]
    first = run(tmp_path / "run", tmp_path / "cache", extra)
    again = run(tmp_path / "run", tmp_path / "cache", [*extra, "resume=auto"])
    assert again["steps"] == first["steps"] == 6 and again["resumes"][-1]["step"] == 6
    assert again["val_loss"] == pytest.approx(first["val_loss"], abs=1e-6)  # same model, same batches
    assert (again["tokens_seen"], again["supervised_tokens"]) == (first["tokens_seen"], first["supervised_tokens"])
    kept = tmp_path / "run" / "logs" / "metrics.until-step-0000006.csv"
    with open(kept, newline="") as fh:
        assert sum(1 for r in csv.DictReader(fh) if r.get("pretrain/loss")) == 6  # the history, kept whole


def test_summary_round_trips_through_callback_metrics() -> None:
    class Trainer:  # what read_fit_summary touches
        callback_metrics: dict = {}

    summary = FitSummary(steps=7, tokens_seen=896, supervised_tokens=120, train_s=1.5, skipped_at=[3],
                         resumes=[{"from_checkpoint": "x.ckpt", "step": 3}], val_loss=4.25, val_step=7)
    Trainer.callback_metrics[KEY] = torch.frombuffer(bytearray(json.dumps(asdict(summary)).encode()), dtype=torch.uint8)
    assert read_fit_summary(Trainer) == summary
    assert KEY not in Trainer.callback_metrics and read_fit_summary(Trainer) is None
