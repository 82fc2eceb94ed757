"""The blockwise vocabulary loss against the plain one (F.linear + float32 cross-entropy), and every
model family's projection against the model's own logits, so the fast path never changes what is trained."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lmbench.objectives.lm_loss as lm_loss
from lmbench.backbones.heads import causal_projection, mlm_projection, seq2seq_projection
from lmbench.objectives.lm_loss import IGNORE_INDEX, linear_cross_entropy


def _reference(h, w, b, y, dtype):
    ctx = torch.autocast("cpu", dtype=dtype) if dtype else torch.autocast("cpu", enabled=False)
    with ctx:
        logits = F.linear(h, w, b).float()  # (N, V)
    keep = y != IGNORE_INDEX
    loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")
    correct = (logits[keep].argmax(-1) == y[keep]).sum()
    return loss, correct, keep.sum()


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
def test_equals_linear_plus_float32_cross_entropy(autocast, bias, monkeypatch) -> None:
    monkeypatch.setattr(lm_loss, "BLOCK_BYTES", 64 * 1000 * 4)  # several blocks and chunks in one call
    g = torch.Generator().manual_seed(0)
    n, hdim, vocab = 700, 24, 1000
    h = torch.randn(n, hdim, generator=g, requires_grad=True)
    w = (torch.randn(vocab, hdim, generator=g) * 0.3).requires_grad_()
    b = (torch.randn(vocab, generator=g) * 0.3).requires_grad_() if bias else None
    y = torch.randint(0, vocab, (n,), generator=g)
    y[::5] = IGNORE_INDEX
    y[1] = int(torch.argmax(F.linear(h[1], w, b)))  # at least one row is right
    params = [h, w] + ([b] if bias else [])
    ref_loss, ref_correct, ref_count = _reference(h, w, b, y, autocast)
    ref_grads = torch.autograd.grad(ref_loss, params)
    ctx = torch.autocast("cpu", dtype=autocast) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        loss, correct, count = linear_cross_entropy(h, w, y, b)
    grads = torch.autograd.grad(loss, params)
    rtol = 1e-5 if autocast is None else 1e-2  # bf16 gradients: each side rounds to bf16 (2^-8) at its own points
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    assert int(count) == int(ref_count) == 560 and int(correct) == int(ref_correct) >= 1
    for mine, theirs in zip(grads, ref_grads):
        assert mine.dtype == theirs.dtype
        assert (mine - theirs).abs().max() <= rtol * theirs.abs().max() + 1e-7


def test_bf16_weights_no_grad_and_no_targets() -> None:
    g = torch.Generator().manual_seed(1)
    h = torch.randn(40, 16, generator=g).bfloat16().requires_grad_()
    w = torch.randn(300, 16, generator=g).bfloat16().requires_grad_()
    y = torch.randint(0, 300, (40,), generator=g)
    loss, _, _ = linear_cross_entropy(h, w, y)  # bf16-true: products in bf16, softmax in fp32
    ref, _, _ = _reference(h.float(), w.float(), None, y, None)
    assert loss.item() == pytest.approx(ref.item(), rel=2e-2)
    loss.backward()
    assert h.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.bfloat16
    with torch.no_grad():
        assert linear_cross_entropy(h, w, y)[0].item() == pytest.approx(loss.item())
    empty = linear_cross_entropy(h.float(), w.float(), torch.full((40,), IGNORE_INDEX))
    assert [int(t) for t in empty] == [0, 0, 0]


def _family_models(vocab: int = 120):
    from transformers import (BartConfig, BartForConditionalGeneration, BertConfig, BertForMaskedLM, GPT2Config,
                              GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, RobertaConfig, RobertaForMaskedLM,
                              T5Config, T5ForConditionalGeneration)
    small = dict(vocab_size=vocab, pad_token_id=0)
    torch.manual_seed(0)
    return {
        "gpt2": GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, **small)),
        "llama": LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                              num_attention_heads=2, num_key_value_heads=2, **small)),
        "t5": T5ForConditionalGeneration(T5Config(d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2,
                                                  decoder_start_token_id=0, **small)),
        "bart": BartForConditionalGeneration(BartConfig(d_model=32, encoder_layers=1, decoder_layers=1,
                                                        encoder_attention_heads=2, decoder_attention_heads=2,
                                                        encoder_ffn_dim=64, decoder_ffn_dim=64,
                                                        max_position_embeddings=64, decoder_start_token_id=2,
                                                        **small)),
        "bert": BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=64, max_position_embeddings=64, **small)),
        "roberta": RobertaForMaskedLM(RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                    intermediate_size=64, max_position_embeddings=70, **small)),
    }


@pytest.mark.parametrize("family", ["gpt2", "llama", "t5", "bart", "bert", "roberta"])
def test_projection_gives_the_models_own_logits(family: str) -> None:
    model = _family_models()[family].eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(2)
        ids = torch.randint(3, 120, (2, 12), generator=g)
        mask = torch.ones_like(ids)
        if family in ("t5", "bart"):
            dec = torch.randint(3, 120, (2, 7), generator=g)
            logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
            proj = seq2seq_projection(model, ids, mask, dec)
        elif family in ("gpt2", "llama"):
            logits = model(input_ids=ids, attention_mask=mask).logits
            proj = causal_projection(model, input_ids=ids, attention_mask=mask)
        else:
            logits = model(input_ids=ids, attention_mask=mask).logits
            proj = mlm_projection(model, model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state)
        mine = F.linear(proj.hidden, proj.weight, proj.bias)
    assert torch.allclose(mine, logits, atol=1e-5), (mine - logits).abs().max()


def test_other_classes_fall_back_to_their_own_logits() -> None:
    from transformers import DistilBertConfig, DistilBertForMaskedLM, GPT2Config, GPT2ForSequenceClassification

    gpt2_cls = GPT2ForSequenceClassification(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50))
    assert causal_projection(gpt2_cls, input_ids=torch.ones(1, 3, dtype=torch.long)) is None
    distil = DistilBertForMaskedLM(DistilBertConfig(dim=16, n_layers=1, n_heads=2, hidden_dim=32, vocab_size=50))
    assert mlm_projection(distil, torch.zeros(2, 16)) is None
