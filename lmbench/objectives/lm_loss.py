"""Cross-entropy over the vocabulary without materialising the (rows x vocabulary) logits in float32.

Why this exists: for the small models lmbench compares, the vocabulary head and its loss are the
largest single cost of a training step. The usual path writes (B*T, V) logits in the compute dtype,
upcasts them to float32, runs log-softmax forward and backward over them and keeps them for autograd:
on a 2-core bf16 CPU that is about 200 ms of a 470 ms causal-LM step (B*T = 4096, V = 8192), almost all
memory traffic. `linear_cross_entropy` computes the same loss, its gradients and the top-1 accuracy
one block of rows at a time, with the softmax of each block in float32 while it is in cache; the
matrix products run in the compute dtype (autocast's, or the inputs' own) exactly as the plain
`F.linear` would. The gradients are formed in the forward pass (softmax - one-hot, the block's
products with the weight and the hidden states), so nothing (rows x V)-sized outlives the call.

Any objective can use it with the hidden states and output projection of its model
(`lmbench.backbones.heads`); it equals `F.cross_entropy(F.linear(h, W, b).float(), y, reduction="sum")`
to float round-off (tests).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

IGNORE_INDEX = -100
BLOCK_BYTES = 64 * 2**20  # the (rows x V) gradient block formed at once, in the compute dtype
CHUNK_ROWS = 128  # rows whose float32 softmax is formed at once (128 x 8192 x 4 B = 4 MiB: cache-sized)


def _compute_dtype(hidden: Tensor) -> torch.dtype:
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return hidden.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    """sum over rows of CE(h @ W^T + b, y), with the gradients formed blockwise in forward."""

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, bias: Optional[Tensor], targets: Tensor,
                dtype: torch.dtype, need_grad: bool) -> tuple[Tensor, Tensor]:
        n, vocab = hidden.shape[0], weight.shape[0]
        h, w = hidden.to(dtype), weight.to(dtype)  # (N, H), (V, H)
        b = None if bias is None else bias.to(dtype)  # (V,)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        grad_h = torch.empty_like(h) if need_grad else None  # (N, H)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_grad else None
        grad_b = torch.zeros(vocab, dtype=torch.float32, device=weight.device) if need_grad and bias is not None \
            else None
        block_rows = max(CHUNK_ROWS, BLOCK_BYTES // (vocab * h.element_size()) // CHUNK_ROWS * CHUNK_ROWS)
        rows = torch.arange(min(CHUNK_ROWS, max(n, 1)), device=hidden.device)  # (C,)
        for start in range(0, n, block_rows):
            stop = min(n, start + block_rows)
            probs = torch.empty((stop - start, vocab), dtype=dtype, device=hidden.device) if need_grad else None
            for s in range(start, stop, CHUNK_ROWS):
                e = min(stop, s + CHUNK_ROWS)
                logits = (h[s:e] @ w.t() if b is None else torch.addmm(b, h[s:e], w.t())).float()  # (C, V)
                y, r = targets[s:e], rows[: e - s]  # (C,)
                target_logit = logits[r, y]  # (C,)
                top = logits.amax(dim=-1)  # (C,)
                correct += (target_logit >= top).sum()  # the target holds the maximum logit
                exp = logits.sub_(top[:, None]).exp_()  # (C, V) in place: exp(logit - max)
                norm = exp.sum(dim=-1)  # (C,)
                total += (norm.log() + top - target_logit).sum()  # log-sum-exp - target logit
                if need_grad:
                    p = exp.div_(norm[:, None])  # (C, V) softmax
                    p[r, y] -= 1.0  # d loss / d logits = softmax - one-hot
                    probs[s - start:e - start] = p
            if need_grad:
                grad_h[start:stop] = probs @ w  # (rows, H)
                grad_w += (probs.t() @ h[start:stop]).float()  # (V, H)
                if grad_b is not None:
                    grad_b += probs.float().sum(dim=0)  # (V,)
        if need_grad:
            ctx.save_for_backward(grad_h, grad_w, grad_b)
            ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total, correct

    @staticmethod
    def backward(ctx: Any, grad_total: Tensor, grad_correct: Tensor) -> tuple[Optional[Tensor], ...]:
        grad_h, grad_w, grad_b = ctx.saved_tensors
        dh, dw, db = ctx.dtypes
        scale = grad_total.float()
        return ((grad_h.float() * scale).to(dh), (grad_w * scale).to(dw),
                None if grad_b is None else (grad_b * scale).to(db), None, None, None)


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor,
                         bias: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    """Summed cross-entropy of `hidden @ weight.T + bias` against `targets`, never holding float32 logits.

    hidden: (N, H) final hidden states (any leading rows: callers flatten); weight: (V, H) the output
    projection; bias: (V,) or None; targets: (N,) ids, IGNORE_INDEX (-100) rows are skipped.
    Returns (loss_sum, correct, count): the float32 sum of per-row losses (differentiable in hidden,
    weight and bias), how many rows have the target as top logit, and how many rows were supervised
    (0-dim tensors; divide by count.clamp(min=1) for the mean). Products run in autocast's dtype when
    autocast is on (else in hidden's dtype), the softmax in float32.
    """
    keep = targets != IGNORE_INDEX  # (N,)
    count = keep.sum()
    hidden, targets = hidden[keep], targets[keep]  # (N', H), (N',)
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    total, correct = _LinearCrossEntropy.apply(hidden, weight, bias, targets, _compute_dtype(hidden), need_grad)
    return total, correct, count
