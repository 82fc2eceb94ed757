"""Zero-shot log-likelihood of candidate fillers for one slot in a text, for every objective family.

lm-evaluation-harness scores only causal models and OpenPrompt cuts multi-token label words to their
first piece; lmbench compares MLM, causal and seq2seq objectives, so each family is scored the way it
was trained, and every candidate is scored WHOLE, with all its pieces:

- encoder (MLM): pseudo-log-likelihood (Salazar et al. 2020). A candidate of n pieces fills the slot;
  PLL = sum_i log p(piece_i | text, the other pieces in place, piece_i masked), one masked copy per
  piece. A one-piece candidate reduces to log p(piece) at a single [MASK]. The text is framed by the
  tokenizer's own template ("[CLS] text [SEP]"), as transformers' fill-mask pipeline does.
- decoder (causal): the total log-likelihood of the filled text, log p(prefix candidate suffix),
  read after a document separator (</s>, as in lmbench's packed training stream; GPT-2's bos is the
  same token). The prefix is identical for every candidate, so this ranks candidates exactly as
  log p(candidate suffix | prefix): the suffix counts, so "the [MASK] was tasty" can prefer "food".
  `decoder_score="candidate"` sums over the candidate's tokens only, log p(candidate | prefix).
- encoder-decoder, T5 style (sentinels): the encoder reads "prefix <extra_id_0> suffix </s>" and
  the decoder target is "<extra_id_0> candidate <extra_id_1> </s>" (without <extra_id_1> when the
  slot ends the text), exactly what lmbench's span corruption builds for that single span. BART
  style (model_type bart: trained to reconstruct, no sentinels): the encoder reads
  "prefix [MASK] suffix </s>" and the target is the whole filled text "prefix candidate suffix </s>".
  The decoder input comes from the model's `prepare_decoder_input_ids_from_labels`, so the config's
  decoder_start_token_id is used.

The candidate's tokens are found by character offsets in the tokenized filled text (the token(s)
covering the candidate and the whitespace before it, as lmbench's [MASK] absorbs that space), so
BPE's leading-space pieces and WordPiece's ## pieces are both right. All rows of all examples are
sorted by length and run in batches of `batch_size`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lmbench.eval.family import INFILL_FAMILIES, LoadedModel

SLOT = "[MASK]"
IGNORE = -100
DECODER_SCORES: tuple[str, ...] = ("sentence", "candidate")
DEFAULT_MAX_CANDIDATES = 2000
# model_type -> attribute of the ...ForMaskedLM model holding the head (hidden states -> vocabulary logits)
MLM_HEADS: dict[str, str] = {"bert": "cls", "roberta": "lm_head", "xlm-roberta": "lm_head", "camembert": "lm_head"}


class SlotError(ValueError):
    """A text does not hold exactly one slot, or a candidate is empty; the message names the text."""


class Completion(NamedTuple):
    """One fill-mask answer: `token` (the filler), `score` (a probability), the filled `sequence`."""

    token: str
    score: float
    sequence: str


def split_slot(text: str, slot: str = SLOT) -> tuple[str, str]:
    """(prefix, suffix) around the one `slot` in `text`; `SlotError` for none or several."""
    count = text.count(slot)
    if count != 1:
        what = "no" if count == 0 else f"{count}"
        raise SlotError(f"text {text!r} has {what} {slot} slot(s); it needs exactly one, where the "
                        "candidate word goes (e.g. \"The film was [MASK] .\")")
    prefix, suffix = text.split(slot)
    return prefix, suffix


def _encode_filled(loaded: LoadedModel, prefix: str, words: Sequence[str], suffix: str,
                   add_special_tokens: bool) -> list[tuple[Tensor, Tensor]]:
    """Tokenize prefix + word + suffix for every word: [(ids (T,), is_candidate (T,) bool)]."""
    tok = loaded.tokenizer
    enc = tok([prefix + w + suffix for w in words], add_special_tokens=add_special_tokens,
              return_offsets_mapping=True, return_special_tokens_mask=True)
    start = len(prefix.rstrip())  # the candidate owns the whitespace before it
    out = []
    for word, ids, offsets, special in zip(words, enc["input_ids"], enc["offset_mapping"],
                                           enc["special_tokens_mask"]):
        end = len(prefix) + len(word)
        span = torch.tensor(offsets, dtype=torch.long).view(-1, 2)  # (T, 2) character offsets
        is_cand = (span[:, 0] < end) & (span[:, 1] > start) & (span[:, 1] > span[:, 0])  # (T,)
        is_cand &= ~torch.tensor(special, dtype=torch.bool)  # (T,)
        if not word.strip() or not bool(is_cand.any()):
            raise SlotError(f"candidate {word!r} for {prefix + SLOT + suffix!r} produces no token; "
                            "candidates must be non-empty words")
        out.append((torch.tensor(ids, dtype=torch.long), is_cand))
    return out


@dataclass(frozen=True)
class _Framing:
    """The special ids one family's rows are built with, looked up once per call."""

    kind: str
    mask_id: int | None  # encoder rows and BART-style encoder inputs
    eos_id: int | None  # document separator (decoder) and end of sequence (seq2seq)
    sentinels: tuple[int, int] | None  # (<extra_id_0>, <extra_id_1>) for T5-style seq2seq, else None


