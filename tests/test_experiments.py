"""Experiment, scale-out and trainer presets compose into runnable, fair configs; bad presets fail at start.

- compare_objectives sweeps every built-in objective (the entry points of the lmbench distribution) at
  one token budget on size-matched tiny backbones; arch_objective_grid's cells are the (architecture,
  objective) pairs of Wang et al. 2022 that the built-in objectives express; real_small points at the
  shared real data.
- A preset whose sweep names a missing plugin stops before any job runs, naming what is installed.
- The launcher/sweeper presets compose and instantiate with their Hydra plugins (skipped, with the
  reason, where `lmbench[scale]` is not installed); the ddp preset builds a Lightning Trainer.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from lmbench.config import register_configs
from lmbench.objectives.registry import default_registry
from lmbench.pretrain import resolve_objective

CELLS = {"cd_flm": ("clm", "decoder"), "nd_plm": ("prefix_lm", "decoder"), "nd_span": ("ul2", "decoder"),
         "ed_plm": ("ul2", "encoder-decoder"), "ed_span": ("t5_span", "encoder-decoder")}
TINY = ["task=[]", "data.builtin_documents=200", "data.tokenizer.vocab_size=400", "data.seq_len=32",
        "data.batch_size=4", "trainer=smoke", "audit_batches=2"]


def hydra_compose(overrides: list[str]) -> tuple[DictConfig, object]:
    """The full config (hydra node included) as `lmbench -m OVERRIDES` composes it, and the config loader."""
    register_configs(default_registry())
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="lmbench_conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        return cfg, GlobalHydra.instance().config_loader()


def sweep_values(cfg: DictConfig, key: str) -> list[str]:
    return str(cfg.hydra.sweeper.params[key]).split(",")


def builtin_objectives() -> list[str]:
    return sorted(r.name for r in default_registry().records() if r.package == "lmbench" and r.ok)


def test_compare_objectives_sweeps_every_builtin_objective_at_one_token_budget() -> None:
    cfg, _ = hydra_compose(["experiment=compare_objectives"])
    objectives = sweep_values(cfg, "objective")
    assert sorted(objectives) == builtin_objectives() == ["bart_infill", "clm", "mlm", "prefix_lm", "t5_span", "ul2"]
    assert cfg.budget.kind == "tokens" and cfg.budget.value > 0 and cfg.trainer.max_steps is None
    assert set(cfg.task) == {"sentiment", "ner"}
    kinds = {}
    for name in objectives:  # every job composes and validates, on the same data and size
        job, _ = hydra_compose(["experiment=compare_objectives", f"objective={name}"])
        resolved = resolve_objective(job)
        kinds[name] = resolved.kind
        assert (job.backbone.size, job.data.source, job.data.seq_len, job.budget.value) == (
            "tiny", "builtin", cfg.data.seq_len, cfg.budget.value)
    assert set(kinds.values()) == {"encoder", "decoder", "encoder-decoder"}  # matched sizes across kinds


def test_arch_objective_grid_cells() -> None:
    cfg, _ = hydra_compose(["experiment=arch_objective_grid"])
    assert "objective" not in {k for k, v in cfg.hydra.sweeper.params.items() if v is not None}
    assert sweep_values(cfg, "+experiment/wang2022") == list(CELLS)
    for cell, (objective, kind) in CELLS.items():
        job, _ = hydra_compose(["experiment=arch_objective_grid", f"+experiment/wang2022={cell}"])
        resolved = resolve_objective(job)
        assert (resolved.cls.name, resolved.kind, job.budget.kind) == (objective, kind, "tokens"), cell
        if objective == "ul2":
            modes = {d.mode for d in resolved.config.denoisers}
            assert modes == ({"S"} if cell == "ed_plm" else {"R"}) and resolved.config.backbone_kind == kind


def test_real_small_reads_the_shared_data(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMBENCH_DATA", str(shared_data))
    cfg, _ = hydra_compose(["experiment=real_small"])
    assert cfg.data.source == "text" and Path(cfg.data.path) == shared_data / "gutenberg"
    assert len(list(Path(cfg.data.path).glob("*.txt"))) >= 10
    assert set(cfg.task) == {"sst2", "conll2003"}
    for task in cfg.task.values():
        for split in ("train", "dev", "test"):
            if task.get(split):
                assert (Path(task.data_root) / task[split]).is_file(), (task, split)
    assert sorted(sweep_values(cfg, "objective")) == builtin_objectives()


def test_preset_naming_a_missing_plugin_is_refused_with_the_choices() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    _, loader = hydra_compose([])
    parser = OverridesParser.create(config_loader=loader)
    import hydra_plugins.lmbench_launcher.launcher as mod  # after the plugin scan (it re-executes the module)

    mod.check_preset_sweep(parser.parse_overrides(["objective=mlm,clm", "seed=0,1", "trainer.optim.lr=0.1,0.2"]),
                           loader, "x")
    with pytest.raises(mod.PresetSweepError) as exc:
        mod.check_preset_sweep(parser.parse_overrides(["objective=mlm,electraa"]), loader,
                               "experiment=mine (experiment/mine.yaml)")
    message = str(exc.value)
    assert message.startswith("experiment=mine (experiment/mine.yaml) sweeps objective=mlm,electraa, but "
                              "'electraa' is not available: unknown objective 'electraa'")
    assert "available objectives: " in message and "install the package that provides it" in message
    assert message.endswith("Nothing was run.")
    with pytest.raises(mod.PresetSweepError, match=r"'huge' is not available: available backbone options: auto, "):
        mod.check_preset_sweep(parser.parse_overrides(["backbone=auto,huge"]), loader, "x")


def test_missing_plugin_preset_fails_before_any_job(tmp_path: Path) -> None:
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "needs_plugin.yaml").write_text(
        "# @package _global_\ndefaults:\n  - compare_objectives\n"
        "hydra:\n  sweeper:\n    params:\n      objective: mlm,my_objective\n")
    env = {**os.environ, "LMBENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "lmbench.cli.main", "-m", "experiment=needs_plugin",
         f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    err = " ".join(proc.stderr.split())
    assert "experiment=needs_plugin (experiment/needs_plugin.yaml) sweeps objective=mlm,my_objective, but " \
           "'my_objective' is not available" in err, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "sweep").exists()  # nothing ran, not even mlm


@pytest.mark.slow
def test_multirun_with_a_failing_job_ranks_the_others_and_exits_nonzero(tmp_path: Path) -> None:
    env = {**os.environ, "LMBENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "lmbench.cli.main", "-m", "experiment=compare_objectives", "objective=mlm,clm,nope",
         f"hydra.sweep.dir={sweep}", *TINY],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr[-3000:]
    with open(sweep / "leaderboard.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["objective"] for r in rows if r["status"] == "completed"} == {"mlm", "clm"}
    (failed,) = [r for r in rows if r["status"] == "failed"]
    assert failed["objective"] == "nope" and "Could not find 'objective/nope'" in failed["error"]
    out = proc.stdout
    assert "lmbench leaderboard" in out and "FAILED" in out and "Single seed" in " ".join(out.split())
    assert "1 of 3 sweep jobs failed" in proc.stderr  # the summary after the leaderboard, and exit code 1


# --- scale-out presets -------------------------------------------------------------------------------

def needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install 'lmbench[scale]')")


@pytest.mark.parametrize("override,module,target,fields", [
    ("hydra/launcher=slurm", "hydra_plugins.hydra_submitit_launcher", "SlurmLauncher",
     {"tasks_per_node": 1, "gpus_per_node": 1, "timeout_min": 240}),
    ("hydra/launcher=parallel", "hydra_plugins.hydra_joblib_launcher", "JoblibLauncher", {"n_jobs": 2}),
    ("hydra/sweeper=lr_search", "hydra_plugins.hydra_optuna_sweeper", "OptunaSweeper",
     {"n_trials": 12, "max_failure_rate": 0.5}),
])
def test_scale_out_presets_compose_and_instantiate(override: str, module: str, target: str, fields: dict) -> None:
    needs(module)
    from hydra.utils import instantiate

    cfg, _ = hydra_compose([override, "objective=clm"])
    node = cfg.hydra.launcher if "launcher" in override else cfg.hydra.sweeper
    assert node._target_.endswith(target)
    assert {k: node[k] for k in fields} == fields
    if target == "SlurmLauncher":
        assert node.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"
    if target == "OptunaSweeper":
        assert node.params == {"trainer.optim.lr": "tag(log, interval(1e-4, 1e-2))"}
        assert node.sampler._target_ == "optuna.samplers.TPESampler" and node.sampler.seed == 0
    plugin = instantiate(OmegaConf.to_container(node, resolve=True), _convert_="partial")
    assert type(plugin).__name__ == target


def test_trainer_presets() -> None:
    import pytorch_lightning as pl
    from pytorch_lightning.strategies import DDPStrategy

    ddp, _ = hydra_compose(["trainer=ddp"])
    assert (ddp.trainer.strategy, ddp.trainer.devices, ddp.trainer.limit_val_batches) == ("ddp_spawn", 2, 20)
    trainer = pl.Trainer(strategy=ddp.trainer.strategy, devices=ddp.trainer.devices, accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.strategy._start_method == "spawn"
    assert trainer.world_size == 2
    fsdp, _ = hydra_compose(["trainer=fsdp"])
    assert (fsdp.trainer.strategy, fsdp.trainer.accelerator, fsdp.trainer.devices) == ("fsdp", "gpu", "auto")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU: FSDP is allowed")
@pytest.mark.parametrize("overrides,expected", [
    (["trainer=fsdp"], "trainer.strategy='fsdp' runs on CUDA GPUs only"),
    (["trainer.accelerator=gpu"], "trainer.accelerator='gpu' but no CUDA GPU is available here; allowed values"),
])
def test_gpu_only_trainer_settings_fail_before_any_work(tmp_path: Path, overrides: list[str], expected: str) -> None:
    """Lightning refuses FSDP and a GPU accelerator without CUDA only when the Trainer is built, after the
    tokenizer, data and model; lmbench says so at start."""
    from lmbench.config import compose_config
    from lmbench.pretrain import run_pretraining
    from lmbench.results import empty_record

    cfg = compose_config([*overrides, "task=[]", f"data.cache_dir={tmp_path / 'cache'}",
                          f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(".", r"\.")):
        run_pretraining(cfg, empty_record())
    assert not (tmp_path / "cache").exists()  # no tokenizer or token cache was built
