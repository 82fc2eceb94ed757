"""A sweep in which some jobs fail: the others still run, every job is recorded, the exit code says so.

One real sweep, `objective=mlm,broken,clm` x `trainer.max_steps=4,0`, covers both ways a job fails:
`broken` is an unknown option (Hydra cannot compose the job; stock Hydra 1.3 stops the whole sweep
before mlm runs) and `max_steps=0` is rejected by the run itself (stock Hydra raises after the batch
and reports only the first). clm comes after both kinds of failure, so its completion proves the
sweep went on. `hydra/launcher=lmbench hydra/sweeper=lmbench` are passed explicitly, which also holds
once conf/config.yaml selects them by default.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from hydra_plugins.lmbench_launcher.launcher import error_message, failed_job_dir, sweep_summary, varying_overrides

TINY = ["data.builtin_documents=200", "data.tokenizer.vocab_size=400", "data.seq_len=32", "data.batch_size=4",
        "trainer=smoke", "task=[]", "audit_batches=2", "save_model=false"]
PLUGINS = ["hydra/launcher=lmbench", "hydra/sweeper=lmbench"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict[tuple[str, str], dict]]:
    root = tmp_path_factory.mktemp("failing_sweep")
    env = {**os.environ, "LMBENCH_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "lmbench.cli.main", "-m", "objective=mlm,broken,clm", "trainer.max_steps=4,0",
         f"hydra.sweep.dir={root}/multirun", *PLUGINS, *TINY],
        cwd=root, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    jobs = {}
    for results in (root / "multirun").glob("*/results.json"):
        overrides = OmegaConf.to_container(OmegaConf.load(results.parent / ".hydra" / "overrides.yaml"))
        values = dict(o.split("=", 1) for o in overrides)
        jobs[(values["objective"], values["trainer.max_steps"])] = {
            "dir": results.parent, **json.loads(results.read_text())}
    return proc, jobs


def test_sweep_exits_nonzero_and_records_every_job(sweep) -> None:
    proc, jobs = sweep
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert set(jobs) == {(o, s) for o in ("mlm", "broken", "clm") for s in ("4", "0")}, proc.stderr[-3000:]


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_good_jobs_complete_around_the_failures(sweep, objective: str) -> None:
    _, jobs = sweep
    job = jobs[(objective, "4")]
    assert job["status"] == "completed" and job["error"] is None
    assert job["objective"]["name"] == objective and job["steps"] == 4
    assert math.isfinite(job["val_loss"]) and math.isfinite(job["train_loss"])
    assert (job["dir"] / "logs" / "metrics.csv").is_file()


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_job_that_raises_is_recorded_failed(sweep, objective: str) -> None:
    _, jobs = sweep
    job = jobs[(objective, "0")]
    assert job["status"] == "failed" and job["steps"] == 0 and job["val_loss"] is None
    assert job["error"]["type"] == "BudgetError"  # a ValueError subclass naming the key
    assert "trainer.max_steps=0" in job["error"]["message"] and ">= 1" in job["error"]["message"]
    assert job["finished_at"] is not None


@pytest.mark.parametrize("steps", ["4", "0"])
def test_job_that_cannot_be_composed_is_recorded_failed_in_its_own_dir(sweep, steps: str) -> None:
    _, jobs = sweep
    job = jobs[("broken", steps)]
    assert job["status"] == "failed" and job["objective"]["name"] == "broken"
    assert job["error"]["type"] == "MissingConfigException" and job["error"]["stage"] == "compose"
    assert "Could not find 'objective/broken'" in job["error"]["message"]
    assert "mlm" in job["error"]["message"]  # Hydra's list of available options
    assert job["dir"].name.endswith("_failed") and "broken" in job["dir"].name


def test_summary_lists_each_failed_job_with_its_error(sweep) -> None:
    proc, jobs = sweep
    out = proc.stdout + proc.stderr
    assert "4 of 6 sweep jobs failed" in out, out[-3000:]
    summary = out[out.index("4 of 6 sweep jobs failed"):]
    for key in (("mlm", "0"), ("broken", "4"), ("broken", "0"), ("clm", "0")):
        assert str(jobs[key]["dir"]) in summary, key
    assert summary.count("Could not find 'objective/broken'") == 2
    assert summary.count("trainer.max_steps=0") >= 2
    assert "Traceback" not in summary


def test_unknown_option_gets_did_you_mean() -> None:
    exc = MissingConfigException("In 'config': Could not find 'objective/mlmm'\n\nAvailable options in 'objective':",
                                 missing_cfg_file="objective/mlmm", options=["clm", "mlm", "t5_span"])
    message = error_message(exc)
    assert message.splitlines()[0] == ("In 'config': Could not find 'objective/mlmm' "
                                       "(unknown objective 'mlmm'; did you mean 'mlm'?)")


def test_failed_dir_and_summary_name_the_overrides_that_differ(tmp_path: Path) -> None:
    jobs = [["objective=mlm", "seed=0", "data.seq_len=32"], ["objective=broken", "seed=0", "data.seq_len=32"]]
    varying = varying_overrides(jobs)
    assert varying == [{"objective=mlm"}, {"objective=broken"}]
    assert failed_job_dir(tmp_path, 1, jobs[1], varying[1]) == tmp_path / "1_broken_failed"
    returns = [JobReturn(overrides=jobs[0], status=JobStatus.COMPLETED, _return_value=1.0),
               JobReturn(overrides=jobs[1], status=JobStatus.FAILED, working_dir="d1",
                         _return_value=ValueError("bad\nsecond line"))]
    summary = sweep_summary(returns, [(1, returns[1])], tmp_path)
    assert summary.splitlines() == [
        f"1 of 2 sweep jobs failed (each has results.json with status failed; the others completed) in {tmp_path}:",
        "  #1 objective=broken -> d1: ValueError: bad"]
