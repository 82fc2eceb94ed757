"""Budgets in real runs: equal tokens across objectives with different block lengths, FLOP budgets
bought in whole steps, a time budget that stops within one step with the learning rate decayed to 0,
aliases, and budgets that cannot be honoured failing before any tokenizer work or training."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl

from lmbench.budget import BudgetError, FlopFormulaError
from lmbench.config import compose_config
from lmbench.pretrain import run_pretraining
from lmbench.results import empty_record

SMALL = ["data.builtin_documents=300", "data.tokenizer.vocab_size=800", "data.seq_len=32", "data.batch_size=4",
         "trainer=smoke", "trainer.max_steps=null", "audit_batches=0", "save_model=false", "task=[]"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("budget-cache") / "cache"  # tokenizer and token stream, shared by the runs


def run(out: Path, cache: Path, overrides: list[str], callbacks: tuple[pl.Callback, ...] = ()) -> dict[str, Any]:
    cfg = compose_config([*SMALL, f"data.cache_dir={cache}", *overrides, f"output_dir={out}"])
    return run_pretraining(cfg, empty_record(), callbacks=callbacks)


def logged(out: Path, key: str) -> list[tuple[int, float]]:
    with open(out / "logs" / "metrics.csv", newline="") as fh:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(fh) if r.get(key)]


def test_equal_token_budget_gives_equal_tokens_across_block_lengths(tmp_path: Path, cache: Path) -> None:
    budget = 1000
    records = {obj: run(tmp_path / obj, cache, [f"objective={obj}", "budget=tokens", f"budget.value={budget}"])
               for obj in ("mlm", "t5_span")}
    per_step = {obj: r["budget"]["tokens_per_step"] for obj, r in records.items()}
    assert per_step["mlm"] == 4 * 30 and per_step["t5_span"] > 4 * 32  # blocks of 30 vs ~36 corpus tokens
    for obj, r in records.items():
        assert r["budget"]["kind"] == "tokens" and r["budget"]["key"] == "budget.value"
        assert r["steps"] == math.ceil(budget / per_step[obj]) == r["budget"]["max_steps"]
        assert r["tokens_seen"] == r["steps"] * per_step[obj]
        assert budget <= r["tokens_seen"] < budget + per_step[obj]  # the budget, up to one step
        lr = logged(tmp_path / obj, "pretrain/lr")  # the schedule decays over the budget's steps
        assert lr[-1] == (r["steps"] - 1, 0.0) and all(v > 0 for _, v in lr[:-1])  # rows count from 0
    assert abs(records["mlm"]["tokens_seen"] - records["t5_span"]["tokens_seen"]) < max(per_step.values())


def test_flops_budget_buys_whole_steps(tmp_path: Path, cache: Path) -> None:
    one = run(tmp_path / "one", cache, ["objective=clm", "budget.value=1"])
    per_step = one["flops_per_step"]
    assert one["steps"] == 1 and one["flops"] == per_step > 0
    value = 2.5 * per_step
    r = run(tmp_path / "flops", cache, ["objective=clm", "budget=flops", f"budget.value={value!r}"])
    assert r["budget"]["kind"] == "flops" and r["flops_per_step"] == per_step
    assert r["steps"] == math.ceil(value / per_step) == 3
    assert value <= r["flops"] < value + per_step and r["flops"] == r["steps"] * per_step


class StepLog(pl.Callback):
    """The learning rate each optimizer step used, and the seconds between step ends."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.ends: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ends.append(time.perf_counter())


def test_time_budget_stops_within_a_step_and_decays_the_learning_rate(tmp_path: Path, cache: Path) -> None:
    limit, steps = 2.0, StepLog()
    r = run(tmp_path / "time", cache, ["objective=clm", "budget=time", f"budget.value={limit}",
                                       "trainer.val_check_interval=1000", "trainer.optim.lr=0.001"], (steps,))
    assert r["budget"]["kind"] == "time" and r["budget"]["max_steps"] is None and r["budget"]["max_time_s"] == limit
    assert r["steps"] == len(steps.lrs) > 3
    longest = max(b - a for a, b in zip(steps.ends, steps.ends[1:]))
    assert limit <= r["train_time_s"] < limit + longest + 0.05, (r["train_time_s"], longest)  # within one step
    lrs = steps.lrs
    peak = max(lrs)
    assert peak <= 0.001 and lrs[-1] < 0.15 * peak  # the last step trains at a nearly decayed rate
    after = lrs[lrs.index(peak):]
    assert all(a >= b for a, b in zip(after, after[1:]))  # decays monotonically after warmup
    assert logged(tmp_path / "time", "pretrain/lr")[-1][1] == 0.0  # and reaches 0 at the limit


def test_trainer_max_steps_is_an_alias_that_overrides_the_budget(tmp_path: Path, cache: Path) -> None:
    r = run(tmp_path / "alias", cache, ["objective=clm", "budget=tokens", "budget.value=1e9", "trainer.max_steps=2"])
    assert r["steps"] == 2 and r["budget"]["kind"] == "steps" and r["budget"]["key"] == "trainer.max_steps"
    cfg = compose_config(["trainer=default", "budget=steps"])
    assert cfg.trainer.max_steps is None and cfg.budget.value == 200  # the default run: 200 steps, as before


@pytest.mark.parametrize("overrides,error,match", [
    (["budget=tokens", "budget.value=50"], BudgetError, r"budget.value=50 is smaller than one optimizer step"),
    (["trainer.max_tokens=50"], BudgetError, r"trainer.max_tokens=50 is smaller than one optimizer step"),
    (["trainer.max_steps=0"], BudgetError, r"trainer.max_steps=0; allowed values: an integer >= 1"),
    (["budget=time", "budget.value=-1"], BudgetError, r"budget.value=-1.0 for budget.kind=time"),
    (["budget=flops", "backbone.model_class=DistilBertForMaskedLM"], FlopFormulaError,
     r"budget.kind=flops needs a FLOP formula, but backbone family 'distilbert' has none; families with one: "
     r"bert, roberta, gpt2, llama, t5, bart"),
], ids=["tokens", "max_tokens", "max_steps", "time", "flops-no-formula"])
def test_bad_budgets_fail_before_tokenizer_work(tmp_path: Path, overrides: list[str], error: type,
                                                match: str) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(error, match=match):
        run(tmp_path / "out", cache, ["objective=mlm", *overrides])
    assert not cache.exists()  # no tokenizer trained, no token stream built


class Trained(pl.Callback):
    started = False

    def on_train_start(self, trainer, pl_module) -> None:
        self.started = True


def test_flops_budget_below_one_step_fails_before_training(tmp_path: Path, cache: Path) -> None:
    watch = Trained()
    with pytest.raises(BudgetError, match=r"budget.value=1e\+06 is smaller than one optimizer step \(128 tokens / "):
        run(tmp_path / "out", cache, ["objective=clm", "budget=flops", "budget.value=1e6"], (watch,))
    assert not watch.started and not (tmp_path / "out" / "logs").exists()
