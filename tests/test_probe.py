"""Linear probes (downstream mode 2): the L-BFGS logistic regression against scipy, oracle features
through the public pipeline, and probes on frozen random-init backbones of each kind.

A probe on an oracle feature (one that encodes the label) must reach 100%: that shows the fit, the
dev selection and the mapping of word predictions back to sentences are right, independently of
how good a tiny model's features are. On real frozen features of tiny random-init models the probe
must still beat the majority class on the built-in sentiment set (mean pooling of a random
transformer is a random projection of a bag of embeddings).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import log_softmax

import lmbench.eval.probe as probe_module
from lmbench.config import TokenizerConfig
from lmbench.data.tokenizer import train_tokenizer
from lmbench.eval.encode import IGNORE, Encoded
from lmbench.eval.probe import ProbeConfig, fit_probe, probe_classification, probe_ner
from lmbench.tasks import TaskDataError, TextExample, builtin_task
from lmbench.testing.training import save_micro_backbones

KINDS = ("encoder", "decoder", "encoder-decoder")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kind -> a save_pretrained directory of a random-init micro backbone and a BPE world tokenizer."""
    torch.set_num_threads(1)
    texts = [e.text for e in builtin_task("sentiment", "train", 2000, 0)]
    texts += [" ".join(e.tokens) for e in builtin_task("ner", "train", 1000, 0)]
    cfg = TokenizerConfig(type="bpe", vocab_size=1000, min_frequency=2, extra_special_tokens=[])
    tok = train_tokenizer(cfg, SimpleNamespace(iter_documents=lambda: iter(texts)))
    return save_micro_backbones(tok, KINDS, tmp_path_factory.mktemp)


@pytest.fixture(scope="module")
def sentiment() -> tuple[list[TextExample], ...]:
    return tuple(builtin_task("sentiment", split, n, 0) for split, n in (("train", 800), ("dev", 200), ("test", 200)))


def test_fit_probe_reaches_the_scipy_optimum() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=gen) * torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0, 1.0]) + 4.0  # (N, H)
    noise = torch.randn(300, generator=gen)  # (N,)
    y = (x[:, 0] + 0.5 * x[:, 1] + noise > 6.0).long() + (x[:, 2] > 4.3).long()  # (N,) 3 classes
    l2 = 0.05
    probe = fit_probe(x, y, 3, l2)
    z = ((x.double() - probe.mean) / probe.std).numpy()  # standardised as the probe does
    yn = y.numpy()

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:18].reshape(3, 6), theta[18:]
        logp = log_softmax(z @ w.T + b, axis=1)
        p = np.exp(logp)
        p[np.arange(len(yn)), yn] -= 1.0
        grad_w = p.T @ z / len(yn) + l2 * w
        return -logp[np.arange(len(yn)), yn].mean() + 0.5 * l2 * (w ** 2).sum(), np.concatenate([grad_w.ravel(),
                                                                                                 p.mean(0)])

    ref = minimize(objective, np.zeros(21), jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15})
    ours = np.concatenate([probe.weight.numpy().ravel(), probe.bias.numpy()])
    assert objective(ours)[0] == pytest.approx(ref.fun, abs=1e-9)
    ref_prob = torch.from_numpy(np.exp(log_softmax(z @ ref.x[:18].reshape(3, 6).T + ref.x[18:], axis=1)))
    torch.testing.assert_close(probe.logits(x).softmax(-1), ref_prob, atol=1e-5, rtol=0)


def _oracle(labels: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """Features that encode the label (a one-hot block) plus independent noise dimensions. (N, 8 + C)"""
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([torch.nn.functional.one_hot(labels, num_classes).float() * 2.0,
                      torch.randn(labels.shape[0], 8, generator=gen)], 1)


def test_oracle_features_give_a_perfect_classification_probe(model_dirs: dict[str, Path], sentiment: tuple,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls = iter(range(100))
    monkeypatch.setattr(probe_module, "sequence_features",
                        lambda loaded, data, pooling, batch: _oracle(data.labels, 2, next(calls)))
    out = probe_classification(model_dirs["encoder"], *sentiment, ProbeConfig(l2s=(1e-3, 1e-1)))
    assert out["test"] == 1.0 and out["dev_best"] == 1.0 and out["test_metrics"]["macro_f1"] == 1.0
    assert out["best_l2"] == 1e-3 and [row["l2"] for row in out["grid"]] == [1e-3, 1e-1]


def test_oracle_word_features_give_perfect_span_f1(model_dirs: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def word_oracle(loaded: object, data: Encoded, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        where = ((data.first_piece >= 0) & (data.word_tags != IGNORE)).nonzero()  # (M, 2)
        gold = data.word_tags[where[:, 0], where[:, 1]]  # (M,)
        return _oracle(gold, 16, 0), where  # 16 >= the number of tags

    monkeypatch.setattr(probe_module, "word_features", word_oracle)
    train, dev, test = (builtin_task("ner", split, n, 0) for split, n in (("train", 300), ("dev", 100), ("test", 100)))
    out = probe_ner(model_dirs["encoder"], train, dev, test, ProbeConfig(l2s=(1e-3,)))
    assert out["test"] == 1.0 and out["test_metrics"]["precision"] == 1.0 and out["test_metrics"]["recall"] == 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_mean_pooled_probe_beats_majority(model_dirs: dict[str, Path], sentiment: tuple, kind: str) -> None:
    out = probe_classification(model_dirs[kind], *sentiment, ProbeConfig(pooling="mean"))
    assert out["kind"] == kind and out["pooling"] == "mean" and out["test_majority"] == pytest.approx(0.5)
    assert out["test"] > out["test_majority"] + 0.08, out  # measured 0.68 / 0.665 / 0.64 (random init)
    assert out["best_l2"] in ProbeConfig().l2s and out["dev_best"] >= out["dev_median"]
    assert [row["l2"] for row in out["grid"]] == list(ProbeConfig().l2s)


def test_default_pooling_probe_and_determinism(model_dirs: dict[str, Path], sentiment: tuple) -> None:
    cfg = ProbeConfig(l2s=(1e-2,))
    a = probe_classification(model_dirs["decoder"], *sentiment, cfg)
    b = probe_classification(model_dirs["decoder"], *sentiment, cfg)
    assert a["pooling"] == "last" and a["grid"] == b["grid"]
    assert 0.4 < a["test"] <= 1.0


def test_ner_probe_on_frozen_features(model_dirs: dict[str, Path]) -> None:
    train, dev, test = (builtin_task("ner", split, n, 0) for split, n in (("train", 300), ("dev", 100), ("test", 100)))
    out = probe_ner(model_dirs["encoder-decoder"], train, dev, test, ProbeConfig(l2s=(1e-3, 1e-1), max_iter=100))
    assert out["tags"][0] == "O" and out["kind"] == "encoder-decoder"
    assert out["test"] > 0.05, out  # an all-O tagger scores 0
    assert 0 <= out["test_metrics"]["precision"] <= 1 and set(out["test_metrics"]) >= {"f1/PER", "f1/LOC"}


def test_unseen_test_label_raises(model_dirs: dict[str, Path]) -> None:
    train = [TextExample("good", "positive"), TextExample("bad", "negative")]
    with pytest.raises(TaskDataError, match=r"sst.tsv: test label\(s\) \['neutral'\] never occur"):
        probe_classification(model_dirs["encoder"], train, train, [TextExample("ok", "neutral")], source="sst.tsv")
