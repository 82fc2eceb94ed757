"""Analytic training FLOPs against torch's own FLOP counter, on every family x built-in objective.

The reference is `torch.utils.flop_counter.FlopCounterMode` around a real `objective.loss(...)` plus
`backward()`, so it counts exactly the matmuls a training step runs (the sparse MLM head included).
Models use eager attention: on CPU, PyTorch's fused sdpa kernel has no FLOP formula registered and the
counter would miss the attention matmuls.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

from lmbench.backbones import build_backbone
from lmbench.budget import FlopFormulaError, check_family, mfu, peak_matmul_flops, training_flops
from lmbench.budget.flops import SUPPORTED_FAMILIES
from lmbench.config import BackboneConfig
from lmbench.testing.toy import conformance_tokens, toy_blocks
from lmbench_plugins.bart_infill import BartInfillConfig, BartInfilling
from lmbench_plugins.clm import CausalLM, CLMConfig
from lmbench_plugins.mlm import MaskedLM, MLMConfig
from lmbench_plugins.prefix_lm import PrefixLM, PrefixLMConfig
from lmbench_plugins.t5_span import T5SpanConfig, T5SpanCorruption
from lmbench_plugins.ul2 import UL2, UL2Config

SEQ_LEN, BATCH, VOCAB = 64, 4, 1000
TOKENS = conformance_tokens(VOCAB)
KIND = {"bert": "encoder", "roberta": "encoder", "gpt2": "decoder", "llama": "decoder",
        "t5": "encoder-decoder", "bart": "encoder-decoder"}
# `tiny` (d=128, 4 heads, ffn 512) cut to 2 layers per stack: attention, FFN and vocab terms all matter.
TWO_LAYERS: dict[str, dict[str, Any]] = {
    "bert": dict(num_hidden_layers=2), "roberta": dict(num_hidden_layers=2), "gpt2": dict(n_layer=2),
    "llama": dict(num_hidden_layers=2), "t5": dict(num_layers=2, num_decoder_layers=2),
    "bart": dict(encoder_layers=2, decoder_layers=2),
}
OBJECTIVES = {"mlm": (MaskedLM, MLMConfig), "clm": (CausalLM, CLMConfig), "prefix_lm": (PrefixLM, PrefixLMConfig),
              "t5_span": (T5SpanCorruption, T5SpanConfig), "bart_infill": (BartInfilling, BartInfillConfig),
              "ul2": (UL2, UL2Config)}
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest on a busy machine
PAIRS = [("bert", "mlm"), ("roberta", "mlm"), ("gpt2", "clm"), ("gpt2", "prefix_lm"), ("gpt2", "ul2"),
         ("llama", "clm"), ("llama", "prefix_lm"), ("llama", "ul2"), ("t5", "t5_span"), ("t5", "bart_infill"),
         ("t5", "ul2"), ("bart", "t5_span"), ("bart", "bart_infill"), ("bart", "ul2")]
VARIANTS = [  # family, objective, config overrides, objective config
    ("llama", "clm", dict(num_key_value_heads=2), {}),  # grouped-query attention
    ("t5", "t5_span", dict(feed_forward_proj="gated-gelu"), {}),  # gated FFN: 3 matrices
    ("gpt2", "ul2", {}, dict(backbone_kind="decoder")),  # UL2's decoder layout under plain keys
    ("bart", "ul2", {}, dict(backbone_kind="encoder-decoder")),
    ("roberta", "mlm", {}, dict(masking="span", mlm_probability=0.3)),
]


def setup(family: str, objective: str, overrides: dict[str, Any] | None = None,
          objective_cfg: dict[str, Any] | None = None, attn: str = "eager"):
    """A 2-layer tiny model of `family`, the objective, and one corrupted batch of BATCH rows."""
    torch.manual_seed(0)
    cls, config_cls = OBJECTIVES[objective]
    obj = cls(config_cls(**(objective_cfg or {})), TOKENS)
    obj.backbone_kind = KIND[family]
    block = obj.block_length(SEQ_LEN)
    batch = obj.corrupt(toy_blocks(TOKENS, BATCH, block, seed=1), torch.Generator().manual_seed(0))
    cfg = BackboneConfig(family=family, size="tiny", attn_implementation=attn,
                         config_overrides={**TWO_LAYERS[family], **(overrides or {})})
    model = build_backbone(cfg, KIND[family], TOKENS, max_positions=SEQ_LEN + 2)
    return model, obj, batch, block


def measured_training_flops(model, obj, batch) -> int:
    """FLOPs torch counts for one real training step: the objective's loss and its backward."""
    with FlopCounterMode(display=False) as counter:
        obj.loss(model, batch).loss.backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("family,objective", PAIRS, ids=[f"{f}-{o}" for f, o in PAIRS])
def test_analytic_matches_flop_counter(family: str, objective: str) -> None:
    model, obj, batch, _ = setup(family, objective)
    measured = measured_training_flops(model, obj, batch)
    estimate = training_flops(model, batch, objective)
    ratio = estimate.training / measured
    assert abs(ratio - 1) < 0.10, f"{family} x {objective}: analytic/measured = {ratio:.4f} (issue: within 10%)"
    assert abs(ratio - 1) < 0.02, f"{family} x {objective}: analytic/measured = {ratio:.4f} (regression guard)"
    parts = ("attention_proj", "attention_scores", "ffn", "head")
    assert all(estimate.detail[p] > 0.02 * estimate.forward for p in parts), estimate.detail  # all terms matter


