"""fill_mask and the `lmbench-fill-mask` CLI: transformers' pipeline numbers for MLMs, any family by scoring.

Models are the planted tiny models of test_scoring (trained in a few seconds with their lmbench
objective on "the film was great ." / "the food was awful ."), saved with save_pretrained.
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from transformers import pipeline

from lmbench.cli.fill_mask import main
from lmbench.eval.family import load_scorer_model
from lmbench.eval.scoring import fill_mask, score_candidates, vocabulary_words
from test_scoring import planted_model

TEXT = "the film was [MASK] ."


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    dirs = {}
    for family in ("bert", "gpt2"):
        lm = planted_model(family)
        lm.model.save_pretrained(root / family)
        lm.tokenizer.save_pretrained(root / family)
        dirs[family] = root / family
    return dirs


@pytest.mark.parametrize("text", [TEXT, "the [MASK] was awful .", "[MASK] food was awful"])
def test_mlm_fill_mask_equals_transformers_pipeline(model_dirs: dict[str, Path], text: str) -> None:
    reference = pipeline("fill-mask", model=str(model_dirs["bert"]), tokenizer=str(model_dirs["bert"]),
                         device="cpu")(text, top_k=6)
    ours = fill_mask(load_scorer_model(model_dirs["bert"]), text, top_k=6)
    assert [c.token for c in ours] == [r["token_str"] for r in reference]
    assert [c.sequence for c in ours] == [r["sequence"] for r in reference]
    assert [c.score for c in ours] == pytest.approx([r["score"] for r in reference], abs=1e-5)


def test_planted_answers_top_the_list(model_dirs: dict[str, Path]) -> None:
    mlm, clm = (load_scorer_model(model_dirs[f]) for f in ("bert", "gpt2"))
    assert fill_mask(mlm, TEXT, top_k=1)[0].token == "great"
    assert fill_mask(mlm, "the food was [MASK] .", top_k=1)[0].token == "awful"
    top = fill_mask(clm, TEXT, top_k=3)
    assert top[0].token == "great" and top[0].sequence == "the film was great ."
    assert fill_mask(clm, "the food was [MASK] .", top_k=1)[0].token == "awful"
    # causal: a softmax over the vocabulary's whole words, each scored in place
    words = vocabulary_words(clm)
    (scores,) = score_candidates(clm, [TEXT], [words])
    probs = scores.softmax(0)
    assert [c.score for c in top] == pytest.approx(probs.sort(descending=True).values[:3].tolist(), abs=1e-6)
    # explicit candidates work for any family, MLM included (whole-word PLL, normalised over the set)
    pair = fill_mask(mlm, TEXT, top_k=2, vocab_candidates=["awful", "great"])
    (pll,) = score_candidates(mlm, [TEXT], [["great", "awful"]])
    assert [c.token for c in pair] == ["great", "awful"]
    assert [c.score for c in pair] == pytest.approx(pll.softmax(0).tolist(), abs=1e-6)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_cli_prints_top_k_table(model_dirs: dict[str, Path], family: str, capsys: pytest.CaptureFixture) -> None:
    assert main([str(model_dirs[family]), TEXT, "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    (header,) = [line for line in out.splitlines() if "┃" in line]
    assert [cell.strip() for cell in header.split("┃") if cell.strip()] == ["rank", "token", "score", "sequence"]
    rows = [[cell.strip() for cell in line.split("│") if cell.strip()] for line in out.splitlines() if "│" in line]
    assert [row[0] for row in rows] == ["1", "2", "3"] and rows[0][1] == "great"
    # the MLM's sequence is the tokenizer's decoding, as in the pipeline; the others fill the text
    assert rows[0][3] == {"bert": "the film was great.", "gpt2": "the film was great ."}[family]
    assert float(rows[0][2]) > float(rows[1][2]) >= float(rows[2][2])
    assert ("vocabulary at the mask" in out) == (family == "bert")


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_cli_json(model_dirs: dict[str, Path], family: str, capsys: pytest.CaptureFixture) -> None:
    assert main([str(model_dirs[family]), TEXT, "--top-k", "4", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["kind"] == {"bert": "encoder", "gpt2": "decoder"}[family]
    completions = record["completions"]
    assert [c["rank"] for c in completions] == [1, 2, 3, 4] and completions[0]["token"] == "great"
    scores = [c["score"] for c in completions]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    expected = fill_mask(load_scorer_model(model_dirs[family]), TEXT, top_k=4)
    assert scores == pytest.approx([c.score for c in expected], abs=1e-6)


def test_cli_candidates_flag(model_dirs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert main([str(model_dirs["gpt2"]), TEXT, "--candidates", "awful, great", "--json"]) == 0
    completions = json.loads(capsys.readouterr().out)["completions"]
    assert [c["token"] for c in completions] == ["great", "awful"]
    assert sum(c["score"] for c in completions) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("text, message", [("the film was great .", "0 [MASK] slots"),
                                           ("the [MASK] was [MASK] .", "2 [MASK] slots")])
def test_cli_text_without_one_slot_exits_2(model_dirs: dict[str, Path], text: str, message: str,
                                           capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main([str(model_dirs["gpt2"]), text])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "exactly one" in err


def test_cli_missing_model_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "nope"), TEXT])
    assert info.value.code == 2
    assert "local directory" in capsys.readouterr().err


def test_console_script_is_registered() -> None:
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "lmbench-fill-mask"]
    assert script.value == "lmbench.cli.fill_mask:main"
