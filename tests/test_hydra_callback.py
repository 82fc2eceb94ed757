"""The leaderboard callback: every multirun ends with a leaderboard, failed jobs listed, in the sweep dir.

The sweeper test drives the real LmbenchSweeper with a stand-in launcher that writes results.json files
(one job fails), and the real Hydra Callbacks built from conf/config.yaml's `hydra.callbacks`: the
leaderboard must be written before the sweep raises its failure summary. Numbers come from synthetic
runs whose scores are known, so the separation note can be checked against intervals computed by hand.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import pytest
from hydra._internal.callbacks import Callbacks
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext
from omegaconf import OmegaConf

from lmbench.board import build_leaderboard
from lmbench.board.hydra_callback import LeaderboardCallback, separated_metrics, separation_note

KINDS = {"mlm": "encoder", "clm": "decoder", "t5_span": "encoder-decoder"}


def write_run(job: Path, objective: str, seed: int, acc: float | None, *, error: str | None = None) -> None:
    job.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "status": "failed" if error else "completed", "objective": {"name": objective},
        "backbone": {"kind": KINDS[objective], "size": "tiny"}, "seed": seed, "val_loss": 5.0, "train_loss": 5.1,
        "tokens_seen": 1000, "flops": 1e9, "finished_at": "2026-01-01",
        "error": {"type": "ValueError", "message": error} if error else None}
    if acc is not None:
        record["scores"] = {"sentiment/probe/acc": acc}
    (job / "results.json").write_text(json.dumps(record))


def grid(root: Path, shift: dict[str, float], seeds: Sequence[int] = (0, 1, 2)) -> Path:
    for k, objective in enumerate(shift):
        for seed in seeds:
            write_run(root / f"{k}_{objective}_s{seed}", objective, seed, 0.6 + shift[objective] + 0.01 * seed)
    return root


def test_separation_note_is_honest(tmp_path: Path) -> None:
    apart = build_leaderboard(grid(tmp_path / "apart", {"mlm": 0.0, "clm": 0.2, "t5_span": 0.1}))
    # intervals over 3 seeds span 0.02 around each mean; means 0.1 apart: every row stands alone
    assert separated_metrics(apart) == {"sentiment/probe/acc": ["clm@decoder", "t5_span@encoder-decoder",
                                                                "mlm@encoder"]}
    assert separation_note(apart).startswith("Separated (95% interval disjoint from every other objective's) on "
                                             "sentiment/probe/acc: clm@decoder, t5_span@encoder-decoder, mlm@encoder")
    close = build_leaderboard(grid(tmp_path / "close", {"mlm": 0.0, "clm": 0.005}))
    assert separated_metrics(close) == {}
    note = separation_note(close)
    assert "too small to separate the objectives" in note and "with 3 seeds" in note
    single = build_leaderboard(grid(tmp_path / "single", {"mlm": 0.0, "clm": 0.2}, seeds=(0,)))
    assert separation_note(single).startswith("Single seed: the table has no intervals")


def fake_launch(self: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
    """Runs no model: job `objective=X` writes a results.json (clm fails) and returns its JobReturn."""
    sweep_dir = Path(str(self.config.hydra.sweep.dir))
    out = []
    for k, overrides in enumerate(job_overrides):
        values = {"seed": "0", **dict(o.split("=", 1) for o in overrides)}
        job = sweep_dir / f"{initial_job_idx + k}_{values['objective']}_s{values['seed']}"
        fails = values["objective"] == "clm"
        write_run(job, values["objective"], int(values["seed"]), None if fails else 0.7 + 0.01 * int(values["seed"]),
                  error="trainer.max_steps=0; allowed values: >= 1" if fails else None)
        out.append(JobReturn(overrides=list(overrides), working_dir=str(job),
                             status=JobStatus.FAILED if fails else JobStatus.COMPLETED,
                             _return_value=ValueError("boom") if fails else 1.0))
    return out


def sweeper_for(tmp_path: Path, params: dict[str, str] | None) -> tuple[Any, Any, Any]:
    """(LmbenchSweeper with a fake launcher, the composed config, the launcher module). The module is
    looked up after Hydra's plugin scan, which re-executes plugin modules (new class objects)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from lmbench.config import register_configs
    from lmbench.objectives.registry import default_registry

    register_configs(default_registry())
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="lmbench_conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                      return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
    import hydra_plugins.lmbench_launcher.launcher as mod

    sweeper = mod.LmbenchSweeper(max_batch_size=None, params=params)
    launcher = type("FakeLauncher", (mod.LmbenchLauncher,), {"launch": fake_launch})()
    context = HydraContext(config_loader=loader, callbacks=Callbacks(cfg))
    launcher.setup(hydra_context=context, task_function=lambda c: None, config=cfg)
    sweeper.config, sweeper.launcher, sweeper.hydra_context = cfg, launcher, context
    return sweeper, cfg, mod


