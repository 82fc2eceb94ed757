"""Statistics for comparing objectives over pretraining seeds: bootstrap CIs, paired tests, Holm.

Why paired: every objective is pretrained with the same seeds, and a seed fixes the data order and the
initialisation draw, so seed-to-seed noise is shared between objectives. Differencing matched seeds
removes it; an unpaired test (as lm-evaluation-harness uses) throws that information away.

- `bootstrap_ci`: mean with a scipy.stats.bootstrap interval (percentile by default: BCa's jackknife
  acceleration is unstable with the 3-5 seeds a benchmark can afford). One value -> no interval.
- `paired_permutation_pvalue`: scipy.stats.permutation_test with permutation_type="samples" (swaps the
  two members of each pair), exact (all 2**n sign patterns) up to n=13 seeds. Its smallest two-sided
  p-value is 2 / 2**n, so 3 seeds can never reach p < 0.25; `min_attainable_p` says so in the output.
- `holm`: Holm-Bonferroni step-down adjustment (scipy has no Holm), controlling the family-wise error.

Direction: metrics whose last path segment contains "loss", "ppl" or "perplexity" are lower-is-better;
everything else (acc, f1, ...) is higher-is-better.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 9999
LOWER_IS_BETTER_WORDS = ("loss", "ppl", "perplexity")


def lower_is_better(metric: str) -> bool:
    """True for losses/perplexities (by name), False for accuracies, F1 and other scores."""
    last = metric.rsplit("/", 1)[-1].lower()
    return any(word in last for word in LOWER_IS_BETTER_WORDS)


def _rng_kwargs(func: Callable[..., Any], seed: int) -> dict[str, Any]:
    """scipy >= 1.15 takes `rng`, older releases `random_state`."""
    name = "rng" if "rng" in inspect.signature(func).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% interval; low/high are None when there was a single value (n=1)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    def text(self, decimals: int = 3) -> str:
        """'mean [lo, hi]', or 'mean (n=1)' without an interval."""
        if self.low is None or self.high is None:
            return f"{fmt(self.mean, decimals)} (n={self.n})"
        return f"{fmt(self.mean, decimals)} [{fmt(self.low, decimals)}, {fmt(self.high, decimals)}]"


def fmt(x: float, decimals: int = 3, sign: bool = False) -> str:
    """Fixed decimals for ordinary magnitudes (scores, losses), 3 significant digits for tiny or huge ones."""
    plus = "+" if sign else ""
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:{plus}.{decimals}f}"
    return f"{x:{plus}.3g}"


def bootstrap_ci(values: Sequence[float], *, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                 method: str = "percentile", seed: int = 0) -> Estimate:
    """Mean of `values` with a scipy.stats.bootstrap confidence interval for the mean.

    n=1 gives no interval; identical values give the degenerate interval [v, v] (scipy would warn and
    return NaN for BCa). `seed` fixes the resampling, so a leaderboard is reproducible.
    """
    x = np.asarray(values, dtype=float)  # (n,)
    if x.ndim != 1 or x.size == 0 or not np.isfinite(x).all():
        raise ValueError(f"bootstrap_ci needs a non-empty 1-d array of finite numbers, got {values!r}")
    mean = float(x.mean())
    if x.size == 1:
        return Estimate(mean, None, None, 1)
    if np.ptp(x) == 0:
        return Estimate(mean, mean, mean, int(x.size))
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method=method,
                          vectorized=True, **_rng_kwargs(stats.bootstrap, seed))
    ci = res.confidence_interval
    return Estimate(mean, float(ci.low), float(ci.high), int(x.size))


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def paired_permutation_pvalue(x: Sequence[float], y: Sequence[float], *, n_resamples: int = N_RESAMPLES,
                              seed: int = 0) -> float:
    """Two-sided p-value for mean(x - y) == 0 over pairs (x[i], y[i]), by a paired permutation test.

    Exact when 2**n <= n_resamples. Identical samples give p = 1; n consistent differences give 2/2**n.
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)  # (n,), (n,)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"paired test needs two equal-length 1-d samples of at least 2 pairs, got {a.shape} and {b.shape}")
    res = stats.permutation_test((a, b), _mean_diff, permutation_type="samples", alternative="two-sided",
                                 vectorized=True, n_resamples=n_resamples,
                                 **_rng_kwargs(stats.permutation_test, seed))
    return float(min(1.0, res.pvalue))