def _framing(loaded: LoadedModel) -> _Framing:
    """Which ids the rows need, failing early (naming the family) when the tokenizer lacks one."""
    tok = loaded.tokenizer
    mask_id, eos_id = tok.mask_token_id, tok.eos_token_id
    sentinels = None
    if loaded.kind == "encoder-decoder" and loaded.family not in INFILL_FAMILIES:
        ids = tok.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_1>"])
        if all(i is not None and i != tok.unk_token_id for i in ids):
            sentinels = (int(ids[0]), int(ids[1]))
    needs = {"encoder": [("mask", mask_id)], "decoder": [("eos", eos_id)],
             "encoder-decoder": [("eos", eos_id)] + ([] if sentinels else [("mask (or <extra_id_0>)", mask_id)])}
    missing = [name for name, value in needs[loaded.kind] if value is None]
    if missing:
        raise SlotError(f"the {loaded.family} tokenizer has no {' or '.join(missing)} token, which scoring a "
                        f"{loaded.kind} model needs")
    return _Framing(loaded.kind, mask_id, eos_id, sentinels)


def _rows_for(framing: _Framing, ids: Tensor, is_cand: Tensor,
              decoder_score: str) -> list[tuple[Tensor, Tensor]]:
    """The scoring rows of one filled text: [(model input ids, labels)], labels -100 where unscored.

    encoder: one row per candidate piece with that piece masked, label at it (same length as input).
    decoder: one row, separator + ids; labels unshifted (the scorer shifts). seq2seq: encoder ids, target.
    """
    pos = is_cand.nonzero().squeeze(1)  # (n,) candidate pieces, contiguous
    if framing.kind == "encoder":
        n = pos.numel()
        rows = ids.expand(n, -1).clone()  # (n, T)
        arange = torch.arange(n)
        rows[arange, pos] = framing.mask_id
        labels = torch.full_like(rows, IGNORE)  # (n, T)
        labels[arange, pos] = ids[pos]
        return list(zip(rows, labels))
    end = ids.new_tensor([framing.eos_id])
    if framing.kind == "decoder":
        inputs = torch.cat([end, ids])  # (T+1,) a document starts after </s>
        keep = is_cand if decoder_score == "candidate" else torch.ones_like(is_cand)
        labels = torch.cat([ids.new_tensor([IGNORE]), ids.masked_fill(~keep, IGNORE)])  # (T+1,)
        return [(inputs, labels)]
    first, last = int(pos[0]), int(pos[-1]) + 1
    before, piece, after = ids[:first], ids[first:last], ids[last:]
    if framing.sentinels is None:  # BART: one mask in the encoder, the whole text as the target
        mask = ids.new_tensor([framing.mask_id])
        return [(torch.cat([before, mask, after, end]), torch.cat([ids, end]))]
    s0, s1 = (ids.new_tensor([s]) for s in framing.sentinels)
    closing = s1 if after.numel() else s1[:0]  # span corruption closes a span followed by text
    return [(torch.cat([before, s0, after, end]), torch.cat([s0, piece, closing, end]))]


def _pad(seqs: Sequence[Tensor], value: int) -> Tensor:
    return torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True, padding_value=value)  # (B, Lmax)


