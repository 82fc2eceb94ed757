"""Vectorised token-selection helpers shared by masking objectives: whole words and geometric spans.

Selecting which tokens to corrupt is the part of MLM-style objectives that is easy to get subtly wrong
(split words, overlapping spans, a selection rate that drifts at block edges). These helpers do it with
whole-batch torch ops and an explicit `torch.Generator`, so any objective can reuse them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def geometric(u: Tensor, p: float) -> Tensor:
    """Inverse-CDF geometric sample on {0, 1, 2, ...}: P(k) = p (1 - p)^k. `u` is uniform in [0, 1)."""
    if p >= 1.0:
        return torch.zeros_like(u, dtype=torch.long)
    return torch.floor(torch.log1p(-u) / math.log1p(-p)).long()  # same shape as u


def truncated_geometric_pmf(p: float, max_length: int) -> Tensor:
    """SpanBERT's span-length law: P(n) proportional to p (1 - p)^(n - 1) for n = 1..max_length. (M,) float64.

    Renormalised over 1..max_length as in SpanBERT's code (mean 3.8 at p=0.2, max 10), not clipped
    (clipping would pile the tail onto max_length and raise the mean to 4.5).
    """
    n = torch.arange(max_length, dtype=torch.float64)  # (M,) n - 1
    pmf = p * (1.0 - p) ** n  # (M,)
    return pmf / pmf.sum()


def sample_from_pmf(u: Tensor, pmf: Tensor) -> Tensor:
    """Inverse-CDF sample of lengths 1..M with probabilities `pmf` (M,); `u` uniform in [0, 1)."""
    cdf = pmf.cumsum(0).to(torch.float32)  # (M,)
    return (torch.searchsorted(cdf, u, right=True) + 1).clamp_(max=pmf.numel())  # same shape as u


def word_ids(word_starts: Tensor, eligible: Tensor) -> Tensor:
    """Index of the word each token belongs to, counted from 0 in every row. (B, L) -> (B, L) int64.

    A word is a start token and the non-start tokens after it. The first token of a block always opens
    a word (a word cut at the block start is still a word), and every ineligible (special) token is a
    word of its own, so a word never mixes special and ordinary tokens.
    """
    special = ~eligible  # (B, L)
    starts = word_starts | special | special.roll(1, dims=1)  # (B, L) roll wraps; column 0 is forced below
    starts[:, 0] = True
    return starts.cumsum(dim=1) - 1  # (B, L)


def whole_word_selection(word_starts: Tensor, eligible: Tensor, probability: float,
                         generator: torch.Generator) -> Tensor:
    """Select each eligible word with `probability`, then every token of a selected word. (B, L) bool."""
    ids = word_ids(word_starts, eligible)  # (B, L) word index, < L
    chosen = torch.rand(ids.shape, generator=generator, device=ids.device) < probability  # (B, L) per word
    return chosen.gather(1, ids) & eligible  # (B, L)


def span_selection(shape: tuple[int, int], density: float, length_pmf: Tensor,
                   generator: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
    """Non-overlapping spans covering `density` of the positions in expectation. (B, L) bool.

    Span lengths are drawn from `length_pmf` (M,), P(length = n) for n = 1..M, e.g.
    `truncated_geometric_pmf(0.2, 10)` for SpanBERT. Each row is an
    alternating renewal process: gap, span, gap, span, ... Gaps are geometric with the mean that makes
    spans cover `density` of the positions (at least one token, so spans stay separate, unless the
    density is so high that gaps must average under one token). The process starts in its stationary
    state (inside a span with probability `density`, with the residual length of that span or gap), so
    every position, including those at the block edges, is covered with probability exactly `density`.
    """
    rows, length = shape
    if density <= 0.0:
        return torch.zeros(shape, dtype=torch.bool, device=device)
    if density >= 1.0:
        return torch.ones(shape, dtype=torch.bool, device=device)
    pmf = length_pmf.double().cpu()  # (M,)
    mean_span = float((pmf * torch.arange(1, pmf.numel() + 1, dtype=torch.float64)).sum())
    # Residual length of the span that covers a random position: P(r) proportional to P(length >= r).
    residual_pmf = pmf.flip(0).cumsum(0).flip(0)  # (M,) survival P(length >= r)
    residual_pmf = residual_pmf / residual_pmf.sum()
    pmf, residual_pmf = pmf.to(device), residual_pmf.to(device)
    mean_gap = mean_span * (1.0 - density) / density
    gap_min, gap_p = (1, 1.0 / mean_gap) if mean_gap >= 1.0 else (0, 1.0 / (1.0 + mean_gap))
    cycles = min(length + 1, math.ceil(1.5 * length / (mean_span + mean_gap)) + 8)

    def fresh(n: int) -> Tensor:
        gaps = gap_min + geometric(torch.rand(rows, n, generator=generator, device=device), gap_p)  # (B, n)
        spans = sample_from_pmf(torch.rand(rows, n, generator=generator, device=device), pmf)  # (B, n)
        return torch.stack((gaps, spans), dim=2).flatten(1)  # (B, 2n) gap, span, gap, span, ...

    lengths = fresh(cycles)  # (B, 2K)
    # Stationary start: position 0 lies in a span with probability `density`; the rest of the interval
    # it lies in is Geometric on {1, ...} for a gap (memoryless), and size-biased for a span.
    u0 = torch.rand(3, rows, generator=generator, device=device)  # (3, B) rows are contiguous
    in_span = u0[0] < density  # (B,)
    residual_gap = 1 + geometric(u0[1], gap_p)  # (B,)
    residual_span = sample_from_pmf(u0[2], residual_pmf)  # (B,)
    lengths[:, 0] = torch.where(in_span, 0, residual_gap)
    lengths[:, 1] = torch.where(in_span, residual_span, lengths[:, 1])
    ends = lengths.cumsum(dim=1)  # (B, 2K) interval ends
    while bool((ends[:, -1] < length).any()):  # rare: some row's cycles fell short of the block
        ends = torch.cat((ends, ends[:, -1:] + fresh(cycles).cumsum(dim=1)), dim=1)
    starts, stops = ends[:, 0::2].clamp(max=length), ends[:, 1::2].clamp(max=length)  # (B, K) span bounds
    delta = torch.zeros(rows, length + 1, dtype=torch.int32, device=device)  # (B, L + 1)
    delta.scatter_add_(1, starts, torch.ones_like(starts, dtype=torch.int32))
    delta.scatter_add_(1, stops, torch.full_like(stops, -1, dtype=torch.int32))
    return delta.cumsum(dim=1, dtype=torch.int32)[:, :length] > 0  # (B, L)
