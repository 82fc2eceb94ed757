"""Prompt templates, verbalizers, zero-shot classification and contextual calibration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmbench.eval.family import LoadedModel
from lmbench.eval.prompts import (PromptError, PromptTemplate, Verbalizer, classify, content_free_log_prior,
                                  label_scores)
from lmbench.eval.scoring import score_candidates
from test_scoring import planted_model, tiny_tokenizer

TEMPLATE = PromptTemplate("{text} was [MASK] .")
SENTIMENT = Verbalizer({"positive": ["great"], "negative": ["awful"]})
TEXTS = ["the film", "the food", "the film", "the food"]


@pytest.fixture(scope="module")
def models() -> dict[str, LoadedModel]:
    return {family: planted_model(family) for family in ("bert", "gpt2")}


@pytest.mark.parametrize("text, message", [
    ("{text} was great .", "has no \\[MASK\\] slot"),
    ("{text} was [MASK] and [MASK] .", "has 2 \\[MASK\\] slots"),
    ("{text} was [MASK] for {label} .", "unknown field\\(s\\) \\{label\\}"),
    ("{text.upper} was [MASK] .", "unknown field\\(s\\) \\{text.upper\\}"),
    ("{} was [MASK] .", "unknown field\\(s\\) \\{\\}"),
    ("It was [MASK] .", "has no input field"),
    ("{text was [MASK] .", "not a valid format string"),
])
def test_template_errors_name_the_template(text: str, message: str) -> None:
    with pytest.raises(PromptError, match=message) as info:
        PromptTemplate(text)
    assert repr(text) in str(info.value)


def test_template_render() -> None:
    assert TEMPLATE.fields == ("text",)
    assert TEMPLATE.render("the film") == "the film was [MASK] ."
    pair = PromptTemplate("{sentence} {{{span}}} is a [MASK] .")
    assert pair.fields == ("sentence", "span")
    assert pair.render({"sentence": "Paris is big.", "span": "Paris"}) == "Paris is big. {Paris} is a [MASK] ."
    with pytest.raises(PromptError, match="as a mapping"):
        pair.render("Paris is big.")
    with pytest.raises(PromptError, match="lacks field\\(s\\) \\['span'\\]"):
        pair.render({"sentence": "Paris is big."})
    with pytest.raises(PromptError, match="contains the slot marker"):
        TEMPLATE.render("the [MASK] film")


def test_verbalizer_validation() -> None:
    v = Verbalizer({"pos": ["great", " good "], "neg": "awful"})
    assert (v.labels, v.words, v.word_label) == (("pos", "neg"), ("great", "good", "awful"), (0, 0, 1))
    with pytest.raises(PromptError, match="no labels"):
        Verbalizer({})
    with pytest.raises(PromptError, match="label 'neg' has no words"):
        Verbalizer({"pos": ["great"], "neg": []})
    with pytest.raises(PromptError, match="empty word"):
        Verbalizer({"pos": ["great", "  "]})
    with pytest.raises(PromptError, match="'great' is under label 'pos' and label 'neg'"):
        Verbalizer({"pos": ["great"], "neg": ["awful", "great"]})


class Exploding(nn.Module):
    """A model that fails the test if anything reaches it."""

    def forward(self, *args, **kwargs):  # noqa: D401
        raise AssertionError("the model ran before validation finished")


def test_unknown_word_fails_before_any_scoring() -> None:
    tok = tiny_tokenizer("wordpiece")  # its alphabet has no 'z' or 'q'
    loaded = LoadedModel(model=Exploding(), tokenizer=tok, kind="encoder")
    verbalizer = Verbalizer({"positive": ["great", "zesty"], "negative": ["awful", "quirky"]})
    with pytest.raises(PromptError) as info:
        classify(loaded, TEXTS, TEMPLATE, verbalizer)
    message = str(info.value)
    assert "'zesty' (label 'positive')" in message and "'quirky' (label 'negative')" in message
    assert "'great'" not in message and "[UNK]" in message
    with pytest.raises(PromptError, match="contains the slot marker"):  # bad example: also before scoring
        classify(loaded, ["the [MASK]"], TEMPLATE, SENTIMENT)
    with pytest.raises(PromptError, match="reduce='max'"):
        classify(loaded, TEXTS, TEMPLATE, SENTIMENT, reduce="max")


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_classify_finds_planted_labels(models: dict[str, LoadedModel], family: str) -> None:
    pred, scores = classify(models[family], TEXTS, TEMPLATE, SENTIMENT)
    assert pred.tolist() == [0, 1, 0, 1]
    assert scores.shape == (4, 2)
    torch.testing.assert_close(scores.exp().sum(-1), torch.ones(4))  # log p(label | x) over the labels


@pytest.mark.parametrize("reduce", ["logsumexp", "mean"])
def test_label_score_reduces_word_scores(models: dict[str, LoadedModel], reduce: str) -> None:
    lm = models["gpt2"]
    verbalizer = Verbalizer({"positive": ["great", "film"], "negative": ["awful"]})
    words = torch.stack(score_candidates(lm, [TEMPLATE.render(t) for t in TEXTS],
                                         [["great", "film", "awful"]] * len(TEXTS)))  # (N, 3)
    pos = words[:, :2].logsumexp(-1) if reduce == "logsumexp" else words[:, :2].mean(-1)  # (N,)
    expected = torch.stack([pos, words[:, 2]], dim=1).log_softmax(-1)  # (N, 2)
    torch.testing.assert_close(label_scores(lm, TEXTS, TEMPLATE, verbalizer, reduce=reduce), expected)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_calibration_subtracts_exactly_the_content_free_log_prior(models: dict[str, LoadedModel],
                                                                   family: str) -> None:
    lm = models[family]
    _, plain = classify(lm, TEXTS, TEMPLATE, SENTIMENT)
    pred, calibrated = classify(lm, TEXTS, TEMPLATE, SENTIMENT, calibrate=True)
    log_prior = content_free_log_prior(lm, TEMPLATE, SENTIMENT)  # (C,)
    # the prior by hand: label distributions of "N/A" and "" in the template, averaged
    words = torch.stack(score_candidates(lm, ["N/A was [MASK] .", " was [MASK] ."], [["great", "awful"]] * 2))
    manual = words.softmax(-1).mean(0).log()  # (C,)
    torch.testing.assert_close(log_prior, manual, atol=1e-6, rtol=1e-6)
    assert log_prior.exp().sum().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(calibrated - plain, -log_prior.expand(4, -1), atol=1e-6, rtol=0)
    assert torch.equal(pred, calibrated.argmax(-1))
    assert pred.tolist() == [0, 1, 0, 1]  # the planted signal survives calibration
    # a different content-free set gives a different, still exact, shift
    other = content_free_log_prior(lm, TEMPLATE, SENTIMENT, content_free=["N/A"])
    _, shifted = classify(lm, TEXTS, TEMPLATE, SENTIMENT, calibrate=True, content_free=["N/A"])
    torch.testing.assert_close(shifted - plain, -other.expand(4, -1), atol=1e-6, rtol=0)
