"""lmbench.eval.runner: every (task, mode) of a config becomes flat `<task>/<mode>/<metric>` scores whose
numbers are exactly those of the mode functions called directly (probe, fine-tuning, zero-shot with
several templates and calibration, zero-shot NER), and every check fires before the first score."""

from __future__ import annotations

import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import lmbench.eval.runner as runner
from lmbench.config import TokenizerConfig
from lmbench.data.tokenizer import train_tokenizer
from lmbench.eval.family import load_scorer_model
from lmbench.eval.finetune import FinetuneConfig, classification_scores, finetune_classification
from lmbench.eval.probe import ProbeConfig, probe_classification, probe_ner
from lmbench.eval.prompts import PromptTemplate, Verbalizer, classify
from lmbench.objectives.base import TokenInfo
from lmbench.tasks import builtin_task
from lmbench.tasks.config import TaskConfig, TaskConfigError
from lmbench.testing.training import micro_backbone

TEMPLATES = ["{text} It was [MASK] .", "{text} In short, it was [MASK] ."]
VERBALIZER = {"negative": ["terrible", "bad"], "positive": ["great"]}
SMALL = dict(n_train=48, n_dev=24, n_test=24)
PROBE = dict(l2s=[1e-3, 1e-1], max_iter=100)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> dict[str, Path]:
    """kind -> save_pretrained dir of a random-init micro backbone with a WordPiece world tokenizer."""
    texts = [e.text for e in builtin_task("sentiment", "train", 600, 0)]
    texts += [" ".join(e.tokens) for e in builtin_task("ner", "train", 400, 0)]
    tok = train_tokenizer(TokenizerConfig(vocab_size=600, extra_special_tokens=[]),
                          SimpleNamespace(iter_documents=lambda: iter(texts)))
    info = TokenInfo.from_tokenizer(tok)
    dirs = {}
    for kind in ("encoder", "decoder"):
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(kind)
        micro_backbone(kind, info, 128).save_pretrained(path)
        tok.save_pretrained(path)
        dirs[kind] = path
    return dirs


def sentiment(**overrides) -> TaskConfig:
    base = dict(type="classification", source="builtin", builtin="sentiment", modes=["probe", "zeroshot"],
                probe=PROBE, templates=TEMPLATES,
                verbalizer=VERBALIZER, **SMALL)
    return TaskConfig(**{**base, **overrides})


def ner(**overrides) -> TaskConfig:
    base = dict(type="ner", source="builtin", modes=["probe", "zeroshot"], **SMALL, probe=PROBE,
                templates=["{sentence} {span} is a type of [MASK] .", "{sentence} So {span} is a [MASK] ."],
                verbalizer={"PER": ["person"], "LOC": ["city"], "ORG": ["company"], "MISC": ["product"]},
                none_words=["thing"])
    base["zeroshot"] = dict(max_examples=6)
    return TaskConfig(**{**base, **overrides})


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_scores_are_the_mode_functions_numbers(model_dirs: dict[str, Path], kind: str) -> None:
    model_dir = model_dirs[kind]
    tasks = {"sentiment": sentiment(zeroshot=dict(calibrate=True)), "ner": ner()}
    details: dict = {}
    scores = runner.evaluate_tasks(model_dir, tasks, seed=0, device="cpu", details=details)
    assert set(scores) == {
        "sentiment/probe/acc", "sentiment/probe/macro_f1", "sentiment/probe/dev_acc",
        "sentiment/zeroshot/acc", "sentiment/zeroshot/acc_std", "sentiment/zeroshot/macro_f1",
        "sentiment/zeroshot/acc_calibrated", "sentiment/zeroshot/acc_calibrated_std",
        "sentiment/zeroshot/macro_f1_calibrated",
        "ner/probe/f1", "ner/probe/precision", "ner/probe/recall", "ner/probe/dev_f1",
        "ner/zeroshot/f1", "ner/zeroshot/f1_std", "ner/zeroshot/precision", "ner/zeroshot/recall"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())

    splits = {s: builtin_task("sentiment", s, n, 0) for s, n in (("train", 48), ("dev", 24), ("test", 24))}
    probe = probe_classification(model_dir, splits["train"], splits["dev"], splits["test"], ProbeConfig(**PROBE))
    assert scores["sentiment/probe/acc"] == probe["test"] and scores["sentiment/probe/dev_acc"] == probe["dev_best"]
    assert scores["sentiment/probe/macro_f1"] == probe["test_metrics"]["macro_f1"]
    tagged = {s: builtin_task("ner", s, n, 0) for s, n in (("train", 48), ("dev", 24), ("test", 24))}
    assert scores["ner/probe/f1"] == probe_ner(model_dir, *tagged.values(), ProbeConfig(**PROBE))["test"]

    loaded = load_scorer_model(model_dir)
    verbalizer = Verbalizer(VERBALIZER)
    gold = torch.tensor([verbalizer.labels.index(e.label) for e in splits["test"]])
    per_template = []
    for text in TEMPLATES:
        pred, _ = classify(loaded, [e.text for e in splits["test"]], PromptTemplate(text), verbalizer, calibrate=True)
        per_template.append(classification_scores(pred, gold, 2)["acc"])
    assert scores["sentiment/zeroshot/acc_calibrated"] == pytest.approx(statistics.fmean(per_template), abs=1e-12)
    assert scores["sentiment/zeroshot/acc_calibrated_std"] == pytest.approx(statistics.stdev(per_template), abs=1e-12)
    rows = details["ner"]["modes"]["zeroshot"]["templates"]
    assert len(rows) == 2 and scores["ner/zeroshot/f1"] == pytest.approx(statistics.fmean(r["f1"] for r in rows))
    assert details["sentiment"]["sizes"] == {"train": 48, "dev": 24, "test": 24}
    assert details["sentiment"]["modes"]["probe"]["seconds"] > 0


