"""The last hidden states and the vocabulary projection of a `transformers` LM, taken apart.

Objectives compute their own loss, and the cheapest loss (`lmbench.objectives.lm_loss`) needs what the
model feeds its output layer rather than the logits. Each function here knows, for the families lmbench
builds and tests, exactly what the stock `*ForCausalLM` / `*ForConditionalGeneration` / `*ForMaskedLM`
forward does between the backbone and the logits (T5's decoder-output scaling, BART's final logits bias,
BERT's and RoBERTa's transform before the decoder), and returns None for any other class, so callers
fall back to the model's own logits: never a silently different computation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.activations import gelu

PLAIN_CAUSAL_HEADS = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}  # logits = lm_head(base(x))
SEQ2SEQ_CLASSES = {"t5": "T5ForConditionalGeneration", "bart": "BartForConditionalGeneration"}
MLM_CLASSES = {"bert": "BertForMaskedLM", "roberta": "RobertaForMaskedLM"}


@dataclass
class Projection:
    """Hidden states (B, T, H) and the output layer that maps them to logits: hidden @ weight.T + bias."""

    hidden: Tensor
    weight: Tensor  # (V, H)
    bias: Optional[Tensor]  # (V,) or None


def _is(model: nn.Module, table: dict[str, str]) -> bool:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return table.get(model_type or "") == type(model).__name__


def causal_projection(model: PreTrainedModel, **inputs: Tensor) -> Optional[Projection]:
    """GPT-2 / Llama causal LMs: the final-norm hidden states and lm_head; None for other classes."""
    if not _is(model, PLAIN_CAUSAL_HEADS):
        return None
    hidden = model.base_model(**inputs).last_hidden_state  # (B, T, H), after the final norm
    head = model.get_output_embeddings()
    return Projection(hidden, head.weight, head.bias)


def seq2seq_projection(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor,
                       decoder_input_ids: Tensor) -> Optional[Projection]:
    """T5 / BART: the decoder's last hidden states as the stock forward hands them to lm_head (T5 scaled
    by d_model**-0.5 where its config says so; BART's final_logits_bias as the bias); None otherwise."""
    if not _is(model, SEQ2SEQ_CLASSES):
        return None
    head = model.get_output_embeddings()
    if model.config.model_type == "bart":
        hidden = model.model(input_ids=input_ids, attention_mask=attention_mask,
                             decoder_input_ids=decoder_input_ids).last_hidden_state  # (B, T, H)
        return Projection(hidden, head.weight, model.final_logits_bias[0])
    encoded = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    hidden = model.get_decoder()(input_ids=decoder_input_ids, encoder_hidden_states=encoded,
                                 encoder_attention_mask=attention_mask).last_hidden_state  # (B, T, H)
    if getattr(model.config, "scale_decoder_outputs", False):
        hidden = hidden * (model.config.d_model ** -0.5)
    return Projection(hidden, head.weight, head.bias)


def mlm_projection(model: PreTrainedModel, hidden: Tensor) -> Optional[Projection]:
    """BERT / RoBERTa masked LMs: encoder states (.., H) through the head's transform, and its decoder."""
    if not _is(model, MLM_CLASSES):
        return None
    if model.config.model_type == "bert":
        predictions = model.cls.predictions
        return Projection(predictions.transform(hidden), predictions.decoder.weight, predictions.decoder.bias)
    head = model.lm_head
    return Projection(head.layer_norm(gelu(head.dense(hidden))), head.decoder.weight, head.decoder.bias)