@pytest.mark.parametrize("family,objective,overrides,objective_cfg", VARIANTS,
                         ids=[f"{v[0]}-{v[1]}-{i}" for i, v in enumerate(VARIANTS)])
def test_analytic_matches_flop_counter_variants(family: str, objective: str, overrides: dict[str, Any],
                                                objective_cfg: dict[str, Any]) -> None:
    model, obj, batch, _ = setup(family, objective, overrides, objective_cfg)
    ratio = training_flops(model, batch, objective).training / measured_training_flops(model, obj, batch)
    assert abs(ratio - 1) < 0.02, f"{family} x {objective} {overrides} {objective_cfg}: ratio {ratio:.4f}"


def test_mlm_head_runs_only_at_supervised_positions() -> None:
    model, _, batch, _ = setup("bert", "mlm")
    sparse = training_flops(model, batch, "mlm")
    supervised = int((batch["labels"] != -100).sum())
    assert 0 < supervised < batch["labels"].numel() // 4
    assert sparse.detail["head_positions"] == supervised
    d, vocab = model.config.hidden_size, model.config.vocab_size
    assert sparse.detail["head"] == supervised * 2 * (d * d + d * vocab)
    dense = training_flops(model, {k: v for k, v in batch.items() if k != "labels"}, "mlm")
    assert dense.detail["head_positions"] == batch["input_ids"].numel()
    assert dense.training > 1.2 * sparse.training  # the vocabulary term matters at this size


def test_encoder_decoder_lengths_and_formula_terms() -> None:
    model, _, batch, block = setup("t5", "t5_span")
    est = training_flops(model, batch, "t5_span")
    B, T_in, T_out = BATCH, batch["input_ids"].shape[1], batch["labels"].shape[1]
    assert (est.detail["input_len"], est.detail["target_len"]) == (T_in, T_out) and T_out < T_in
    d, a, f, L = 128, 128, 512, 2
    assert est.detail["cross_attention_scores"] == L * B * T_out * 4 * T_in * a
    assert est.detail["attention_scores"] == L * B * (T_in * 4 * T_in + T_out * 4 * T_out) * a
    assert est.detail["ffn"] == L * B * (T_in + T_out) * 2 * 2 * d * f
    assert est.training == 3 * est.forward
    assert est.per_token == est.training / (B * T_in)
    assert training_flops(model, batch, tokens=B * block).per_token == est.training / (B * block)


def test_unknown_family_names_it_and_the_supported_ones() -> None:
    config = transformers.DistilBertConfig(vocab_size=VOCAB, dim=64, n_layers=1, n_heads=2, hidden_dim=128)
    model = transformers.DistilBertForMaskedLM(config)
    batch = {"input_ids": torch.zeros(2, 8, dtype=torch.long)}
    with pytest.raises(FlopFormulaError, match=r"'distilbert'.*bert, roberta, gpt2, llama, t5, bart"):
        training_flops(model, batch, "mlm")
    with pytest.raises(FlopFormulaError, match="'mamba'"):
        check_family("mamba")
    assert [check_family(f) for f in SUPPORTED_FAMILIES] == list(KIND.values())


def test_batch_without_needed_keys_is_an_error() -> None:
    model = SimpleNamespace(config=transformers.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, num_heads=4,
                                                          d_ff=64, num_layers=1))
    with pytest.raises(FlopFormulaError, match=r"\['decoder_input_ids', 'labels'\].*t5.*input_ids"):
        training_flops(model, {"input_ids": torch.zeros(2, 8, dtype=torch.long)}, "t5_span")


def test_peak_matmul_flops_is_measured_and_cached() -> None:
    peak = peak_matmul_flops("cpu", torch.float32, seconds=0.3, size=512)
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    a @ b
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    single = 5 * 2 * 512 ** 3 / (time.perf_counter() - start)
    assert peak >= 0.5 * single  # best-of-rounds is at least about what a plain timing sees
    start = time.perf_counter()
    assert peak_matmul_flops("cpu", torch.float32, seconds=0.3, size=512) == peak  # cached, no re-timing
    assert time.perf_counter() - start < 0.05


def test_mfu_of_a_real_training_step_is_a_fraction() -> None:
    model, obj, batch, _ = setup("gpt2", "clm", attn="sdpa")
    flops = training_flops(model, batch, "clm").training
    obj.loss(model, batch).loss.backward()  # warm-up
    start = time.perf_counter()
    for _ in range(3):
        obj.loss(model, batch).loss.backward()
    achieved = 3 * flops / (time.perf_counter() - start)
    value = mfu(achieved, peak_matmul_flops("cpu", torch.float32, seconds=0.3, size=1024))
    assert 0.001 < value < 1.0
    assert mfu(50.0, 200.0) == 0.25
    with pytest.raises(ValueError, match="peak=0"):
        mfu(1.0, 0)
