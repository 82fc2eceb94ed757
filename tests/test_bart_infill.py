"""BART infilling: Poisson span lengths (chi-square), masked fraction vs the promise, one mask per span
(exact reconstruction), specials untouched, sentence permutation, determinism, validation, and a loss
that matches Hugging Face's and trains tiny BART and T5 models."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from transformers import BartConfig, BartForConditionalGeneration, T5Config, T5ForConditionalGeneration

from lmbench.objectives import Blocks, ObjectiveConfigError, TokenInfo, default_registry
from lmbench_plugins.bart_infill import BartInfillConfig, BartInfilling

MASK, EOS, BOS, PAD, DOT = 4, 6, 5, 0, 10


def make(token_info: TokenInfo, **kw: object) -> BartInfilling:
    return BartInfilling(BartInfillConfig(**kw), token_info)


def random_blocks(rows: int, length: int, special_rate: float = 0.0, seed: int = 0) -> Blocks:
    """Ordinary ids 11..899 with EOS / BOS sprinkled at `special_rate` (document boundaries)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(11, 900, (rows, length), generator=g)  # (B, L)
    u = torch.rand(rows, length, generator=g)  # (B, L)
    ids = torch.where(u < special_rate / 2, EOS, torch.where(u < special_rate, BOS, ids))
    return Blocks(ids)


