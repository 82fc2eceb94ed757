"""Prefix LM: the 4D mask is bidirectional inside the prefix and causal after it on GPT-2 and Llama under
both sdpa and eager, labels are -100 exactly in the prefix, prefix lengths are seeded, and it learns."""

from __future__ import annotations

import pytest
import torch

from lmbench.backbones import build_backbone
from lmbench.config import BackboneConfig
from lmbench.objectives import Blocks, ObjectiveConfigError, TokenInfo, default_registry
from lmbench_plugins.clm import CausalLM, CLMConfig
from lmbench_plugins.prefix_lm import PrefixLM, PrefixLMConfig, prefix_lm_mask

V = 256
TOKENS = TokenInfo(vocab_size=V, pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4, bos_id=5, eos_id=6,
                   special_ids=(0, 1, 2, 3, 4, 5, 6))


def blocks(seed: int = 0, B: int = 8, L: int = 24, pad_from: dict[int, int] | None = None) -> Blocks:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(7, V, (B, L), generator=g)  # (B, L)
    for row, start in (pad_from or {}).items():
        ids[row, start:] = TOKENS.pad_id
    return Blocks(input_ids=ids)


def decoder(family: str, attn: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_backbone(BackboneConfig(family=family, attn_implementation=attn), "decoder", TOKENS, 64)


def test_registered_and_config_validated() -> None:
    assert default_registry().get("prefix_lm") is PrefixLM
    assert PrefixLM.backbone_kinds == ("decoder",)
    with pytest.raises(ObjectiveConfigError, match="min_prefix_fraction=0.8 exceeds max_prefix_fraction=0.2"):
        PrefixLMConfig(min_prefix_fraction=0.8, max_prefix_fraction=0.2)
    with pytest.raises(ObjectiveConfigError, match=r"max_prefix_fraction=1.5.*\[0, 1\]"):
        PrefixLMConfig(max_prefix_fraction=1.5)


def test_labels_are_ignored_exactly_in_the_prefix_and_padding() -> None:
    b = blocks(B=16, pad_from={2: 10, 5: 3})
    objective = PrefixLM(PrefixLMConfig(), TOKENS)
    batch = objective.corrupt(b, torch.Generator().manual_seed(0))
    ids, P = b.input_ids, batch["prefix_len"]
    real = ids != TOKENS.pad_id
    n = real.sum(1)
    assert P.shape == (16,) and P.dtype == torch.long
    assert ((P >= 1) & (P <= n - 1)).all()  # at least one prefix token and one target
    pos = torch.arange(ids.size(1))[None]
    in_prefix = pos < P[:, None]
    assert (batch["labels"][in_prefix | ~real] == -100).all()
    assert torch.equal(batch["labels"][~in_prefix & real], ids[~in_prefix & real])
    assert torch.equal(batch["attention_mask"], real.long())
    measured = objective.measure_stats(b, batch)
    assert measured["prefix_targets"] == 0.0 and measured["suffix_target_fraction"] == 1.0


def test_prefix_lengths_vary_across_rows_and_are_seeded() -> None:
    objective = PrefixLM(PrefixLMConfig(), TOKENS)
    b = blocks(B=64, L=64)
    draw = lambda seed: objective.corrupt(b, torch.Generator().manual_seed(seed))["prefix_len"]  # noqa: E731
    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))
    assert draw(1).unique().numel() > 20
    # uniform on [1, 63]: mean 32 (fraction 0.5), both ends reached over many rows
    many = objective.corrupt(blocks(B=4000, L=64), torch.Generator().manual_seed(3))
    P = many["prefix_len"].double()
    assert P.min() == 1 and P.max() == 63 and abs(P.mean().item() - 32) < 1.0
    promised = objective.promised_stats()["prefix_fraction"]
    assert abs(objective.measure_stats(blocks(B=4000, L=64), many)["prefix_fraction"] - promised.value) < 0.02
    # fixed fraction: exactly half of the real tokens
    half = PrefixLM(PrefixLMConfig(min_prefix_fraction=0.5, max_prefix_fraction=0.5), TOKENS)
    fixed = half.corrupt(blocks(B=4, L=20, pad_from={1: 10}), torch.Generator().manual_seed(0))["prefix_len"]
    assert fixed.tolist() == [10, 5, 10, 10]