def _masked_lm_logits(model: torch.nn.Module, inputs: Tensor, attention: Tensor, scored: Tensor) -> Tensor:
    """Vocabulary logits of an MLM at the `scored` positions only. (N, V)

    The head runs on N hidden states instead of B * L (PLL rows score one position each); heads
    of unknown families fall back to the full model output, which is the same numbers.
    """
    head = getattr(model, MLM_HEADS.get(str(model.config.model_type), ""), None)
    if head is None or not type(model).__name__.endswith("ForMaskedLM"):
        return model(input_ids=inputs, attention_mask=attention).logits[scored]  # (N, V)
    hidden = model.base_model(input_ids=inputs, attention_mask=attention).last_hidden_state  # (B, L, H)
    return head(hidden[scored])  # (N, V)


@torch.no_grad()
def _score_rows(loaded: LoadedModel, rows: list[tuple[Tensor, Tensor]], batch_size: int) -> Tensor:
    """Summed log-probability of each row's labels. (R,) float32, in the order of `rows`."""
    model, device = loaded.model, loaded.device
    pad = loaded.tokenizer.pad_token_id
    pad = int(pad) if pad is not None else 0  # GPT-2 has no pad token; the attention mask hides it
    order = sorted(range(len(rows)), key=lambda r: -(rows[r][0].numel() + rows[r][1].numel()))
    scores = torch.zeros(len(rows), dtype=torch.float32)
    for chunk_start in range(0, len(order), batch_size):
        chunk = order[chunk_start:chunk_start + batch_size]
        inputs = _pad([rows[r][0] for r in chunk], pad).to(device)  # (B, L)
        labels = _pad([rows[r][1] for r in chunk], IGNORE).to(device)  # (B, L) or (B, Ltgt)
        attention = _pad([torch.ones_like(rows[r][0]) for r in chunk], 0).to(device)  # (B, L)
        if loaded.kind == "encoder":
            scored = labels != IGNORE  # (B, L)
            logits = _masked_lm_logits(model, inputs, attention, scored)  # (N, V)
            token_lp = -F.cross_entropy(logits.float(), labels[scored], reduction="none")  # (N,)
            row_lp = torch.zeros(len(chunk), device=device).index_add_(0, scored.nonzero()[:, 0], token_lp)
        else:
            if loaded.kind == "encoder-decoder":
                decoder_inputs = model.prepare_decoder_input_ids_from_labels(labels=labels)  # (B, Ltgt)
                logits = model(input_ids=inputs, attention_mask=attention,
                               decoder_input_ids=decoder_inputs).logits  # (B, Ltgt, V)
            else:
                logits = model(input_ids=inputs, attention_mask=attention).logits[:, :-1]  # (B, L-1, V)
                labels = labels[:, 1:]  # logits at t predict token t + 1
            row_lp = -F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                      reduction="none").view(labels.shape).sum(dim=1)  # (B,) 0 where ignored
        scores[torch.tensor(chunk)] = row_lp.float().cpu()
    return scores


def score_candidates(loaded: LoadedModel, texts_with_slot: Sequence[str], candidates: Sequence[Sequence[str]],
                     slot: str = SLOT, batch_size: int = 64, decoder_score: str = "sentence") -> list[Tensor]:
    """Log-likelihood of every candidate filler of each text's slot: one (K_i,) float32 tensor per text.

    texts_with_slot: N texts, each with exactly one `slot`; candidates: N lists of K_i words. Scores
    of one text are comparable with each other (see the module docstring for each family); all rows of
    all texts are batched together. decoder_score: sentence (default) | candidate (decoders only).
    """
    if len(texts_with_slot) != len(candidates):
        raise ValueError(f"score_candidates: {len(texts_with_slot)} texts but {len(candidates)} candidate lists")
    if decoder_score not in DECODER_SCORES:
        raise ValueError(f"decoder_score={decoder_score!r}; allowed values: {', '.join(DECODER_SCORES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; allowed values: >= 1")
    rows: list[tuple[Tensor, Tensor]] = []
    owner: list[int] = []  # flat candidate index of each row
    sizes: list[int] = []
    flat_index = 0
    framing = _framing(loaded)
    for text, words in zip(texts_with_slot, candidates):
        if not words:
            raise SlotError(f"text {text!r} has no candidates")
        prefix, suffix = split_slot(text, slot)
        for ids, is_cand in _encode_filled(loaded, prefix, list(words), suffix,
                                           add_special_tokens=loaded.kind == "encoder"):
            new = _rows_for(framing, ids, is_cand, decoder_score)
            rows.extend(new)
            owner.extend([flat_index] * len(new))
            flat_index += 1
        sizes.append(len(words))
    row_scores = _score_rows(loaded, rows, batch_size)  # (R,)
    flat = torch.zeros(sum(sizes), dtype=torch.float32).index_add_(0, torch.tensor(owner), row_scores)  # (K,)
    return list(flat.split(sizes))


