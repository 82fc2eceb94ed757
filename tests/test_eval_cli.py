"""Downstream evaluation end to end: `lmbench ... task=[sentiment,ner]` pretrains and writes the scores into
results.json, and `lmbench-eval` on the saved model writes the same keys and numbers (--help, errors,
--update-results for the leaderboard)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmbench.cli.eval import main as eval_main
from lmbench.config import compose_config
from lmbench.pretrain import run_pretraining
from lmbench.results import empty_record

PRETRAIN = ["data.builtin_documents=300", "data.tokenizer.vocab_size=800", "data.seq_len=64", "data.batch_size=8",
            "trainer=smoke", "audit_batches=2"]
TASKS = ["task=[sentiment,ner]", "task.sentiment.n_train=40", "task.sentiment.n_dev=20", "task.sentiment.n_test=20",
         "task.ner.n_train=40", "task.ner.n_dev=20", "task.ner.n_test=20", "task.ner.zeroshot.max_examples=4",
         "task.sentiment.probe.max_iter=50", "task.ner.probe.max_iter=50"]
EXPECTED = {
    "sentiment/probe/acc", "sentiment/probe/macro_f1", "sentiment/probe/dev_acc",
    "sentiment/zeroshot/acc", "sentiment/zeroshot/acc_std", "sentiment/zeroshot/macro_f1",
    "sentiment/zeroshot/acc_calibrated", "sentiment/zeroshot/acc_calibrated_std",
    "sentiment/zeroshot/macro_f1_calibrated",  # the preset calibrates (content-free prior removed)
    "ner/probe/f1", "ner/probe/precision", "ner/probe/recall", "ner/probe/dev_f1",
    "ner/zeroshot/f1", "ner/zeroshot/precision", "ner/zeroshot/recall",  # one template: no spread
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> Path:
    """One small pretraining run (mlm, tiny encoder) that evaluates sentiment and ner afterwards."""
    root = tmp_path_factory.mktemp("eval_run")
    cfg = compose_config([*PRETRAIN, *TASKS, f"data.cache_dir={root / 'cache'}", f"output_dir={root / 'run'}"])
    run_pretraining(cfg, empty_record())
    return root / "run"


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_pretraining_run_writes_scores_into_results(run: Path) -> None:
    record = read(run / "results.json")
    assert record["status"] == "completed"
    assert set(record["scores"]) == EXPECTED
    assert all(0.0 <= v <= 1.0 for v in record["scores"].values())
    tasks = record["eval"]["tasks"]
    assert tasks["sentiment"]["sizes"] == {"train": 40, "dev": 20, "test": 20}
    assert tasks["ner"]["modes"]["zeroshot"]["n_examples"] == 4
    assert len(tasks["sentiment"]["modes"]["zeroshot"]["templates"]) == 3  # the preset's three templates
    assert record["eval"]["seconds"] > 0


def test_lmbench_eval_on_the_saved_model_gives_the_same_scores(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    assert eval_main([str(run / "model"), *TASKS, "--device", "cpu", "--output", str(out)]) == 0
    evaluated = read(out)
    assert evaluated["kind"] == "encoder" and evaluated["family"] == "bert"
    trained = read(run / "results.json")["scores"]
    assert evaluated["scores"] == {k: trained[k] for k in EXPECTED}  # same model, same tasks: same numbers
    assert set(evaluated["tasks"]) == {"sentiment", "ner"} and evaluated["tasks"]["ner"]["n_train"] == 40


def test_update_results_adds_scores_for_the_leaderboard(run: Path, tmp_path: Path) -> None:
    from lmbench.board.collect import collect_runs

    before = read(run / "results.json")["scores"]
    overrides = ["task=[topic]", "task.topic.n_train=40", "task.topic.n_dev=20", "task.topic.n_test=20",
                 "task.topic.modes=[probe]", "task.topic.probe.max_iter=50"]
    assert eval_main([str(run / "model"), *overrides, "--device", "cpu", "--update-results", "--json"]) == 0
    after = read(run / "results.json")
    assert set(after["scores"]) == set(before) | {"topic/probe/acc", "topic/probe/macro_f1", "topic/probe/dev_acc"}
    assert {k: after["scores"][k] for k in before} == before and after["status"] == "completed"
    assert read(run / "eval_results.json")["scores"].keys() == {"topic/probe/acc", "topic/probe/macro_f1",
                                                                 "topic/probe/dev_acc"}
    (board_run,), failed, _ = collect_runs(run)
    assert not failed and board_run.metric("topic/probe/acc") == after["scores"]["topic/probe/acc"]


def test_help_names_presets_modes_and_output() -> None:
    proc = subprocess.run([sys.executable, "-m", "lmbench.cli.eval", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    for text in ("MODEL_DIR", "task=[", "sentiment", "conll2003", "sst2", "LMBENCH_DATA",
                 "finetune, probe, zeroshot, pet",
                 "eval_results.json", "--update-results", "<task>/<mode>/<metric>"):
        assert text in proc.stdout, text


@pytest.mark.parametrize("args,message", [
    (["task=[sentiment,nope]"], r"unknown task\(s\) \['nope'\]; allowed values: conll2003, ner, sentiment, sst2"),
    (["task.ner.modes=[pet]"], r"task\.ner\.modes has 'pet'.*allowed values: finetune, probe, zeroshot"),
    (["task.sentiment.templates=[\"{text} no slot\"]"], r"task\.sentiment\.templates\[0\].*no \[MASK\] slot"),
    (["task=[]"], r"no task selected"),
])
def test_bad_input_exits_2_naming_the_key(run: Path, capsys: pytest.CaptureFixture, args: list[str],
                                          message: str) -> None:
    import re

    assert eval_main([str(run / "model"), *args]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_missing_model_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert eval_main([str(tmp_path / "nowhere"), "task=[sentiment]", "task.sentiment.n_train=8"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_main([str(tmp_path), "--update-results"])  # not <run>/model of an lmbench run