def test_finetune_reports_dev_best_median_and_per_seed_test(model_dirs: dict[str, Path]) -> None:
    model_dir = model_dirs["encoder"]
    settings = dict(lrs=[1e-3, 3e-3], seeds=[0, 1], epochs=1, batch_size=16)
    scores = runner.evaluate_tasks(model_dir, {"s": sentiment(modes=["finetune"], finetune=settings)}, device="cpu")
    assert set(scores) == {"s/finetune/acc", "s/finetune/macro_f1", "s/finetune/dev_acc", "s/finetune/dev_acc_median"}
    splits = [builtin_task("sentiment", s, n, 0) for s, n in (("train", 48), ("dev", 24), ("test", 24))]
    direct = finetune_classification(model_dir, *splits, FinetuneConfig(**settings))
    best = [r for r in direct["grid"] if r["lr"] == direct["best_lr"]]
    assert scores["s/finetune/acc"] == [r["test"]["acc"] for r in best]  # one test score per fine-tuning seed
    assert scores["s/finetune/dev_acc"] == direct["dev_best"]
    assert scores["s/finetune/dev_acc_median"] == direct["dev_median"]


def test_unrepresentable_verbalizer_word_fails_before_any_scoring(model_dirs: dict[str, Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    called = []
    monkeypatch.setattr(runner, "MODE_RUNNERS", {m: lambda *a, m=m: called.append(m) for m in runner.MODE_RUNNERS})
    tasks = {"first": sentiment(modes=["probe"]),
             "second": sentiment(verbalizer={"negative": ["terrible"], "positive": ["ßœ∂"]})}
    with pytest.raises(TaskConfigError, match=r"task\.second\.verbalizer: .*'ßœ∂' \(label 'positive'\).*unknown"):
        runner.evaluate_tasks(model_dirs["encoder"], tasks, device="cpu")
    assert called == []  # not even the first task's probe ran


def test_finished_modes_survive_a_failing_one(model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args):
        raise RuntimeError("zero-shot broke")

    monkeypatch.setitem(runner.MODE_RUNNERS, "zeroshot", broken)
    record: dict = {"model_dir": str(model_dirs["encoder"])}
    tasks = runner.check_tasks({"s": sentiment()})
    with pytest.raises(RuntimeError, match="zero-shot broke"):
        runner.evaluate_into(record, None, None, tasks, device="cpu")
    assert set(record["scores"]) == {"s/probe/acc", "s/probe/macro_f1", "s/probe/dev_acc"}
    assert record["eval"]["seconds"] > 0


def test_pet_scores_are_lists_per_seed(model_dirs: dict[str, Path]) -> None:
    from lmbench.eval.pet import PETConfig, pet_finetune

    settings = dict(k=4, seeds=[0, 1], lr=1e-3, steps=2, batch_size=4)
    scores = runner.evaluate_tasks(model_dirs["encoder"], {"s": sentiment(modes=["pet"], pet=settings)}, device="cpu")
    splits = [builtin_task("sentiment", s, n, 0) for s, n in (("train", 48), ("dev", 24), ("test", 24))]
    direct = pet_finetune(model_dirs["encoder"], *splits, TEMPLATES, VERBALIZER, PETConfig(**settings))
    assert scores == {"s/pet/acc": direct["test/accuracy"], "s/pet/macro_f1": direct["test/macro_f1"],
                      "s/pet/dev_acc": direct["dev/accuracy"]}
    assert len(scores["s/pet/acc"]) == 2  # one per PET seed; the leaderboard averages them per pretraining seed


def test_unsaved_model_is_evaluated_from_a_temporary_copy(model_dirs: dict[str, Path]) -> None:
    """save_model=false: lmbench evaluates the in-memory model through a temporary save_pretrained folder."""
    loaded = load_scorer_model(model_dirs["decoder"])
    tasks = runner.check_tasks({"s": sentiment(zeroshot=dict(max_examples=8))})
    record: dict = {"model_dir": None}
    runner.evaluate_into(record, loaded.model, loaded.tokenizer, tasks, device="cpu")
    assert record["scores"] == runner.evaluate_tasks(model_dirs["decoder"], tasks, device="cpu")
    assert set(record["eval"]["tasks"]["s"]["modes"]) == {"probe", "zeroshot"}
