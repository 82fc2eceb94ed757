"""Configuration errors stop `lmbench` within seconds, before any data is read or model built, naming the key.

Composition errors (unknown key, unknown option, wrong type) come from Hydra against the typed
schemas; they are checked in-process here for every kind, and through the console script for the
exit code, the time and the untouched cache. Errors the run itself detects (a missing required
value, a bad value) print one line, `Error: <message>`, with no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf.errors import ConfigAttributeError, MissingMandatoryValue

from lmbench.cli.main import is_user_error, preflight
from lmbench.config import register_configs
from lmbench.objectives.base import ObjectiveConfigError
from lmbench.objectives.registry import default_registry

# Measured on 2 cores busy with other test suites: 8-19 s per run, most of it Python start-up and
# importing torch/transformers to discover the objective plugins (~6 s of CPU).
MAX_SECONDS = 30.0


def composition_error(overrides: list[str]) -> str:
    """Hydra's message (and the OmegaConf cause it prints) for composing `config` with `overrides`."""
    register_configs(default_registry())
    with initialize_config_module(config_module="lmbench_conf", version_base="1.3"):
        with pytest.raises(Exception) as info:
            compose(config_name="config", overrides=overrides)
    return f"{info.value}\n{info.value.__cause__ or ''}"


@pytest.mark.parametrize("overrides,expected", [
    (["trainer.max_stepz=3"], ["trainer.max_stepz", "Key 'max_stepz' not in 'TrainerConfig'"]),  # unknown key
    (["foo=1"], ["Could not override 'foo'", "not in 'LmbenchConfig'"]),
    (["objective=clm", "objective.mlm_probability=0.2"], ["Key 'mlm_probability' not in 'CLMConfig'"]),
    (["objective=mlmm"], ["Could not find 'objective/mlmm'", "mlm", "t5_span"]),  # unknown option + options
    (["backbone=huge"], ["Could not find 'backbone/huge'", "encoder_tiny"]),
    (["trainer.max_steps=abc"], ["trainer.max_steps", "could not be converted to Integer"]),  # wrong type
    (["objective.mlm_probability=abc"], ["objective.mlm_probability", "could not be converted to Float"]),
])
def test_composition_errors_name_the_key(overrides: list[str], expected: list[str]) -> None:
    message = composition_error(overrides)
    for text in expected:
        assert text in message, (text, message)


def run_cli(args: list[str], cwd: Path) -> tuple[int, str, float]:
    """Run the console script in `cwd` with a private cache; (exit code, stderr, wall seconds)."""
    env = {**os.environ, "LMBENCH_CACHE": str(cwd / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    env.pop("HYDRA_FULL_ERROR", None)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lmbench.cli.main", *args], cwd=cwd, env=env, text=True,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    return proc.returncode, proc.stderr, time.perf_counter() - started


@pytest.fixture(scope="module")
def console_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, float, Path]]:
    """One after the other, so each wall time is its own: (exit code, stderr, seconds, cwd)."""
    cases = {"unknown_key": ["trainer.max_stepz=3"], "missing_value": ["data=text", "trainer=smoke"]}
    out = {}
    for name, args in cases.items():
        cwd = tmp_path_factory.mktemp(name)
        out[name] = (*run_cli(args, cwd), cwd)
    return out


def test_unknown_key_exits_fast_before_any_work(console_runs) -> None:
    rc, stderr, seconds, cwd = console_runs["unknown_key"]
    assert rc == 1 and seconds < MAX_SECONDS, (rc, seconds)
    assert "Could not override 'trainer.max_stepz'" in stderr and "full_key: trainer.max_stepz" in stderr
    assert "Traceback" not in stderr
    assert not (cwd / "cache").exists() and not (cwd / "outputs").exists()


def test_missing_required_value_prints_one_line_and_records_the_run(console_runs) -> None:
    rc, stderr, seconds, cwd = console_runs["missing_value"]
    assert rc == 1 and seconds < MAX_SECONDS, (rc, seconds)
    assert stderr.strip().splitlines() == [
        "Error: data.path is required for data.source=text (a .txt file or a folder of .txt files)"]
    assert not (cwd / "cache").exists()  # no tokenizer trained, no token stream built
    (results,) = (cwd / "outputs").rglob("results.json")
    record = json.loads(results.read_text())
    assert record["status"] == "failed" and record["error"]["type"] == "CorpusError"
    assert "data.path" in record["error"]["message"] and "Traceback" in record["error"]["traceback"]


def _raise_outside_lmbench() -> None:
    int("not a number")


def test_user_errors_are_told_apart_from_bugs() -> None:
    assert is_user_error(ObjectiveConfigError("objective 'mlm': mlm_probability=2.0 ..."))
    try:
        _raise_outside_lmbench()  # a ValueError from code that is not lmbench's checks: a bug, keep the traceback
    except ValueError as exc:
        assert not is_user_error(exc)
    assert not is_user_error(KeyError("x")) and not is_user_error(RuntimeError("cuda"))
    assert is_user_error(MissingMandatoryValue("Missing mandatory value: data.path"))  # `???` left unset
    assert not is_user_error(ConfigAttributeError("Missing key foo"))  # lmbench reading a key it lacks: a bug
    register_configs(default_registry())
    with initialize_config_module(config_module="lmbench_conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["data.tokenizer.path=/no/such/tokenizer"])
    with pytest.raises(FileNotFoundError) as info:
        preflight(cfg)
    assert is_user_error(info.value) and "data.tokenizer.path='/no/such/tokenizer'" in str(info.value)