def test_sweep_with_a_failed_job_still_writes_the_leaderboard(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    sweeper, cfg, mod = sweeper_for(tmp_path, {"objective": "mlm,clm,t5_span"})
    assert [type(c).__name__ for c in sweeper.hydra_context.callbacks.callbacks] == ["LeaderboardCallback"]
    with pytest.raises(mod.SweepFailedError, match="2 of 6 sweep jobs failed"):
        sweeper.sweep(["seed=0,1"])  # preset params x command line: 3 objectives x 2 seeds
    sweep_dir = tmp_path / "sweep"
    out = capsys.readouterr().out
    assert "mlm" in out and "t5_span" in out and "FAILED" in out and "max_steps=0" in out
    with open(sweep_dir / "leaderboard.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    done = {(r["objective"], r["metric"]) for r in rows if r["status"] == "completed"}
    assert ("mlm", "sentiment/probe/acc") in done and ("t5_span", "sentiment/probe/acc") in done
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2 and all(r["objective"] == "clm" for r in failed)
    assert failed[0]["error"] == "ValueError: trainer.max_steps=0; allowed values: >= 1"
    assert (sweep_dir / "leaderboard.md").is_file() and (sweep_dir / "leaderboard_bars.png").is_file()
    assert "2 of 6" not in out  # the summary comes after the leaderboard, from Hydra, not the callback
    sweeper.hydra_context.callbacks.on_multirun_end(config=cfg)  # Hydra never calls it after a raise; if it did:
    assert capsys.readouterr().out == ""  # built once per sweep


def test_command_line_wins_over_preset_params_and_null_drops_a_sweep(tmp_path: Path) -> None:
    sweeper, _, _ = sweeper_for(tmp_path, {"objective": "mlm,clm,t5_span", "seed": None})
    sweeper.hydra_context.callbacks.callbacks[0].enabled = False
    sweeper.sweep(["objective=mlm,t5_span", "data.seq_len=32"])
    jobs = [list(job) for batch in sweeper.overrides for job in batch]
    assert jobs == [["objective=mlm", "data.seq_len=32"], ["objective=t5_span", "data.seq_len=32"]]
    assert not (tmp_path / "sweep" / "leaderboard.csv").exists()  # enabled=false


def test_callback_skips_searches_and_survives_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    grid(tmp_path, {"mlm": 0.0, "clm": 0.1})
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)},
                                      "sweeper": {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper."
                                                              "OptunaSweeper"}}})
    LeaderboardCallback().on_multirun_end(cfg)
    assert not (tmp_path / "leaderboard.csv").exists()
    cfg.hydra.sweeper._target_ = "hydra_plugins.lmbench_launcher.launcher.LmbenchSweeper"
    with caplog.at_level(logging.ERROR):
        LeaderboardCallback(baseline="nope").on_multirun_end(cfg)  # unknown baseline: falls back, still writes
    assert (tmp_path / "leaderboard.csv").is_file()
    (tmp_path / "leaderboard.csv").unlink()
    (tmp_path / "leaderboard.csv").mkdir()  # cannot be written: logged, not raised
    with caplog.at_level(logging.ERROR):
        LeaderboardCallback(plots=False).on_multirun_end(cfg)
    assert "could not build the leaderboard" in caplog.text and f"lmbench-board {tmp_path}" in caplog.text


def test_metric_patterns_keep_what_the_runs_have(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid(tmp_path, {"mlm": 0.0, "clm": 0.1})
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    callback = LeaderboardCallback(metrics=["*/probe/acc", "*/zeroshot/f1", "val_loss"], plots=False)
    callback.on_multirun_end(cfg)
    assert callback.leaderboard is not None
    assert callback.leaderboard.metrics == ["sentiment/probe/acc", "val_loss"]  # no run had zero-shot NER
    assert "Separated" in capsys.readouterr().out


def test_single_run_of_a_sweep_preset_warns(caplog: pytest.LogCaptureFixture) -> None:
    cfg = OmegaConf.create({"hydra": {"sweeper": {"params": {"objective": "mlm,clm", "seed": None}},
                                      "runtime": {"choices": {"experiment": "compare_objectives"}}}})
    with caplog.at_level(logging.WARNING):
        LeaderboardCallback().on_run_start(cfg)
    assert ("experiment=compare_objectives defines a sweep (objective=mlm,clm) that only runs with -m"
            in caplog.text)
    assert "lmbench -m experiment=compare_objectives" in caplog.text
    caplog.clear()
    LeaderboardCallback().on_run_start(OmegaConf.create({"hydra": {"sweeper": {"params": None}}}))
    assert caplog.text == ""


def test_pareto_front_of_score_against_compute() -> None:
    import numpy as np

    from lmbench.board.plots import pareto_front

    x = np.array([1.0, 2.0, 3.0, 4.0, 2.0])  # FLOPs
    acc = np.array([0.5, 0.7, 0.6, 0.9, 0.65])  # higher is better: (3, 0.6) and (2, 0.65) are beaten by (2, 0.7)
    assert pareto_front(x, acc, higher_is_better=True).tolist() == [0, 1, 3]
    loss = np.array([5.0, 4.0, 4.5, 3.0, 4.2])  # lower is better: the same points win
    assert pareto_front(x, loss, higher_is_better=False).tolist() == [0, 1, 3]
    assert pareto_front(np.array([1.0, 1.0]), np.array([0.5, 0.5]), True).tolist() == [0, 1]  # ties both stay
