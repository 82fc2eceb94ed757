"""The console scripts as a user runs them: lmbench (single run, sweep, --help, --cfg) and lmbench-plugins.

The sweep test is the end-to-end proof of the core: three objectives on three backbone kinds train on
the built-in corpus, write results.json, and save models that plain `transformers` loads back with the
same weights the run ended with (fill-mask pipeline for MLM).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SMALL = ["data.builtin_documents=300", "data.tokenizer.vocab_size=800", "data.seq_len=64", "data.batch_size=8",
         "trainer=smoke", "task=[]", "trainer.checkpoint=true"]


def run_cli(args: list[str], cwd: Path, cache: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "LMBENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "lmbench.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    proc = run_cli(["-m", "objective=mlm,clm,t5_span", f"hydra.sweep.dir={root}/multirun", *SMALL],
                   cwd=root, cache=root / "cache")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "multirun"


def job_dir(sweep: Path, objective: str) -> Path:
    (match,) = [d for d in sweep.iterdir() if d.is_dir() and f"_{objective}_" in d.name]
    return match


@pytest.mark.parametrize("objective,kind", [("mlm", "encoder"), ("clm", "decoder"), ("t5_span", "encoder-decoder")])
def test_sweep_records_every_job(sweep: Path, objective: str, kind: str) -> None:
    results = json.loads((job_dir(sweep, objective) / "results.json").read_text())
    assert results["status"] == "completed" and results["error"] is None
    assert results["objective"]["name"] == objective and results["backbone"]["kind"] == kind
    assert results["steps"] == 4
    assert results["tokens_seen"] == 4 * 8 * results["data"]["block_len"]
    assert 0 < results["supervised_tokens"] <= results["tokens_seen"] * 1.5
    assert results["backbone"]["parameters"]["total"] > 10_000
    for key in ("train_loss", "val_loss", "wall_time_s", "config_hash", "tokenizer_hash"):
        assert results[key], key
    assert (job_dir(sweep, objective) / "logs" / "metrics.csv").is_file()
    audit = results["audit"]
    assert audit["passed"] and audit["batches"] == 64 and audit["stats"], audit


def test_sweep_shares_one_tokenizer_and_token_stream(sweep: Path) -> None:
    records = [json.loads((job_dir(sweep, o) / "results.json").read_text()) for o in ("mlm", "clm", "t5_span")]
    assert len({r["tokenizer_hash"] for r in records}) == 1
    assert len({(r["data"]["fingerprint"], r["data"]["n_tokens"], r["data"]["val_tokens"]) for r in records}) == 1
    assert len({r["config_hash"] for r in records}) == 3


def saved_weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}


@pytest.mark.parametrize("objective,auto_class", [
    ("mlm", "AutoModelForMaskedLM"), ("clm", "AutoModelForCausalLM"), ("t5_span", "AutoModelForSeq2SeqLM")])
def test_saved_model_loads_through_transformers_with_trained_weights(sweep: Path, objective: str, auto_class: str) -> None:
    import transformers

    run = job_dir(sweep, objective)
    model = getattr(transformers, auto_class).from_pretrained(run / "model")
    trained = saved_weights(run)
    state = model.state_dict()
    for name, tensor in trained.items():
        if name in state:
            torch.testing.assert_close(state[name], tensor, msg=name)
    assert len(set(trained) & set(state)) >= len(state) * 0.9


def test_fill_mask_pipeline_on_mlm_run(sweep: Path) -> None:
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(job_dir(sweep, "mlm") / "model"), device="cpu")
    out = fill("the film was [MASK] .", top_k=5)
    assert len(out) == 5 and all(0.0 <= o["score"] <= 1.0 for o in out)
    assert [o["score"] for o in out] == sorted((o["score"] for o in out), reverse=True)
    assert all("[MASK]" not in o["sequence"] for o in out)


def test_help_and_cfg_behave_like_hydra(tmp_path: Path) -> None:
    help_out = run_cli(["--help"], cwd=tmp_path, cache=tmp_path / "c")
    assert help_out.returncode == 0
    for text in ("lmbench", "objective:", "mlm", "t5_span", "bart_infill", "backbone:", "decoder_tiny"):
        assert text in help_out.stdout, text
    cfg_out = run_cli(["--cfg", "job", "objective=clm", "backbone=decoder_tiny"], cwd=tmp_path, cache=tmp_path / "c")
    assert cfg_out.returncode == 0 and "name: clm" in cfg_out.stdout and "kind: decoder" in cfg_out.stdout
    assert not (tmp_path / "c").exists() and not (tmp_path / "outputs").exists()


def test_cli_bad_input_exits_nonzero_with_message(tmp_path: Path) -> None:
    proc = run_cli(["objective=mlm", "objective.mlm_probability=1.5"], cwd=tmp_path, cache=tmp_path / "c")
    assert proc.returncode != 0
    assert "mlm_probability" in proc.stderr and "[0, 1]" in proc.stderr
    (results,) = list((tmp_path / "outputs").rglob("results.json"))
    record = json.loads(results.read_text())
    assert record["status"] == "failed" and "mlm_probability" in record["error"]["message"]


def test_lmbench_plugins_lists_builtins() -> None:
    proc = subprocess.run([sys.executable, "-m", "lmbench.cli.plugins", "--json"], capture_output=True, text=True)
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert {"mlm", "clm", "prefix_lm", "t5_span", "bart_infill"} <= set(rows)
    assert rows["mlm"]["package"] == "lmbench" and rows["mlm"]["backbone_kinds"] == ["encoder"]
    assert rows["mlm"]["config"]["mlm_probability"] == 0.15
    assert rows["t5_span"]["backbone_kinds"] == ["encoder-decoder"]
    table = subprocess.run([sys.executable, "-m", "lmbench.cli.plugins"], capture_output=True, text=True)
    broken = any(r["status"] != "ok" for r in rows.values())  # a third-party plugin on this machine may be
    assert table.returncode == int(broken) and "mlm_probability=0.15" in table.stdout


def test_lmbench_plugins_shows_last_audit_per_objective(sweep: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    import shutil

    shutil.copytree(job_dir(sweep, "mlm"), runs / "old_mlm", ignore=shutil.ignore_patterns("model", "checkpoints"))
    newer = json.loads((runs / "old_mlm" / "results.json").read_text())
    newer.update(started_at="9999-01-01T00:00:00+00:00", audit={**newer["audit"], "passed": False})
    (runs / "new_mlm").mkdir()
    (runs / "new_mlm" / "results.json").write_text(json.dumps(newer))
    proc = subprocess.run([sys.executable, "-m", "lmbench.cli.plugins", "--json", "--runs", str(runs)],
                          capture_output=True, text=True)
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["mlm"]["last_audit"]["passed"] is False and rows["mlm"]["last_audit"]["run"].endswith("new_mlm")
    assert rows["clm"]["last_audit"] is None
    table = subprocess.run([sys.executable, "-m", "lmbench.cli.plugins", "--runs", str(sweep)], capture_output=True, text=True)
    assert "last audit" in table.stdout and "passed" in table.stdout
