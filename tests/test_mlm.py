"""Tests of the built-in `mlm` objective: corruption statistics against the promised rates on >= 1M
tokens, word and span structure, reproducibility, config errors, and the sparse-head loss against the
dense Hugging Face logits on tiny local BERT / RoBERTa models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmbench.objectives import Blocks, ObjectiveConfigError, TokenInfo, default_registry
from lmbench_plugins.mlm import MaskedLM, MLMConfig, mlm_head

ROWS, LENGTH = 2048, 512  # 1,048,576 tokens
ORDINARY = (7, 900)  # [low, high) ordinary ids of the conftest vocabulary


def make_blocks(token_info: TokenInfo, rows: int = ROWS, length: int = LENGTH, seed: int = 0,
                specials: bool = True) -> Blocks:
    """Random ordinary tokens with [CLS] at 0, scattered [SEP]/[UNK]/sentinels and padded row tails."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(*ORDINARY, (rows, length), generator=g)  # (B, L)
    if specials:
        u = torch.rand(rows, length, generator=g)  # (B, L)
        ids[u < 0.03] = token_info.sep_id
        ids[(u >= 0.03) & (u < 0.04)] = token_info.unk_id
        ids[(u >= 0.04) & (u < 0.045)] = token_info.sentinel_ids[0]
        ids[:, 0] = token_info.cls_id
        pad_from = torch.randint(length // 2, length + 1, (rows,), generator=g)  # (B,)
        pad_from[rows // 2:] = length  # half of the rows are unpadded
        ids[torch.arange(length) >= pad_from[:, None]] = token_info.pad_id
    word_starts = torch.rand(rows, length, generator=g) < 0.6  # (B, L) column 0 sometimes mid-word
    return Blocks(input_ids=ids, word_starts=word_starts)


def is_special(token_info: TokenInfo, ids: torch.Tensor) -> torch.Tensor:
    return token_info.special_mask(ids)


def corrupt(token_info: TokenInfo, blocks: Blocks, seed: int = 0, **overrides) -> dict[str, torch.Tensor]:
    objective = MaskedLM(MLMConfig(**{"add_cls_sep": False, **overrides}), token_info)  # aligned with blocks
    return objective.corrupt(blocks, torch.Generator().manual_seed(seed))


def rates(token_info: TokenInfo, blocks: Blocks, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Reference measurement, written independently of MaskedLM.measure_stats."""
    ids, inputs = blocks.input_ids, batch["input_ids"]
    selected = batch["labels"] != -100
    eligible = ~is_special(token_info, ids)
    n = selected.sum().item()
    random = (selected & (inputs != ids) & (inputs != token_info.mask_id)).sum().item()
    return {"selection_rate": n / eligible.sum().item(),
            "mask_fraction": (selected & (inputs == token_info.mask_id)).sum().item() / n,
            "random_fraction": random / n,
            "keep_fraction": (selected & (inputs == ids)).sum().item() / n}


@pytest.fixture(scope="module")
def token_blocks() -> Blocks:
    sentinels = tuple(999 - k for k in range(100))
    info = TokenInfo(vocab_size=1000, pad_id=0, mask_id=4, bos_id=5, eos_id=6, cls_id=2, sep_id=3, unk_id=1,
                     special_ids=tuple(sorted({0, 1, 2, 3, 4, 5, 6, *sentinels})), sentinel_ids=sentinels)
    return make_blocks(info)


def test_token_masking_matches_promised_rates(token_info: TokenInfo, token_blocks: Blocks) -> None:
    blocks = token_blocks
    objective = MaskedLM(MLMConfig(add_cls_sep=False), token_info)
    batch = objective.corrupt(blocks, torch.Generator().manual_seed(0))
    ids, inputs, labels = blocks.input_ids, batch["input_ids"], batch["labels"]
    assert inputs.shape == labels.shape == batch["attention_mask"].shape == ids.shape
    assert inputs.dtype == labels.dtype == batch["attention_mask"].dtype == torch.int64
    measured = rates(token_info, blocks, batch)
    for key, promised in objective.promised_stats().items():
        assert abs(measured[key] - promised.value) <= promised.tolerance, (key, measured[key])
    assert objective.promised_stats()["selection_rate"].value == 0.15
    # measure_stats (random/keep corrected for the 1/V coincidence) agrees with the reference.
    for key, value in objective.measure_stats(blocks, batch).items():
        assert abs(value - measured[key]) < 2e-3, key

    special = is_special(token_info, ids)
    selected = labels != -100
    assert not (selected & special).any(), "a special or padding token was selected"
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected]), "an unselected token changed"
    assert not is_special(token_info, inputs[selected & (inputs != token_info.mask_id)]).any(), \
        "a random replacement drew a special token"
    assert torch.equal(batch["attention_mask"], (ids != token_info.pad_id).long())
    # random replacements are spread over the whole ordinary vocabulary, not a few ids
    replaced = inputs[selected & (inputs != ids) & (inputs != token_info.mask_id)]
    assert replaced.unique().numel() > 850  # 893 ordinary ids, ~15,000 draws


def test_custom_rates_are_honoured(token_info: TokenInfo, token_blocks: Blocks) -> None:
    cfg = dict(mlm_probability=0.3, mask_replace_prob=0.5, random_replace_prob=0.25)
    batch = corrupt(token_info, token_blocks, seed=3, **cfg)
    measured = rates(token_info, token_blocks, batch)
    assert abs(measured["selection_rate"] - 0.3) <= 0.005
    assert abs(measured["mask_fraction"] - 0.5) <= 0.01
    assert abs(measured["random_fraction"] - 0.25) <= 0.01
    assert abs(measured["keep_fraction"] - 0.25) <= 0.01
    promised = MaskedLM(MLMConfig(**cfg), token_info).promised_stats()
    assert promised["keep_fraction"].value == pytest.approx(0.25)


@pytest.mark.parametrize("masking", ["token", "whole_word", "span"])
def test_all_mask_and_all_keep_extremes(token_info: TokenInfo, masking: str) -> None:
    blocks = make_blocks(token_info, rows=64, length=128)
    special = is_special(token_info, blocks.input_ids)
    everything = corrupt(token_info, blocks, mlm_probability=1.0, mask_replace_prob=1.0,
                         random_replace_prob=0.0, masking=masking)
    assert torch.equal(everything["labels"] != -100, ~special)
    assert (everything["input_ids"][~special] == token_info.mask_id).all()
    nothing = corrupt(token_info, blocks, mlm_probability=0.0, masking=masking)
    assert (nothing["labels"] == -100).all() and torch.equal(nothing["input_ids"], blocks.input_ids)


def test_whole_word_masking_never_splits_a_word(token_info: TokenInfo, token_blocks: Blocks) -> None:
    blocks = token_blocks
    batch = corrupt(token_info, blocks, masking="whole_word")
    selected = batch["labels"] != -100
    special = is_special(token_info, blocks.input_ids)
    assert not (selected & special).any()
    # A non-start ordinary token continues the word of its ordinary left neighbour: same fate.
    continues = ~blocks.word_starts[:, 1:] & ~special[:, 1:] & ~special[:, :-1]  # (B, L-1)
    assert continues.float().mean() > 0.3
    assert torch.equal(selected[:, 1:][continues], selected[:, :-1][continues]), "a word was split"
    measured = rates(token_info, blocks, batch)
    assert abs(measured["selection_rate"] - 0.15) <= 0.005
    assert abs(measured["mask_fraction"] - 0.8) <= 0.01
    assert abs(measured["random_fraction"] - 0.1) <= 0.01
    # a word is selected with probability 0.15 (words counted from their ordinary start tokens)
    word_start = ~special & (blocks.word_starts | special.roll(1, dims=1))
    word_start[:, 0] = ~special[:, 0]
    assert abs(selected[word_start].float().mean().item() - 0.15) <= 0.005


def test_whole_word_masking_without_word_boundaries_fails_clearly(token_info: TokenInfo) -> None:
    blocks = make_blocks(token_info, rows=4, length=16)
    with pytest.raises(ValueError, match="whole_word needs word boundaries.*fast tokenizer"):
        corrupt(token_info, Blocks(blocks.input_ids), masking="whole_word")


@pytest.mark.parametrize("probability", [0.15, 0.4])
def test_span_masking_rate_and_span_lengths(token_info: TokenInfo, token_blocks: Blocks,
                                            probability: float) -> None:
    batch = corrupt(token_info, token_blocks, masking="span", mlm_probability=probability)
    measured = rates(token_info, token_blocks, batch)
    assert abs(measured["selection_rate"] - probability) <= 0.005
    assert abs(measured["mask_fraction"] - 0.8) <= 0.01
    selected = batch["labels"] != -100
    assert not (selected & is_special(token_info, token_blocks.input_ids)).any()
    runs = (selected[:, 1:] & ~selected[:, :-1]).sum() + selected[:, 0].sum()
    assert selected.sum() / runs > 2.5  # token masking would give ~1.2 at 0.15

    # Without specials, each maximal run is one span: SpanBERT lengths (mean 3.8, at most 10).
    plain = make_blocks(token_info, rows=4096, length=256, specials=False)
    sel = corrupt(token_info, plain, seed=1, masking="span", mlm_probability=probability)["labels"] != -100
    assert abs(sel.float().mean().item() - probability) <= 0.005
    edges = torch.diff(torch.nn.functional.pad(sel.int(), (1, 1)), dim=1)  # (B, L + 1) +1 start, -1 stop
    starts, stops = (edges == 1).nonzero()[:, 1], (edges == -1).nonzero()[:, 1]
    lengths = (stops - starts).float()
    assert lengths.max() <= 10
    assert 3.5 < lengths.mean().item() < 3.85, lengths.mean()  # 3.80, less spans cut by the block end


def test_span_masking_has_no_block_edge_bias(token_info: TokenInfo) -> None:
    # Short blocks make edge effects visible: a process started "in a gap" would select ~1.5 pp too few.
    blocks = make_blocks(token_info, rows=32768, length=32, specials=False)
    sel = (corrupt(token_info, blocks, seed=2, masking="span")["labels"] != -100).float()  # (B, L)
    assert abs(sel.mean().item() - 0.15) <= 0.005
    per_position = sel.mean(dim=0)  # (L,) std ~0.002 each
    assert (per_position[:4] - 0.15).abs().max() < 0.01 and (per_position[-4:] - 0.15).abs().max() < 0.01


def test_same_seed_same_output_other_seed_differs(token_info: TokenInfo) -> None:
    blocks = make_blocks(token_info, rows=32, length=128)
    for masking in ("token", "whole_word", "span"):
        a, b = corrupt(token_info, blocks, 7, masking=masking), corrupt(token_info, blocks, 7, masking=masking)
        c = corrupt(token_info, blocks, 8, masking=masking)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not torch.equal(a["labels"], c["labels"])


@pytest.mark.parametrize("overrides, words", [
    (dict(mlm_probability=1.5), ["mlm_probability=1.5", "[0, 1]"]),
    (dict(mask_replace_prob=-0.1), ["mask_replace_prob=-0.1", "[0, 1]"]),
    (dict(random_replace_prob=2), ["random_replace_prob=2", "[0, 1]"]),
    (dict(mask_replace_prob=0.8, random_replace_prob=0.3), ["mask_replace_prob + random_replace_prob", "0.8",
                                                            "0.3", "exceeds 1"]),
    (dict(masking="wholeword"), ["masking='wholeword'", "token, whole_word, span"]),
    (dict(span_geometric_p=0.0), ["span_geometric_p=0.0", "> 0"]),
    (dict(span_max_length=0), ["span_max_length=0", ">= 1"]),
])
def test_config_validation_names_key_value_and_range(overrides: dict, words: list[str]) -> None:
    with pytest.raises(ObjectiveConfigError) as info:
        MLMConfig(**overrides)
    for word in words:
        assert word in str(info.value)


def test_registered_under_mlm() -> None:
    cls = default_registry().get("mlm")
    assert cls is MaskedLM and cls.backbone_kinds == ("encoder",) and cls.config_class is MLMConfig
    assert MLMConfig().name == "mlm"


# ---------------------------------------------------------------------------------------------- loss


def tiny_model(family: str = "bert") -> torch.nn.Module:
    import transformers as tf

    common = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=128, max_position_embeddings=80, pad_token_id=0,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    if family == "bert":
        return tf.BertForMaskedLM(tf.BertConfig(**common))
    if family == "roberta":
        return tf.RobertaForMaskedLM(tf.RobertaConfig(**common))
    return tf.DistilBertForMaskedLM(tf.DistilBertConfig(vocab_size=1000, dim=64, n_layers=2, n_heads=2,
                                                        hidden_dim=128, max_position_embeddings=80,
                                                        pad_token_id=0, dropout=0.0, attention_dropout=0.0))


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_sparse_head_loss_equals_dense_logits_loss(token_info: TokenInfo, family: str) -> None:
    model = tiny_model(family).eval()
    assert (mlm_head(model) is None) == (family == "distilbert")  # distilbert takes the dense fallback
    objective = MaskedLM(MLMConfig(), token_info)
    batch = objective.corrupt(make_blocks(token_info, rows=8, length=64), torch.Generator().manual_seed(0))
    out = objective.loss(model, batch)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, L, V)
    dense = F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=-100)
    assert abs(out.loss.item() - dense.item()) < 1e-5
    supervised = batch["labels"] != -100
    assert out.stats["supervised_tokens"].item() == supervised.sum().item() > 0
    accuracy = (logits.argmax(-1)[supervised] == batch["labels"][supervised]).float().mean()
    assert out.stats["mlm_accuracy"].item() == pytest.approx(accuracy.item())
    assert not out.stats["mlm_accuracy"].requires_grad


def test_loss_under_bf16_autocast_and_with_nothing_supervised(token_info: TokenInfo) -> None:
    model = tiny_model().eval()
    objective = MaskedLM(MLMConfig(), token_info)
    batch = objective.corrupt(make_blocks(token_info, rows=8, length=64), torch.Generator().manual_seed(0))
    fp32 = objective.loss(model, batch).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = objective.loss(model, batch).loss
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16)
    assert abs(bf16.item() - fp32.item()) < 0.05 * fp32.item()
    bf16.backward()
    assert model.bert.embeddings.word_embeddings.weight.grad is not None
    empty = dict(batch, labels=torch.full_like(batch["labels"], -100))
    out = objective.loss(model, empty)
    assert out.loss.item() == 0.0 and out.stats["supervised_tokens"].item() == 0


def test_loss_decreases_when_training_tiny_bert(token_info: TokenInfo) -> None:
    model = tiny_model().train()
    objective = MaskedLM(MLMConfig(), token_info)
    batch = objective.corrupt(make_blocks(token_info, rows=8, length=64), torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = objective.loss(model, batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[0] == pytest.approx(6.9, abs=0.3)  # ~ln(1000) at initialisation
    assert losses[-1] < 0.5 * losses[0], losses


def test_blocks_are_framed_as_cls_block_sep_by_default(token_info: TokenInfo) -> None:
    framed = MaskedLM(MLMConfig(), token_info)
    bare = MaskedLM(MLMConfig(add_cls_sep=False), token_info)
    assert framed.block_length(128) == 126 and bare.block_length(128) == 128
    blocks = make_blocks(token_info, rows=16, length=framed.block_length(128))
    out = framed.corrupt(blocks, torch.Generator().manual_seed(3))
    ref = bare.corrupt(blocks, torch.Generator().manual_seed(3))
    assert out["input_ids"].shape == (16, 128)
    assert (out["input_ids"][:, 0] == token_info.cls_id).all() and (out["input_ids"][:, -1] == token_info.sep_id).all()
    assert (out["labels"][:, [0, -1]] == -100).all() and (out["attention_mask"][:, [0, -1]] == 1).all()
    for key in ("input_ids", "labels", "attention_mask"):
        assert torch.equal(out[key][:, 1:-1], ref[key])  # the frame changes nothing inside the block
    assert framed.measure_stats(blocks, out) == bare.measure_stats(blocks, ref)
