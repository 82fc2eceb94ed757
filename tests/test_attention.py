"""lmbench_sdpa: exactly sdpa in float32; under CPU bf16 autocast the attention core in float32 (at
least as close to the float32 model as stock bf16 sdpa); switched on only for CPU half-precision runs,
and never written into a saved model."""

from __future__ import annotations

import torch
from transformers import AutoModelForSeq2SeqLM, T5Config, T5ForConditionalGeneration

from lmbench.backbones.attention import NAME, use_cpu_attention


def _t5() -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=64, d_ff=128, d_kv=16, num_layers=2,
                                               num_heads=4, decoder_start_token_id=0, pad_token_id=0,
                                               dropout_rate=0.0)).eval()


def _logits(model, batch, bf16: bool) -> torch.Tensor:
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), ctx:
        return model(**batch).logits.float()


def test_float32_attention_is_sdpa_and_bf16_is_at_least_as_close_to_float32(tmp_path) -> None:
    g = torch.Generator().manual_seed(1)
    batch = {"input_ids": torch.randint(1, 100, (4, 20), generator=g), "attention_mask": torch.ones(4, 20, dtype=torch.long),
             "decoder_input_ids": torch.randint(1, 100, (4, 9), generator=g)}
    batch["attention_mask"][0, 15:] = 0  # padding: the mask and T5's position bias both reach the kernel
    model = _t5()
    fp32, stock_bf16 = _logits(model, batch, False), _logits(model, batch, True)
    assert use_cpu_attention(model, "cpu", torch.bfloat16) and model.config._attn_implementation == NAME
    assert torch.equal(_logits(model, batch, False), fp32)  # float32 inputs: exactly sdpa
    ours = _logits(model, batch, True)
    assert (ours - fp32).abs().max() <= (stock_bf16 - fp32).abs().max() * 1.05
    model.save_pretrained(tmp_path)
    assert NAME not in (tmp_path / "config.json").read_text()
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, local_files_only=True)
    assert loaded.config._attn_implementation == "sdpa"


def test_switched_on_only_for_cpu_half_precision_sdpa_models() -> None:
    assert not use_cpu_attention(_t5(), "cpu", torch.float32)
    assert not use_cpu_attention(_t5(), "cuda", torch.bfloat16)
    eager = _t5()
    eager.set_attn_implementation("eager")
    assert not use_cpu_attention(eager, "cpu", torch.bfloat16) and eager.config._attn_implementation == "eager"
    assert use_cpu_attention(_t5(), "cpu", torch.float16)