def sentence_blocks(rows: int, length: int, seed: int = 0) -> Blocks:
    """Sentences of 1-7 ordinary tokens each ending with '.', packed and cut to `length` (ends with '.')."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(rows):
        row: list[int] = []
        while len(row) < length:
            n = int(torch.randint(1, 8, (1,), generator=g))
            row += torch.randint(11, 900, (n,), generator=g).tolist() + [DOT]
        out.append(row[: length - 1] + [DOT])
    return Blocks(torch.tensor(out))


def sentences(row: list[int]) -> list[tuple[int, ...]]:
    parts, cur = [], []
    for tok in row:
        cur.append(tok)
        if tok == DOT:
            parts.append(tuple(cur))
            cur = []
    return parts + ([tuple(cur)] if cur else [])


def reconstruct(inputs: list[int], lengths: list[int], original: list[int]) -> bool:
    """Walk the corrupted input: a kept token must equal the next original token; the k-th mask token
    stands for exactly lengths[k] original tokens (0 for an insertion). True if all of `original` is
    consumed and every span used exactly one mask."""
    j = k = 0
    for tok in inputs:
        if tok == MASK:
            j += lengths[k]
            k += 1
        elif j >= len(original) or original[j] != tok:
            return False
        else:
            j += 1
    return j == len(original) and k == len(lengths)


def attended(batch: dict, i: int) -> list[int]:
    return batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()


def test_registered_through_entry_point() -> None:
    assert default_registry().get("bart_infill") is BartInfilling
    assert BartInfilling.backbone_kinds == ("encoder-decoder",)
    assert BartInfillConfig().name == "bart_infill"


def test_span_lengths_are_poisson(token_info: TokenInfo) -> None:
    obj = make(token_info)
    blocks = random_blocks(256, 256)
    batch = obj.corrupt(blocks, torch.Generator().manual_seed(1))
    drawn, realized = batch["stat_drawn_span_lengths"], batch["stat_span_lengths"]  # (B, K)
    used = drawn >= 0
    sample = drawn[used]
    assert sample.numel() > 5000
    # Whether a span is used depends only on earlier draws, so used draws are exactly Poisson(3).
    top = 9
    observed = torch.bincount(sample.clamp_max(top), minlength=top + 1).double().numpy()
    pmf = stats.poisson.pmf(range(top), 3.0)
    expected = sample.numel() * torch.tensor([*pmf, 1.0 - pmf.sum()]).numpy()
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    assert abs(sample.float().mean().item() - 3.0) < 0.1
    assert abs(sample.float().var().item() - 3.0) < 0.3
    assert abs((sample == 0).float().mean().item() - math.exp(-3.0)) < 0.01  # zero-length spans kept
    assert abs(obj.measure_stats(blocks, batch)["mean_span_length"] - 3.0) <= 0.2
    # Realized lengths: the draws, except the last span of each row, cut to reach the budget exactly.
    budget = torch.round(torch.full((256,), 256 * 0.3)).long()
    assert torch.equal(realized.clamp_min(0).sum(1), budget)
    last = used & (used.long().cumsum(1) == used.sum(1, keepdim=True))  # (B, K) each row's last span
    assert torch.equal(realized[used & ~last], drawn[used & ~last])
    assert (realized[last] <= drawn[last]).all() and (realized[last] >= 1).all()
    assert torch.equal(realized < 0, ~used)


def test_mask_fraction_and_specials(token_info: TokenInfo) -> None:
    obj = make(token_info)
    blocks = random_blocks(128, 512, special_rate=0.005)
    batch = obj.corrupt(blocks, torch.Generator().manual_seed(2))
    special = token_info.special_mask(blocks.input_ids)  # (B, L)
    assert special.any() and not (batch["stat_masked"] & special).any()
    ordinary = (~special).sum().item()
    inputs = batch["input_ids"][batch["attention_mask"].bool()]
    kept = (inputs != MASK).sum().item()  # independent of the stat tensors
    for ratio in (blocks.input_ids.numel() - kept) / ordinary, obj.measure_stats(blocks, batch)["mask_ratio"]:
        assert abs(ratio - 0.3) <= 0.01, ratio
    for i in range(128):  # specials survive, in order
        orig = blocks.input_ids[i]
        assert attended(batch, i).count(EOS) == (orig == EOS).sum().item()
        assert [t for t in attended(batch, i) if t in (EOS, BOS)] == orig[(orig == EOS) | (orig == BOS)].tolist()
    measured = obj.measure_stats(blocks, batch)
    for key, promise in obj.promised_stats().items():
        assert abs(measured[key] - promise.value) <= promise.tolerance, key


def test_each_span_becomes_one_mask(token_info: TokenInfo) -> None:
    obj = make(token_info)
    blocks = random_blocks(64, 128, special_rate=0.02)
    batch = obj.corrupt(blocks, torch.Generator().manual_seed(3))
    assert batch["input_ids"].shape == batch["labels"].shape == (64, 128)
    assert torch.equal(batch["labels"], blocks.input_ids)
    insertions = 0
    for i in range(64):
        orig, inp = blocks.input_ids[i], attended(batch, i)
        lengths = [n for n in batch["stat_span_lengths"][i].tolist() if n >= 0]
        insertions += lengths.count(0)
        assert inp.count(MASK) == len(lengths)
        assert [t for t in inp if t != MASK] == orig[~batch["stat_masked"][i]].tolist()
        assert reconstruct(inp, lengths, orig.tolist())
        assert (batch["input_ids"][i, len(inp):] == PAD).all()
    assert insertions > 0  # zero-length spans were exercised


def test_insertions_beyond_block_are_dropped(token_info: TokenInfo) -> None:
    obj = make(token_info, poisson_lambda=0.3)  # ~74% zero-length spans: far more masks than tokens
    blocks = random_blocks(16, 64)
    batch = obj.corrupt(blocks, torch.Generator().manual_seed(4))
    assert batch["input_ids"].shape == (16, 64) and (batch["attention_mask"].sum(1) == 64).all()
    dropped = (batch["stat_drawn_span_lengths"] >= 0).sum() - (batch["stat_span_lengths"] >= 0).sum()
    assert dropped > 0
    for i in range(16):
        lengths = [n for n in batch["stat_span_lengths"][i].tolist() if n >= 0]
        assert reconstruct(attended(batch, i), lengths, blocks.input_ids[i].tolist())
    assert abs(obj.measure_stats(blocks, batch)["mask_ratio"] - 0.3) < 0.01


def test_random_ratio_and_padding(token_info: TokenInfo) -> None:
    obj = make(token_info, random_ratio=1.0)
    blocks = random_blocks(32, 64)
    blocks.input_ids[:, 50:] = PAD  # a source-forced padded tail
    batch = obj.corrupt(blocks, torch.Generator().manual_seed(5))
    assert not (batch["input_ids"] == MASK).any()
    assert not token_info.special_mask(batch["input_ids"][batch["input_ids"] != PAD]).any()
    assert (batch["labels"][:, 50:] == -100).all() and (batch["labels"][:, :50] == blocks.input_ids[:, :50]).all()
    assert (batch["attention_mask"] == (batch["input_ids"] != PAD)).all()
    assert (batch["attention_mask"].sum(1) <= 50).all()
    assert abs(obj.measure_stats(blocks, batch)["mask_ratio"] - 0.3) < 0.02


def test_sentence_permutation(token_info: TokenInfo) -> None:
    obj = make(token_info, mask_ratio=0.0, permute_sentences=True)
    blocks = sentence_blocks(32, 64)
    batch = obj.corrupt(blocks, torch.Generator().manual_seed(6))
    assert torch.equal(batch["labels"], blocks.input_ids)  # the decoder target stays unpermuted
    changed = 0
    for i in range(32):
        orig, perm = sentences(blocks.input_ids[i].tolist()), sentences(attended(batch, i))
        assert sorted(orig) == sorted(perm) and len(attended(batch, i)) == 64
        changed += orig != perm
    assert changed >= 28
    masked = make(token_info, permute_sentences=True).corrupt(blocks, torch.Generator().manual_seed(6))
    assert torch.equal(masked["labels"], blocks.input_ids)
    assert abs(masked["stat_masked"].float().mean().item() - 0.3) < 0.01


def test_deterministic_per_seed(token_info: TokenInfo) -> None:
    obj = make(token_info, permute_sentences=True, random_ratio=0.1)
    blocks = sentence_blocks(8, 128)
    a = obj.corrupt(blocks, torch.Generator().manual_seed(7))
    b = obj.corrupt(blocks, torch.Generator().manual_seed(7))
    c = obj.corrupt(blocks, torch.Generator().manual_seed(8))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input_ids"], c["input_ids"])


@pytest.mark.parametrize("kw,key", [
    ({"mask_ratio": 1.5}, "mask_ratio"), ({"mask_ratio": -0.1}, "mask_ratio"),
    ({"random_ratio": 2}, "random_ratio"), ({"poisson_lambda": 0}, "poisson_lambda"),
    ({"poisson_lambda": -3.0}, "poisson_lambda"), ({"permute_sentences": "yes"}, "permute_sentences"),
])
def test_config_validation(kw: dict, key: str) -> None:
    with pytest.raises(ObjectiveConfigError, match=rf"{key}=.*allowed values"):
        BartInfillConfig(**kw)


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread, and far faster when other processes load the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_bart() -> BartForConditionalGeneration:
    torch.manual_seed(0)
    return BartForConditionalGeneration(BartConfig(
        vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=128,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=EOS,
        forced_eos_token_id=None))


def tiny_t5() -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(
        vocab_size=1000, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
        pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD))


@pytest.mark.parametrize("build", [tiny_bart, tiny_t5])
def test_loss_matches_hf_and_trains(token_info: TokenInfo, build, one_thread) -> None:
    obj = make(token_info, permute_sentences=True)
    blocks = sentence_blocks(8, 48)
    blocks.input_ids[:, 0], blocks.input_ids[:, -1] = BOS, EOS
    batch = obj.corrupt(blocks, torch.Generator().manual_seed(9))
    model = build()
    model.eval()
    with torch.no_grad():
        out = obj.loss(model, batch)
        reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch["labels"]).loss  # HF's own shift + cross-entropy
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = obj.loss(model, batch)
    assert out.loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert low.loss.dtype == torch.float32 and abs(low.loss.item() - out.loss.item()) < 0.1
    assert out.stats["supervised_tokens"].item() == 8 * 48
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)  # the whole block is the target: needs a push
    first = None
    for _ in range(30):
        result = obj.loss(model, batch)
        opt.zero_grad()
        result.loss.backward()
        opt.step()
        first = result.loss.item() if first is None else first
    assert result.loss.item() < 0.5 * first, (first, result.loss.item())
    assert result.stats["accuracy"].item() > 0.3
