"""Causal LM: the loss shifts exactly once (equals transformers' own internal-shift loss), padding is
never a target, and a tiny GPT-2 learns a repeated batch."""

from __future__ import annotations

import torch

from lmbench.backbones import build_backbone
from lmbench.config import BackboneConfig
from lmbench.objectives import Blocks, TokenInfo, default_registry
from lmbench_plugins.clm import CausalLM, CLMConfig, shifted_cross_entropy

V = 256
TOKENS = TokenInfo(vocab_size=V, pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4, bos_id=5, eos_id=6,
                   special_ids=(0, 1, 2, 3, 4, 5, 6))


def padded_blocks(seed: int = 0, B: int = 4, L: int = 24) -> Blocks:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(7, V, (B, L), generator=g)  # (B, L)
    ids[1, 15:] = TOKENS.pad_id
    ids[3, 5:] = TOKENS.pad_id
    return Blocks(input_ids=ids)


def tiny_gpt2(seed: int = 0, family: str = "gpt2") -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_backbone(BackboneConfig(family=family), "decoder", TOKENS, 64)


def test_registered_under_clm() -> None:
    assert default_registry().get("clm") is CausalLM
    assert CausalLM.backbone_kinds == ("decoder",)
    assert CLMConfig().name == "clm"


def test_corrupt_marks_padding_only() -> None:
    blocks = padded_blocks()
    objective = CausalLM(CLMConfig(), TOKENS)
    batch = objective.corrupt(blocks, torch.Generator().manual_seed(0))
    ids = blocks.input_ids
    real = ids != TOKENS.pad_id
    assert torch.equal(batch["input_ids"], ids)
    assert torch.equal(batch["attention_mask"], real.long())
    assert torch.equal(batch["labels"][real], ids[real])  # unshifted
    assert (batch["labels"][~real] == -100).all()
    measured = objective.measure_stats(blocks, batch)
    for key, promise in objective.promised_stats().items():
        assert abs(measured[key] - promise.value) <= promise.tolerance, key


def test_loss_equals_transformers_internal_shift_loss() -> None:
    objective = CausalLM(CLMConfig(), TOKENS)
    for family in ("gpt2", "llama"):
        model = tiny_gpt2(family=family).eval()
        batch = objective.corrupt(padded_blocks(), torch.Generator().manual_seed(0))
        with torch.no_grad():
            ours = objective.loss(model, batch)
            hf = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       labels=batch["labels"]).loss
            # a second shift (labels pre-shifted by the caller, shifted again in the loss) is detectably wrong
            twice = objective.loss(model, {**batch, "labels": torch.nn.functional.pad(batch["labels"][:, 1:],
                                                                                      (0, 1), value=-100)})
        assert abs(ours.loss.item() - hf.item()) < 1e-5, family
        assert abs(twice.loss.item() - hf.item()) > 1e-2
        real = batch["attention_mask"].bool()
        assert ours.stats["supervised_tokens"].item() == real[:, 1:].sum().item()
        assert 0.0 <= ours.stats["accuracy"].item() <= 1.0


def test_padding_is_never_supervised() -> None:
    objective = CausalLM(CLMConfig(), TOKENS)
    model = tiny_gpt2().eval()
    batch = objective.corrupt(padded_blocks(), torch.Generator().manual_seed(0))
    pad = batch["attention_mask"] == 0
    # whatever sits at padded positions, neither the loss nor its gradient sees it
    other = {**batch, "input_ids": batch["input_ids"].masked_fill(pad, 77)}
    with torch.no_grad():
        assert torch.equal(objective.loss(model, batch).loss, objective.loss(model, other).loss)
    # gradient w.r.t. the logits is zero at every position whose next token is padding (and at the last)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.detach()
    logits.requires_grad_(True)
    shifted_cross_entropy(logits, batch["labels"])[0].backward()
    touched = logits.grad.abs().sum(-1) > 0  # (B, L)
    expected = torch.zeros_like(touched)
    expected[:, :-1] = ~pad[:, 1:]
    assert torch.equal(touched, expected)


def test_all_padding_gives_zero_loss_not_nan() -> None:
    objective = CausalLM(CLMConfig(), TOKENS)
    blocks = Blocks(input_ids=torch.full((2, 8), TOKENS.pad_id))
    batch = objective.corrupt(blocks, torch.Generator().manual_seed(0))
    logits = torch.randn(2, 8, V)
    loss, stats = shifted_cross_entropy(logits, batch["labels"])
    assert loss.item() == 0.0 and stats["supervised_tokens"].item() == 0


def test_loss_decreases_on_repeated_batch() -> None:
    objective = CausalLM(CLMConfig(), TOKENS)
    model = tiny_gpt2().train()
    batch = objective.corrupt(padded_blocks(B=4, L=32), torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = objective.loss(model, batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[0] > 5.0  # ~ln(256) at init
    assert losses[-1] < 0.5 * losses[0]
    assert out.stats["accuracy"].item() > 0.3