def vocabulary_words(loaded: LoadedModel, limit: int = DEFAULT_MAX_CANDIDATES) -> list[str]:
    """Up to `limit` ordinary whole words of the vocabulary, in id order (frequent merges first).

    A word is a non-special entry that decodes to letters only and is the tokenizer's own single token
    for " word" (so WordPiece ## continuations, BPE pieces without their leading space and Unigram
    pieces without their metaspace are left out). Numbers and punctuation are left out.
    """
    tok = loaded.tokenizer
    special = set(tok.all_special_ids)
    ids = [i for i in range(len(tok)) if i not in special]
    words = [tok.decode([i]).strip() for i in ids]
    encoded = tok([" " + w for w in words], add_special_tokens=False)["input_ids"]
    found: list[str] = []
    for i, word, enc in zip(ids, words, encoded):
        if word.isalpha() and enc == [i] and word not in found:
            found.append(word)
            if len(found) == limit:
                break
    return found


def _fill_mask_native(loaded: LoadedModel, text: str, top_k: int, slot: str) -> list[Completion]:
    """An MLM's softmax over the whole vocabulary at the mask, as transformers' fill-mask pipeline."""
    tok = loaded.tokenizer
    mask_token = tok.mask_token
    if mask_token is None:
        raise SlotError(f"the {loaded.family} tokenizer has no mask token; give vocab_candidates instead")
    prefix, suffix = split_slot(text, slot)
    enc = tok(prefix + mask_token + suffix, return_tensors="pt").to(loaded.device)
    ids = enc["input_ids"][0]  # (T,)
    where = (ids == tok.mask_token_id).nonzero().squeeze(1)  # (1,)
    if where.numel() != 1:
        raise SlotError(f"text {text!r} encodes to {where.numel()} mask tokens; it needs exactly one")
    with torch.no_grad():
        logits = loaded.model(**enc).logits[0, where[0]]  # (V,)
    probs = logits.float().softmax(dim=-1)  # (V,)
    values, top = probs.topk(min(top_k, probs.numel()))  # (k,), (k,)
    out = []
    for value, token_id in zip(values.tolist(), top.tolist()):
        filled = ids.clone()
        filled[where[0]] = token_id
        out.append(Completion(token=tok.decode([token_id]), score=float(value),
                              sequence=tok.decode(filled.tolist(), skip_special_tokens=True)))
    return out


def fill_mask(loaded: LoadedModel, text: str, top_k: int = 5, vocab_candidates: Sequence[str] | None = None,
              slot: str = SLOT, max_candidates: int = DEFAULT_MAX_CANDIDATES,
              batch_size: int = 64) -> list[Completion]:
    """The `top_k` most likely fillers of the one `slot` in `text`, best first, for any family.

    Encoder without `vocab_candidates`: the MLM's softmax over the whole vocabulary at the mask token,
    the same numbers as transformers' `pipeline("fill-mask")`. Otherwise (decoders, encoder-decoders,
    or any model given `vocab_candidates`): each candidate word (default: `vocabulary_words`, the first
    `max_candidates` whole words of the vocabulary) is scored in place with `score_candidates`, and
    the scores are normalised with a softmax over the candidate set, so `score` is the probability of
    the word among the candidates, not over the whole vocabulary.
    """
    if top_k < 1:
        raise ValueError(f"top_k={top_k}; allowed values: >= 1")
    if loaded.kind == "encoder" and vocab_candidates is None:
        return _fill_mask_native(loaded, text, top_k, slot)
    words = list(vocab_candidates) if vocab_candidates is not None else vocabulary_words(loaded, max_candidates)
    if not words:
        raise SlotError("fill_mask: no candidate words (the vocabulary has no whole alphabetic word); "
                        "give vocab_candidates")
    prefix, suffix = split_slot(text, slot)
    (scores,) = score_candidates(loaded, [text], [words], slot=slot, batch_size=batch_size)  # (K,)
    probs = scores.softmax(dim=0)  # (K,) over the candidate set
    values, top = probs.topk(min(top_k, probs.numel()))
    return [Completion(token=words[i], score=float(v), sequence=prefix + words[i] + suffix)
            for v, i in zip(values.tolist(), top.tolist())]