def min_attainable_p(n: int) -> float:
    """Smallest two-sided p-value an exact paired permutation test can give with n pairs."""
    return min(1.0, 2.0 / 2.0**n) if n > 0 else 1.0


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order: p_(i) * (m - i + 1), made monotone, capped at 1."""
    p = np.asarray(pvalues, dtype=float)  # (m,)
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])  # (m,) sorted order
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


@dataclass(frozen=True)
class Matched:
    """Two seed -> value maps reduced to the seeds both have; the rest are counted, not used."""

    seeds: list[int]
    x: np.ndarray  # (n,) values of the compared objective
    y: np.ndarray  # (n,) values of the baseline
    only_x: list[int]
    only_y: list[int]


def match_seeds(x: Mapping[int, float], y: Mapping[int, float]) -> Matched:
    """Pair values by equal seed; seeds present on one side only end up in only_x / only_y."""
    common = sorted(set(x) & set(y))
    return Matched(common, np.array([x[s] for s in common], dtype=float), np.array([y[s] for s in common], dtype=float),
                   sorted(set(x) - set(y)), sorted(set(y) - set(x)))


@dataclass(frozen=True)
class Comparison:
    """One objective vs the baseline on one metric, over matched pretraining seeds.

    objective and baseline are leaderboard row keys (`name@backbone_kind`); unmatched counts the seeds
    either side has that the other lacks (left out of the test).

    diff is mean(objective - baseline) with a bootstrap CI; improved says whether the sign favours the
    objective given the metric's direction (None when the difference is zero or untested).
    p_holm is filled in by `apply_holm` over the whole family of comparisons.
    """

    objective: str
    baseline: str
    metric: str
    seeds: list[int]
    unmatched: int
    diff: Estimate | None
    p_value: float | None
    p_holm: float | None = None

    @property
    def improved(self) -> bool | None:
        if self.diff is None or self.diff.mean == 0:
            return None
        return (self.diff.mean < 0) == lower_is_better(self.metric)


def compare(objective: str, baseline: str, metric: str, x: Mapping[int, float], y: Mapping[int, float], *,
            seed: int = 0) -> Comparison:
    """Paired comparison of `x` (objective) against `y` (baseline), both seed -> value.

    With one matched seed the difference is reported but not tested (p None: scipy needs two pairs,
    and an exact test on one pair always gives p = 1).
    """
    m = match_seeds(x, y)
    unmatched = len(m.only_x) + len(m.only_y)
    if not m.seeds:
        return Comparison(objective, baseline, metric, [], unmatched, None, None)
    diff = bootstrap_ci(m.x - m.y, seed=seed)
    p = paired_permutation_pvalue(m.x, m.y, seed=seed) if len(m.seeds) >= 2 else None  # one pair: no test
    return Comparison(objective, baseline, metric, m.seeds, unmatched, diff, p)


def apply_holm(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The same comparisons with p_holm set, adjusting over every comparison that has a p-value."""
    tested = [i for i, c in enumerate(comparisons) if c.p_value is not None]
    adjusted = holm([comparisons[i].p_value for i in tested]) if tested else np.array([])
    out = list(comparisons)
    for i, p in zip(tested, adjusted):
        c = out[i]
        out[i] = Comparison(c.objective, c.baseline, c.metric, c.seeds, c.unmatched, c.diff, c.p_value, float(p))
    return out
