"""The pretraining optimizer: AdamW with a fused kernel where torch has one (CPU, CUDA), decay only on
matrices, and the same update as the plain multi-tensor AdamW (the fused kernel only saves time)."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lmbench.config import OptimConfig
from lmbench.train.module import PretrainModule
from lmbench_plugins.clm import CausalLM, CLMConfig


def test_adamw_is_fused_on_cpu_and_matches_foreach(token_info) -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=token_info.vocab_size, n_embd=32, n_layer=2, n_head=2,
                                       n_positions=32))
    module = PretrainModule(model, CausalLM(CLMConfig(), token_info), OptimConfig(), total_steps=10,
                            tokens_per_batch=64)
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is True
    decay, no_decay = optimizer.param_groups
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.01, 0.0)

    reference = {n: p.detach().clone().requires_grad_() for n, p in module.named_parameters()}
    start = {n: p.detach().clone() for n, p in module.named_parameters()}
    plain = torch.optim.AdamW([{"params": [reference[n] for n, p in module.named_parameters() if p.ndim >= 2],
                                "weight_decay": 0.01},
                               {"params": [reference[n] for n, p in module.named_parameters() if p.ndim < 2],
                                "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.98), eps=1e-8, foreach=True)
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        for name, param in module.named_parameters():
            param.grad = torch.randn(param.shape, generator=g)
            reference[name].grad = param.grad.clone()
        optimizer.step()
        plain.step()
    gap = max((p - reference[n]).abs().max().item() for n, p in module.named_parameters())
    assert gap < 1e-6, gap  # same update to float round-off
    assert min((p - start[n]).abs().max().item() for n, p in module.named_parameters()) > 1e-4  # all moved
