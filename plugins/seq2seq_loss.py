"""Teacher-forced cross-entropy for encoder-decoder objectives (T5 span corruption, BART infilling).

Both seq2seq objectives train the same way once their batch is built: the decoder reads the labels
shifted right and predicts them. Hugging Face models would do this themselves when given `labels`,
but lmbench objectives own their loss, so the shift is delegated to the model's own
`prepare_decoder_input_ids_from_labels` (it turns -100 into pad and prepends the model's
`decoder_start_token_id`, which differs between T5 and BART) and the cross-entropy is computed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from lmbench.backbones.heads import seq2seq_projection
from lmbench.objectives.base import Batch, LossOutput
from lmbench.objectives.lm_loss import linear_cross_entropy

if TYPE_CHECKING:
    from transformers import PreTrainedModel

IGNORE_INDEX = -100


def seq2seq_loss(model: PreTrainedModel, batch: Batch) -> LossOutput:
    """Mean cross-entropy over label positions that are not -100, computed on float32 logits.

    `batch` needs `input_ids` (B, Lin), `attention_mask` (B, Lin) and `labels` (B, Ltgt); other keys
    (e.g. `stat_*` audit tensors) are ignored. Stats: `supervised_tokens` (count of labels != -100)
    and `accuracy` (argmax token accuracy on those positions).
    """
    labels = batch["labels"]  # (B, T)
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)  # (B, T)
    projection = seq2seq_projection(model, batch["input_ids"], batch["attention_mask"], decoder_input_ids)
    if projection is not None:  # T5 / BART: the blockwise vocabulary loss, no float32 (B, T, V) logits
        hidden = projection.hidden.reshape(-1, projection.hidden.size(-1))  # (B*T, H)
        total, correct, count = linear_cross_entropy(hidden, projection.weight, labels.reshape(-1), projection.bias)
        denom = count.clamp(min=1)
        return LossOutput(loss=total / denom, stats={"supervised_tokens": count.detach(),
                                                     "accuracy": correct.float() / denom})
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                decoder_input_ids=decoder_input_ids)
    logits = out.logits.float()  # (B, T, V) float32 even under bf16 autocast
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    with torch.no_grad():
        supervised = labels != IGNORE_INDEX  # (B, T)
        count = supervised.sum()
        correct = ((logits.argmax(dim=-1) == labels) & supervised).sum()
        accuracy = correct.float() / count.clamp_min(1).float()
    return LossOutput(loss=loss, stats={"supervised_tokens": count, "accuracy": accuracy})