def test_mask_tensor_semantics() -> None:
    P = torch.tensor([3, 1])
    am = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    m = prefix_lm_mask(P, am, "sdpa")
    assert m.shape == (2, 1, 6, 6) and m.dtype == torch.bool
    q, k = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    expected0 = ((k <= q) | (k < 3)) & (k < 5) | (k == q)
    assert torch.equal(m[0, 0], expected0)
    assert torch.equal(m[1, 0], k <= q)  # prefix 1 = plain causal
    e = prefix_lm_mask(P, am, "eager", torch.float32)
    assert e.dtype == torch.float32
    assert torch.equal(e == 0, m) and (e[~m] == torch.finfo(torch.float32).min).all()
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2'.*sdpa, eager"):
        prefix_lm_mask(P, am, "flash_attention_2")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_prefix_is_bidirectional_and_suffix_causal(family: str, attn: str) -> None:
    model = decoder(family, attn).eval()
    L, P = 16, 6
    ids = torch.randint(7, V, (1, L), generator=torch.Generator().manual_seed(0))
    am = torch.ones(1, L, dtype=torch.long)
    mask = prefix_lm_mask(torch.tensor([P]), am, attn, model.dtype)

    def hidden(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=x, attention_mask=mask, output_hidden_states=True).hidden_states[-1][0]  # (L, H)

    base = hidden(ids)
    # a LATER prefix token changes an earlier prefix position (bidirectional)
    later = ids.clone()
    later[0, P - 1] = 7 if ids[0, P - 1] != 7 else 8
    changed = (hidden(later) - base).abs().amax(-1)  # (L,)
    assert (changed[:P] > 1e-4).all()
    # a token after the prefix changes no earlier position (causal), but does change itself
    for k in (P, P + 3, L - 1):
        after = ids.clone()
        after[0, k] = 7 if ids[0, k] != 7 else 8
        diff = (hidden(after) - base).abs().amax(-1)  # (L,)
        assert diff[:k].max() < 1e-6, (k, diff)
        assert diff[k] > 1e-4


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_sdpa_and_eager_masks_agree_and_prefix_one_is_causal(family: str) -> None:
    sdpa, eager = decoder(family, "sdpa").eval(), decoder(family, "eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    b = blocks(B=4, L=20, pad_from={1: 12})
    objective = PrefixLM(PrefixLMConfig(), TOKENS)
    batch = objective.corrupt(b, torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss_sdpa, loss_eager = objective.loss(sdpa, batch).loss, objective.loss(eager, batch).loss
        assert abs(loss_sdpa.item() - loss_eager.item()) < 1e-5
        # prefix length 1 is plain causal LM: same loss as clm with transformers' own causal mask
        causal = {**batch, "prefix_len": torch.ones(4, dtype=torch.long),
                  "labels": batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)}
        clm = CausalLM(CLMConfig(), TOKENS).loss(sdpa, causal)
        for model in (sdpa, eager):
            prefix_one = objective.loss(model, causal)
            assert abs(prefix_one.loss.item() - clm.loss.item()) < 1e-5
            assert prefix_one.stats["supervised_tokens"] == clm.stats["supervised_tokens"]


def test_loss_decreases_on_repeated_batch() -> None:
    objective = PrefixLM(PrefixLMConfig(), TOKENS)
    model = decoder("gpt2", "sdpa").train()
    batch = objective.corrupt(blocks(B=4, L=32, pad_from={2: 20}), torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = objective.loss(model, batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert torch.isfinite(torch.tensor(losses)).all()
    assert losses[-1] < 0.5 * losses[0]
    supervised = int(((batch["labels"][:, 1:]) != -100).sum())
    assert out.stats["supervised_tokens"].item() == supervised
