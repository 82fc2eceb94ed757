"""Reproducibility: the same config and seed give the same results.json numbers (losses, tokens, supervised
tokens, corruption audit) and the same weights, run after run; another seed gives other numbers.

In-process runs are fast; the slow test runs the CLI twice in separate processes, where Python's hash
randomisation differs, so nothing may depend on set or dict-of-str ordering.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmbench.config import compose_config
from lmbench.pretrain import run_pretraining
from lmbench.results import empty_record, read_results

SMALL = ["data.builtin_documents=300", "data.tokenizer.vocab_size=800", "data.seq_len=64", "data.batch_size=8",
         "trainer=smoke", "task=[]", "trainer.max_steps=6", "audit_batches=8"]
METRICS = ("train_loss", "val_loss", "steps", "tokens_seen", "supervised_tokens", "audit", "config_hash",
           "tokenizer_hash", "data", "backbone", "objective")


def compose_run(out: Path, cache: Path, overrides: list[str]):
    return compose_config([*SMALL, f"data.cache_dir={cache}", *overrides, f"output_dir={out}"])


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # bit-identical runs need a fixed thread count


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("objective", ["mlm", "t5_span"])
def test_same_seed_same_results_other_seed_other_results(objective: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run_pretraining(compose_run(tmp_path / name, cache, [f"objective={objective}", f"seed={seed}"]), empty_record())
        runs[name] = read_results(tmp_path / name / "results.json")
    a, b, c = runs["a"], runs["b"], runs["c"]
    assert a["status"] == b["status"] == c["status"] == "completed"
    for key in METRICS:
        assert a[key] == b[key], key
    assert same_weights(tmp_path / "a", tmp_path / "b")
    assert a["train_loss"] != c["train_loss"] and a["val_loss"] != c["val_loss"]
    if objective == "mlm":  # other corruption draws (t5_span corrupts a fixed count per block)
        assert a["supervised_tokens"] != c["supervised_tokens"] and a["audit"]["stats"] != c["audit"]["stats"]
    assert a["config_hash"] != c["config_hash"]
    assert a["tokenizer_hash"] == c["tokenizer_hash"]  # the seed changes training, not the shared tokenizer
    assert not same_weights(tmp_path / "a", tmp_path / "c")


@pytest.mark.slow
def test_same_seed_same_results_across_processes(tmp_path: Path) -> None:
    env = {**os.environ, "LMBENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1"}
    for name in ("a", "b"):
        proc = subprocess.run([sys.executable, "-m", "lmbench.cli.main", *SMALL, "objective=clm",
                               f"hydra.run.dir={tmp_path / name}"], env={**env, "PYTHONHASHSEED": "random"},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_results(tmp_path / "a" / "results.json"), read_results(tmp_path / "b" / "results.json")
    for key in METRICS:
        assert a[key] == b[key], key
    assert same_weights(tmp_path / "a", tmp_path / "b")
