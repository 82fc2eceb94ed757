"""Scaled dot-product attention in float32 on CPUs under bf16/fp16 autocast: faster there, and exact.

Why this exists: on a CPU, torch's fused (flash) SDPA kernel is about 3x slower forward + backward in
bf16 than in float32 for the shapes lmbench trains (measured on an AMX CPU: 30 ms vs 11 ms for batch
32, 4 heads, 130 positions, head width 64), while the projections around it gain from bf16. So under
autocast on a CPU the attention core runs in float32 (inputs upcast, output cast back), the matmuls
of the layers stay in bf16. Registered with transformers' AttentionInterface (and its mask interface,
with sdpa's masks) as `lmbench_sdpa`, and
switched on only for training runs (`use_cpu_attention`), never written into a saved model's config:
a saved model loads with the stock `sdpa`. Everywhere else (GPUs, float32 inputs) it is exactly sdpa.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "lmbench_sdpa"


def cpu_float32_sdpa(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                     attention_mask: Optional[Tensor], **kwargs: Any) -> tuple[Tensor, Any]:
    """transformers' sdpa attention; on a CPU with half-precision inputs, computed in float32."""
    if query.device.type != "cpu" or query.dtype not in (torch.bfloat16, torch.float16):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    dtype = query.dtype
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    kwargs = {k: v.float() if isinstance(v, Tensor) and v.is_floating_point() else v
              for k, v in kwargs.items()}  # T5's position_bias joins the mask
    with torch.autocast("cpu", enabled=False):  # autocast would cast the upcast inputs straight back
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                              **kwargs)
    return out.to(dtype), weights


AttentionInterface.register(NAME, cpu_float32_sdpa)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # the masks sdpa gets (unknown names get none built)


def mask_convention(attn_implementation: str | None) -> str | None:
    """The attention-mask convention an implementation expects: lmbench_sdpa takes sdpa's."""
    return "sdpa" if attn_implementation == NAME else attn_implementation


def use_cpu_attention(model: PreTrainedModel, device: str, compute_dtype: torch.dtype) -> bool:
    """Switch `model` from `sdpa` to `lmbench_sdpa` for a CPU run computing in bf16/fp16 (autocast or
    true half); True when switched. Models configured with another implementation (eager, flash) are
    left as they are."""
    half = compute_dtype in (torch.bfloat16, torch.float16)
    if device != "cpu" or not half or getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(NAME)
    return True
