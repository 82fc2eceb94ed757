"""T5 span corruption: statistics vs the promised rates, lengths vs T5's own length search, exact
reconstruction, sentinel order, determinism, validation, and a loss that matches and trains HF models."""

from __future__ import annotations

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration, T5Config, T5ForConditionalGeneration

from lmbench.objectives import Blocks, ObjectiveConfigError, TokenInfo, default_registry
from lmbench_plugins.t5_span import T5SpanConfig, T5SpanCorruption


def t5_compute_input_and_target_lengths(inputs_length: int, noise_density: float,
                                        mean_noise_span_length: float) -> tuple[int, int]:
    """Straight port of compute_input_and_target_lengths (T5 / HF run_t5_mlm_flax.py)."""

    def _tokens_length_to_inputs_length_targets_length(tokens_length: int) -> tuple[int, int]:
        num_noise_tokens = int(round(tokens_length * noise_density))
        num_nonnoise_tokens = tokens_length - num_noise_tokens
        num_noise_spans = int(round(num_noise_tokens / mean_noise_span_length))
        _input_length = num_nonnoise_tokens + num_noise_spans + 1
        _output_length = num_noise_tokens + num_noise_spans + 1
        return _input_length, _output_length

    tokens_length = inputs_length
    while _tokens_length_to_inputs_length_targets_length(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    inputs_length, targets_length = _tokens_length_to_inputs_length_targets_length(tokens_length)
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


def make(token_info: TokenInfo, **kw: float) -> T5SpanCorruption:
    return T5SpanCorruption(T5SpanConfig(**kw), token_info)


def random_blocks(rows: int, length: int, seed: int = 0) -> Blocks:
    g = torch.Generator().manual_seed(seed)
    return Blocks(torch.randint(11, 900, (rows, length), generator=g))  # ordinary ids only


def corrupt(obj: T5SpanCorruption, seq_len: int, rows: int, seed: int = 1) -> tuple[Blocks, dict]:
    blocks = random_blocks(rows, obj.block_length(seq_len))
    return blocks, obj.corrupt(blocks, torch.Generator().manual_seed(seed))


def split_targets(labels: list[int], sentinels: set[int], eos: int) -> list[list[int]]:
    """Spans of a target row: the tokens after each sentinel, up to the next sentinel or EOS."""
    spans: list[list[int]] = []
    for tok in labels:
        if tok in sentinels:
            spans.append([])
        elif tok == eos:
            break
        else:
            spans[-1].append(tok)
    return spans


def test_registered_through_entry_point() -> None:
    assert default_registry().get("t5_span") is T5SpanCorruption
    assert T5SpanCorruption.backbone_kinds == ("encoder-decoder",)
    assert T5SpanConfig().name == "t5_span"


def test_noise_statistics_match_promise(token_info: TokenInfo) -> None:
    obj = make(token_info)
    blocks, batch = corrupt(obj, 512, rows=400)  # 400 x 568 = 227k raw tokens
    assert blocks.input_ids.numel() >= 200_000
    sentinels, eos = set(token_info.sentinel_ids), token_info.eos_id
    lengths = [len(s) for row in batch["labels"].tolist() for s in split_targets(row, sentinels, eos)]
    density = sum(lengths) / blocks.input_ids.numel()
    mean_span = sum(lengths) / len(lengths)
    assert abs(density - 0.15) <= 0.01, density
    assert abs(mean_span - 3.0) <= 0.2, mean_span
    assert min(lengths) >= 1
    measured = obj.measure_stats(blocks, batch)
    assert measured["noise_density"] == pytest.approx(density)
    assert measured["mean_noise_span_length"] == pytest.approx(mean_span)
    for key, promise in obj.promised_stats().items():
        assert abs(measured[key] - promise.value) <= promise.tolerance, key
    # Noise is spread over the block, not bunched: both halves carry ~15% noise.
    noise = obj.noise_mask(400, 568, torch.Generator().manual_seed(3))  # (B, n)
    assert not noise[:, 0].any()  # T5 starts with a non-noise run
    for half in (noise[:, :284], noise[:, 284:]):
        assert abs(half.float().mean().item() - 0.15) < 0.01


def test_sentinels_in_order(token_info: TokenInfo) -> None:
    obj = make(token_info)
    _, batch = corrupt(obj, 128, rows=32)
    sentinels = torch.tensor(token_info.sentinel_ids)
    for key in ("input_ids", "labels"):
        for row in batch[key]:
            found = row[torch.isin(row, sentinels)].tolist()
            assert found == list(token_info.sentinel_ids[: len(found)]) and len(found) >= 1
    assert (batch["labels"][:, 0] == token_info.sentinel_ids[0]).all()  # targets open with sentinel 0


@pytest.mark.parametrize("density,mean", [(0.15, 3.0), (0.3, 8.0), (0.5, 8.0)])
@pytest.mark.parametrize("seq_len", [64, 128, 512])
def test_lengths_match_t5(token_info: TokenInfo, seq_len: int, density: float, mean: float) -> None:
    obj = make(token_info, noise_density=density, mean_noise_span_length=mean)
    raw, target = t5_compute_input_and_target_lengths(seq_len, density, mean)
    assert obj.block_length(seq_len) == raw
    assert obj.target_length(seq_len) == target
    blocks, batch = corrupt(obj, seq_len, rows=4)
    assert blocks.input_ids.shape == (4, raw)
    assert batch["input_ids"].shape == (4, seq_len) == batch["attention_mask"].shape
    assert batch["labels"].shape == (4, target)
    real = batch["attention_mask"].sum(1)
    assert (real == obj.input_length(raw)).all() and (real <= seq_len).all()
    assert (batch["input_ids"][:, real[0]:] == token_info.pad_id).all()  # padding only past the end
    assert (batch["input_ids"].gather(1, real[:, None] - 1) == token_info.eos_id).all()


def test_pads_when_t5_search_lands_short(token_info: TokenInfo) -> None:
    obj = make(token_info, noise_density=0.5, mean_noise_span_length=3.0)
    raw, target = t5_compute_input_and_target_lengths(75, 0.5, 3.0)
    assert obj.block_length(75) == raw and obj.input_length(raw) == 74  # T5's density-0.5 trim
    # T5's trim guesses targets_length - 1 = 75; the real count (55 noise + 18 sentinels + EOS) is 74.
    assert (target, obj.target_length(75)) == (75, 74)
    _, batch = corrupt(obj, 75, rows=3)
    assert batch["input_ids"].shape == (3, 75) and batch["labels"].shape == (3, 74)
    assert (batch["attention_mask"][:, -1] == 0).all() and (batch["input_ids"][:, -1] == token_info.pad_id).all()
    assert (batch["attention_mask"][:, :-1] == 1).all()


def test_mean_span_one_still_fits(token_info: TokenInfo) -> None:
    """T5's search returns seq_len itself when mean span length is 1 (input seq_len + 1); we step back."""
    obj = make(token_info, noise_density=0.05, mean_noise_span_length=1.0)
    raw = obj.block_length(64)
    assert obj.input_length(raw) <= 64 < obj.input_length(raw + 1)
    _, batch = corrupt(obj, 64, rows=2)
    assert batch["input_ids"].shape == (2, 64)


def test_reconstructs_original_exactly(token_info: TokenInfo) -> None:
    obj = make(token_info)
    blocks, batch = corrupt(obj, 128, rows=16)
    sentinels, eos = set(token_info.sentinel_ids), token_info.eos_id
    for orig, inp, lab in zip(blocks.input_ids.tolist(), batch["input_ids"].tolist(), batch["labels"].tolist()):
        spans = split_targets(lab, sentinels, eos)
        rebuilt: list[int] = []
        for tok in inp:
            if tok == eos:
                break
            rebuilt.extend(spans.pop(0) if tok in sentinels else [tok])
        assert rebuilt == orig and spans == []


def test_deterministic_per_seed(token_info: TokenInfo) -> None:
    obj = make(token_info)
    blocks = random_blocks(8, obj.block_length(128))
    a = obj.corrupt(blocks, torch.Generator().manual_seed(5))
    b = obj.corrupt(blocks, torch.Generator().manual_seed(5))
    c = obj.corrupt(blocks, torch.Generator().manual_seed(6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input_ids"], c["input_ids"])


@pytest.mark.parametrize("kw,key", [
    ({"noise_density": 0.0}, "noise_density"), ({"noise_density": 1.0}, "noise_density"),
    ({"noise_density": "0.15"}, "noise_density"), ({"mean_noise_span_length": 0.5}, "mean_noise_span_length"),
])
def test_config_validation(kw: dict, key: str) -> None:
    with pytest.raises(ObjectiveConfigError, match=rf"{key}=.*allowed values"):
        T5SpanConfig(**kw)


def test_too_few_sentinels_is_a_clear_error(token_info: TokenInfo) -> None:
    few = TokenInfo(**{**token_info.__dict__, "sentinel_ids": token_info.sentinel_ids[:10]})
    obj = make(few)
    assert obj.block_length(64) == 70  # 3 spans: fine
    with pytest.raises(ObjectiveConfigError, match=r"needs 28 noise spans .* 10 sentinels"):
        obj.block_length(512)
    with pytest.raises(ObjectiveConfigError, match="sentinels"):
        obj.corrupt(random_blocks(2, 568), torch.Generator().manual_seed(0))


def tiny_t5() -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(
        vocab_size=1000, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
        pad_token_id=0, eos_token_id=6, decoder_start_token_id=0))


def tiny_bart() -> BartForConditionalGeneration:
    torch.manual_seed(0)
    return BartForConditionalGeneration(BartConfig(
        vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=128,
        pad_token_id=0, bos_token_id=5, eos_token_id=6, decoder_start_token_id=6, forced_eos_token_id=None))


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread, and far faster when other processes load the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("build", [tiny_t5, tiny_bart])
def test_loss_matches_hf_and_trains(token_info: TokenInfo, build, one_thread) -> None:
    obj = make(token_info)
    _, batch = corrupt(obj, 64, rows=8)
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
    assert out.stats["supervised_tokens"].item() == batch["labels"].numel() == 8 * obj.target_length(64)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        result = obj.loss(model, batch)
        opt.zero_grad()
        result.loss.backward()
        opt.step()
        first = result.loss.item() if first is None else first
    assert result.loss.item() < 0.5 * first, (first, result.loss.item())
    assert result.stats["accuracy"].item() > 0.3
