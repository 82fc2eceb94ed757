"""lmbench.board.stats against scipy and hand-computed references: bootstrap CIs, paired tests, Holm."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from lmbench.board.stats import (Comparison, Estimate, apply_holm, bootstrap_ci, compare, holm, lower_is_better,
                                 match_seeds, min_attainable_p, paired_permutation_pvalue)


def test_bootstrap_ci_matches_scipy_and_contains_mean() -> None:
    x = np.array([0.71, 0.74, 0.69, 0.80, 0.73])
    est = bootstrap_ci(x, seed=123)
    ref = stats.bootstrap((x,), np.mean, confidence_level=0.95, n_resamples=9999, method="percentile",
                          vectorized=True, rng=np.random.default_rng(123)).confidence_interval
    assert est.mean == pytest.approx(x.mean())
    assert (est.low, est.high) == (pytest.approx(ref.low, abs=1e-12), pytest.approx(ref.high, abs=1e-12))
    assert est.low < est.mean < est.high and est.n == 5
    assert x.min() <= est.low and est.high <= x.max()  # a percentile CI of the mean stays within the data
    assert bootstrap_ci(x, seed=123) == est  # reproducible
    bca = bootstrap_ci(x, seed=7, method="BCa")
    ref_bca = stats.bootstrap((x,), np.mean, method="BCa", rng=np.random.default_rng(7)).confidence_interval
    assert bca.low == pytest.approx(ref_bca.low) and bca.high == pytest.approx(ref_bca.high)


def test_bootstrap_ci_single_value_and_constant_values() -> None:
    one = bootstrap_ci([0.8])
    assert one == Estimate(0.8, None, None, 1)
    assert one.text() == "0.800 (n=1)"
    const = bootstrap_ci([2.5, 2.5, 2.5])
    assert (const.low, const.mean, const.high) == (2.5, 2.5, 2.5)
    assert bootstrap_ci([1.0, 2.0, 4.0], seed=0).text(2).startswith("2.33 [1.")
    assert Estimate(3.2e12, 3.1e12, 3.3e12, 3).text() == "3.2e+12 [3.1e+12, 3.3e+12]"
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([])


def test_paired_permutation_identical_samples_give_p_one() -> None:
    x = [0.5, 0.6, 0.7, 0.8]
    assert paired_permutation_pvalue(x, x) == 1.0


def test_paired_permutation_consistent_difference_is_exact() -> None:
    base = np.array([0.70, 0.72, 0.68, 0.75, 0.71])
    better = base + np.array([0.10, 0.12, 0.09, 0.11, 0.13])
    assert paired_permutation_pvalue(better, base) == 2 / 32  # exact two-sided: 2 of 2**5 sign patterns
    assert paired_permutation_pvalue(base, better) == 2 / 32  # symmetric
    assert min_attainable_p(5) == 2 / 32 and min_attainable_p(3) == 0.25 and min_attainable_p(1) == 1.0


def test_paired_permutation_equals_sign_flip_enumeration() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=7), rng.normal(size=7)
    d = x - y
    flips = np.array(list(itertools.product([1.0, -1.0], repeat=7)))  # (128, 7) every sign pattern
    null = (flips * d).mean(axis=1)  # (128,)
    obs = d.mean()
    eps = 1e-12
    ref = min(1.0, 2 * min((null >= obs - eps).mean(), (null <= obs + eps).mean()))
    assert paired_permutation_pvalue(x, y) == pytest.approx(ref, abs=1e-12)


def test_paired_permutation_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired_permutation_pvalue([1.0], [2.0])
    with pytest.raises(ValueError, match="equal-length"):
        paired_permutation_pvalue([1.0, 2.0], [1.0, 2.0, 3.0])


def test_holm_hand_computed() -> None:
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.02, 0.03, 0.06, 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(holm([0.02]), [0.02])  # one test: unchanged
    assert holm([]).size == 0


def test_match_seeds_drops_and_counts_unmatched() -> None:
    x = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}
    y = {1: 1.5, 2: 2.0, 3: 3.5, 5: 9.0}
    m = match_seeds(x, y)
    assert m.seeds == [1, 2, 3] and m.only_x == [0] and m.only_y == [5]
    np.testing.assert_array_equal(m.x, [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(m.y, [1.5, 2.0, 3.5])
    c = compare("a", "b", "task/zeroshot/acc", x, y)
    assert c.unmatched == 2 and c.seeds == [1, 2, 3]
    assert c.diff is not None and c.diff.mean == pytest.approx(np.mean([0.5, 1.0, 0.5]))
    assert c.p_value == 0.25 and c.improved is True  # all 3 positive: 2/8
    assert compare("a", "b", "m", {0: 1.0}, {1: 1.0}).diff is None  # nothing matched: no test
    one = compare("a", "b", "m", {0: 1.0, 1: 3.0}, {1: 1.0})
    assert one.diff is not None and one.diff.mean == 2.0 and one.p_value is None  # one pair: reported, untested


def test_direction_by_metric_name() -> None:
    for name in ("val_loss", "train_loss", "ner/finetune/loss", "lm/zeroshot/ppl", "lm/zeroshot/perplexity"):
        assert lower_is_better(name), name
    for name in ("sentiment/zeroshot/acc", "ner/finetune/f1", "topic/probe/macro_f1"):
        assert not lower_is_better(name), name
    lower = Comparison("a", "b", "val_loss", [0, 1], 0, Estimate(-0.1, -0.2, 0.0, 2), 0.5)
    higher = Comparison("a", "b", "x/acc", [0, 1], 0, Estimate(-0.1, -0.2, 0.0, 2), 0.5)
    assert lower.improved is True and higher.improved is False


def test_apply_holm_skips_untested() -> None:
    mk = lambda p: Comparison("a", "b", "m", [0, 1], 0, Estimate(0.1, 0.0, 0.2, 2), p)  # noqa: E731
    out = apply_holm([mk(0.01), mk(None), mk(0.04)])
    assert [c.p_holm for c in out] == [pytest.approx(0.02), None, pytest.approx(0.04)]
