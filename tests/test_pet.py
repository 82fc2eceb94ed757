"""Prompt-based few-shot fine-tuning (PET / LM-BFF): differentiable scores, k-shot draws, training, errors.

Tiny randomly initialised backbones of each kind (64 wide, 2 layers) with a BPE tokenizer trained on the
built-in world are saved with save_pretrained. References: the training scores equal the zero-shot
scorer's `prompts.label_scores` (multi-piece words included), the k-shot draw is counted per class, and
PET on the built-in sentiment set beats the majority-class baseline on dev.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmbench.eval import pet
from lmbench.eval.family import load_scorer_model
from lmbench.eval.pet import PETConfig, build_rows, pet_finetune, prompt_label_scores, sample_k_shot
from lmbench.eval.prompts import PromptError, PromptTemplate, Verbalizer, label_scores
from lmbench.objectives.base import TokenInfo
from lmbench.tasks import TextExample, builtin_task
from lmbench.testing.training import micro_backbone, save_micro_backbones
from test_finetune import KINDS, world_tokenizer

TEMPLATES = ["{text} It was [MASK] ."]
VERBALIZER = {"negative": ["awful"], "positive": ["great"]}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> dict[str, Path]:
    """kind -> a save_pretrained directory (model + tokenizer) of a random-init micro backbone."""
    tok = world_tokenizer()
    return save_micro_backbones(tok, KINDS, tmp_path_factory.mktemp)


@pytest.fixture(scope="module")
def sentiment() -> tuple[list[TextExample], ...]:
    return tuple(builtin_task("sentiment", split, n, 0) for split, n in (("train", 400), ("dev", 200), ("test", 100)))


@pytest.mark.parametrize("kind", KINDS)
def test_training_scores_equal_zero_shot_label_scores(model_dirs: dict[str, Path], sentiment: tuple, kind: str) -> None:
    loaded = load_scorer_model(model_dirs[kind])
    template = PromptTemplate(TEMPLATES[0])
    verbalizer = Verbalizer({"negative": ["awful", "dullness"], "positive": ["great", "good"]})
    assert len(loaded.tokenizer.tokenize(" dullness")) > 1  # a multi-piece word is scored whole
    texts = [e.text for e in sentiment[0][:6]]
    rows = build_rows(loaded, texts, template, verbalizer)
    order = torch.tensor([4, 0, 5, 2])  # any subset, any order
    ours = prompt_label_scores(loaded, rows, order, verbalizer)  # (4, C)
    reference = label_scores(loaded, [texts[i] for i in order.tolist()], template, verbalizer)  # (4, C)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    if kind == "encoder":  # one-piece words of one example share one input row: 3 rows + the pieces of dullness
        assert rows.unique[rows.example == 0].unique().numel() == 1 + len(loaded.tokenizer.tokenize(" dullness"))
    ours.sum().backward()  # the scores are differentiable down to the embeddings
    grad = loaded.model.get_input_embeddings().weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0


def test_k_shot_draws_exactly_k_per_class() -> None:
    labels = ["a"] * 30 + ["b"] * 20 + ["c"] * 16
    classes = ("c", "a", "b")
    draw = sample_k_shot(labels, classes, 16, torch.Generator().manual_seed(0))
    assert draw.numel() == 48 and draw.unique().numel() == 48
    assert [labels[i] for i in draw.tolist()] == ["c"] * 16 + ["a"] * 16 + ["b"] * 16
    again = sample_k_shot(labels, classes, 16, torch.Generator().manual_seed(0))
    other = sample_k_shot(labels, classes, 16, torch.Generator().manual_seed(1))
    assert torch.equal(draw, again) and not torch.equal(draw, other)
    assert set(draw[:16].tolist()) == set(range(50, 66))  # class c has exactly 16: all of them
    with pytest.raises(ValueError, match="pet.k=17 but train has only 16 example\\(s\\) of label 'c'"):
        sample_k_shot(labels, classes, 17, torch.Generator().manual_seed(0))


def test_pet_beats_majority_and_lowers_the_loss(model_dirs: dict[str, Path], sentiment: tuple) -> None:
    train, dev, test = sentiment
    torch.manual_seed(123)
    state = torch.get_rng_state()
    out = pet_finetune(model_dirs["encoder"], train, dev, test, TEMPLATES, VERBALIZER, PETConfig(steps=100))
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert out["majority_dev/accuracy"] == pytest.approx(0.5)
    for key in ("dev/accuracy", "dev/macro_f1", "test/accuracy", "test/macro_f1", "train/loss_before",
                "train/loss_after"):
        assert len(out[key]) == 3, key  # one value per seed
    dev_acc = torch.tensor(out["dev/accuracy"])
    # measured: 0.575 / 0.600 / 0.615 from random init (zero-shot 0.53, majority 0.50)
    assert bool((dev_acc > 0.5).all()) and float(dev_acc.mean()) > 0.55, out
    assert all(after < 0.2 * before for before, after in zip(out["train/loss_before"], out["train/loss_after"])), out
    assert 0.3 < out["zero_shot_dev/accuracy"] < 0.7 and len(set(out["dev/accuracy"])) > 1  # seeds differ
    assert all(isinstance(v, float) or all(isinstance(x, float) for x in v) for v in out.values())


def test_errors_before_any_training(model_dirs: dict[str, Path], sentiment: tuple, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("training started before validation finished")

    monkeypatch.setattr(pet, "train_pet", no_training)
    train, dev, test = sentiment
    model = model_dirs["encoder"]
    with pytest.raises(PromptError, match="pet.templates\\[1\\]: .*has no \\[MASK\\] slot"):
        pet_finetune(model, train, dev, test, [TEMPLATES[0], "{text} It was good ."], VERBALIZER)
    with pytest.raises(PromptError, match="pet.templates\\[0\\]=.*has fields \\['text', 'span'\\]"):
        pet_finetune(model, train, dev, test, ["{text} {span} was [MASK] ."], VERBALIZER)
    with pytest.raises(PromptError, match="pet: dev label\\(s\\) \\['neutral'\\] have no words in pet.verbalizer"):
        pet_finetune(model, train, [*dev, TextExample("It was fine.", "neutral")], test, TEMPLATES, VERBALIZER)
    wordpiece = tmp_path / "wordpiece"  # byte-level BPE spells anything; WordPiece has [UNK]
    tok = world_tokenizer("wordpiece")
    micro_backbone("encoder", TokenInfo.from_tokenizer(tok), 128).save_pretrained(wordpiece)
    tok.save_pretrained(wordpiece)
    with pytest.raises(PromptError, match="'gréat☃' \\(label 'positive'\\) map to the unknown token"):
        pet_finetune(wordpiece, train, dev, test, TEMPLATES, {"negative": ["awful"], "positive": ["gréat☃"]})
    with pytest.raises(PromptError, match="pet.verbalizer: .*'great' is under label 'negative' and label 'positive'"):
        pet_finetune(model, train, dev, test, TEMPLATES, {"negative": ["great"], "positive": ["great"]})
    with pytest.raises(ValueError, match="pet.k=300 but train has only"):
        pet_finetune(model, train, dev, test, TEMPLATES, VERBALIZER, PETConfig(k=300))
    with pytest.raises(ValueError, match="pet.lr=0"):
        PETConfig(lr=0)
    with pytest.raises(ValueError, match="pet.seeds is empty"):
        PETConfig(seeds=())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["decoder", "encoder-decoder"])
def test_pet_beats_majority_other_kinds(model_dirs: dict[str, Path], sentiment: tuple, kind: str) -> None:
    train, dev, _ = sentiment
    out = pet_finetune(model_dirs[kind], train, dev, None, TEMPLATES, VERBALIZER, PETConfig(steps=100))
    # measured: decoder 0.605 / 0.565 / 0.590, encoder-decoder 0.610 / 0.510 / 0.600
    assert sum(out["dev/accuracy"]) / 3 > 0.55 and "test/accuracy" not in out, out
    assert all(after < 0.2 * before for before, after in zip(out["train/loss_before"], out["train/loss_after"]))
