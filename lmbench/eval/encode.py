"""Turn downstream examples into model inputs, and tag predictions back into word-level tags.

Fine-tuning and probing must feed every backbone kind the text the way it was pretrained, and must
score NER on the words of the data file, not on sub-word pieces, or scores stop being comparable
across tokenizers. So:

- framing per kind: encoder "[CLS] text [SEP]" (the tokenizer's own single-sentence template);
  decoder "</s> text </s>" (the packed pretraining stream puts </s> between documents, and the last
  </s> is the position that has read the whole text); encoder-decoder "text </s>" (what span
  corruption and BART infilling feed the encoder);
- word alignment from character offsets, for WordPiece, byte-level BPE and Unigram alike: the
  tokens are joined with single spaces, a piece belongs to the word its characters overlap (a piece
  that is only the space between words belongs to none), and a word is labelled on its FIRST piece;
  the other pieces get -100. Words cut off by `max_length` have no piece and are predicted "O".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from lmbench.tasks import TaskDataError, TextExample, TokenExample, check_labels

IGNORE = -100
KINDS = ("encoder", "decoder", "encoder-decoder")


@dataclass
class Encoded:
    """A split as padded tensors (right padding).

    input_ids (N, T), attention_mask (N, T); labels (N,) class ids for classification, or (N, T)
    tag ids on each word's first piece and -100 elsewhere for tagging. Tagging also has
    first_piece (N, W): the position of word w's first piece, -1 for a word without one (cut off),
    and word_tags (N, W): the gold tag id of every word, -100 past the sentence end.
    """

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor
    first_piece: Tensor | None = None
    word_tags: Tensor | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(input_ids, attention_mask, labels) of rows `index`, cut to their longest real length."""
        mask = self.attention_mask[index]  # (B, T)
        t = max(int(mask.sum(1).max()), 1)
        labels = self.labels[index]
        if labels.dim() == 2:
            labels = labels[:, :t]  # (B, t)
        return self.input_ids[index, :t], mask[:, :t], labels


def _check_splits(train_labels: Sequence[str], splits: dict[str, Sequence[str]], source: str) -> None:
    """Raise TaskDataError for an empty split or a split label that training never shows."""
    for name, labels in {"train": train_labels, **splits}.items():
        if not labels:
            raise TaskDataError(f"{source}: the {name} split is empty; every split needs at least one example")
    for name, labels in splits.items():
        check_labels(train_labels, labels, name, source)


def label_list(train_labels: Sequence[str], splits: dict[str, Sequence[str]], source: str) -> list[str]:
    """The sorted training labels; raises TaskDataError if a split is empty or has an unseen label."""
    _check_splits(train_labels, splits, source)
    return sorted(set(train_labels))


def tag_list(train_tags: Sequence[str], splits: dict[str, Sequence[str]], source: str) -> list[str]:
    """"O" then the other training tags sorted; raises TaskDataError if a split is empty, has a tag
    training never shows, or training has no entity tag at all."""
    _check_splits([*train_tags, "O"] if train_tags else [], splits, source)
    if all(t == "O" for t in train_tags):
        raise TaskDataError(f"{source}: the train split has no entity tags (only 'O'); span F1 needs entities")
    return ["O", *sorted(set(train_tags) - {"O"})]


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The padding id: pad, else eos (GPT-2 style tokenizers have no pad), else 0."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def _frame(tokenizer: PreTrainedTokenizerBase, kind: str) -> tuple[list[int], list[int], bool]:
    """(ids before the text, ids after it, use the tokenizer's own template) for a backbone kind."""
    if kind not in KINDS:
        raise ValueError(f"backbone kind {kind!r} is unknown; allowed values: {', '.join(KINDS)}")
    if kind == "encoder":
        return [], [], True
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"the tokenizer has no eos token; a {kind} backbone reads the text followed by eos")
    return ([int(eos)] if kind == "decoder" else []), [int(eos)], False


def _tokenize(tokenizer: PreTrainedTokenizerBase, texts: list[str], kind: str,
              max_length: int) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """Framed, truncated ids and character offsets per text; offsets of frame tokens are (0, 0)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("downstream evaluation needs a fast tokenizer (tokenizer.json) for character offsets")
    before, after, template = _frame(tokenizer, kind)
    if template:
        enc = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length,
                        return_offsets_mapping=True, return_special_tokens_mask=True)
        offsets = [[(0, 0) if s else tuple(o) for o, s in zip(offs, special)]
                   for offs, special in zip(enc["offset_mapping"], enc["special_tokens_mask"])]
        return [list(ids) for ids in enc["input_ids"]], offsets
    room = max_length - len(before) - len(after)
    if room < 1:
        raise ValueError(f"max_length={max_length} leaves no room for text after the frame tokens")
    enc = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=room, return_offsets_mapping=True)
    ids = [before + list(x) + after for x in enc["input_ids"]]
    none = [(0, 0)]
    offsets = [none * len(before) + [tuple(o) for o in offs] + none * len(after) for offs in enc["offset_mapping"]]
    return ids, offsets


def _pad(rows: list[list[int]], value: int) -> Tensor:
    """Right-pad integer rows into one (N, T) tensor."""
    width = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), width), value, dtype=torch.long)  # (N, T)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def encode_classification(tokenizer: PreTrainedTokenizerBase, kind: str, examples: Sequence[TextExample],
                          labels: Sequence[str], max_length: int) -> Encoded:
    """Framed, padded token ids of the texts and their class ids (index in `labels`)."""
    ids, _ = _tokenize(tokenizer, [e.text for e in examples], kind, max_length)
    input_ids = _pad(ids, pad_id(tokenizer))  # (N, T)
    mask = _pad([[1] * len(r) for r in ids], 0)  # (N, T)
    index = {label: k for k, label in enumerate(labels)}
    return Encoded(input_ids, mask, torch.tensor([index[e.label] for e in examples], dtype=torch.long))


def word_of_piece(offsets: Tensor, word_spans: Tensor) -> Tensor:
    """The word each piece overlaps, -1 for none (frame tokens, a bare space piece).

    offsets (T, 2) piece character spans; word_spans (W, 2) word character spans [start, end),
    increasing and disjoint. A piece (a, b) belongs to the last word starting at or before b - 1,
    when that word ends after a. Returns (T,) long.
    """
    a, b = offsets[:, 0], offsets[:, 1]  # (T,)
    w = torch.searchsorted(word_spans[:, 0].contiguous(), (b - 1).contiguous(), right=True) - 1  # (T,)
    ends = word_spans[:, 1][w.clamp(min=0)]  # (T,)
    return torch.where((b > a) & (w >= 0) & (ends > a), w, torch.full_like(w, -1))


def first_pieces(word_ids: Tensor, num_words: int) -> Tensor:
    """Position of each word's first piece given the piece -> word map (T,); -1 if a word has none. (W,)"""
    t = word_ids.shape[0]
    pos = torch.full((num_words + 1,), t, dtype=torch.long)  # slot num_words collects pieces of no word
    target = torch.where(word_ids >= 0, word_ids, torch.full_like(word_ids, num_words))  # (T,)
    pos = pos.scatter_reduce(0, target, torch.arange(t), reduce="amin")
    pos = pos[:num_words]  # (W,)
    return torch.where(pos < t, pos, torch.full_like(pos, -1))


def encode_tagging(tokenizer: PreTrainedTokenizerBase, kind: str, examples: Sequence[TokenExample],
                   tags: Sequence[str], max_length: int) -> Encoded:
    """Framed, padded ids with tag ids on each word's first piece (-100 elsewhere) and the word map."""
    index = {tag: k for k, tag in enumerate(tags)}
    texts, spans = [], []
    for e in examples:
        if not e.tokens or len(e.tokens) != len(e.tags):
            raise ValueError(f"sentence {' '.join(e.tokens)[:80]!r} has {len(e.tokens)} tokens and {len(e.tags)} "
                             "tags; tagging needs at least one token and one tag per token")
        if any(not w or any(c.isspace() for c in w) for w in e.tokens):
            raise ValueError(f"a token of sentence {' '.join(e.tokens)[:80]!r} is empty or holds whitespace; "
                             "tagging joins tokens with single spaces and needs each to be one word")
        lengths = torch.tensor([len(w) for w in e.tokens], dtype=torch.long)  # (W,)
        starts = torch.cumsum(lengths + 1, 0) - lengths - 1  # (W,)
        spans.append(torch.stack([starts, starts + lengths], 1))  # (W, 2)
        texts.append(" ".join(e.tokens))
    ids, offsets = _tokenize(tokenizer, texts, kind, max_length)
    input_ids = _pad(ids, pad_id(tokenizer))  # (N, T)
    n, t = input_ids.shape
    w_max = max(1, max(len(e.tokens) for e in examples))
    labels = torch.full((n, t), IGNORE, dtype=torch.long)  # (N, T)
    first = torch.full((n, w_max), -1, dtype=torch.long)  # (N, W)
    word_tags = torch.full((n, w_max), IGNORE, dtype=torch.long)  # (N, W)
    for i, e in enumerate(examples):
        gold = torch.tensor([index[tag] for tag in e.tags], dtype=torch.long)  # (W_i,)
        word_ids = word_of_piece(torch.tensor(offsets[i], dtype=torch.long).view(-1, 2), spans[i])  # (T_i,)
        pos = first_pieces(word_ids, len(e.tokens))  # (W_i,)
        kept = pos >= 0
        labels[i, pos[kept]] = gold[kept]
        first[i, :len(pos)] = pos
        word_tags[i, :len(gold)] = gold
    mask = _pad([[1] * len(r) for r in ids], 0)  # (N, T)
    return Encoded(input_ids, mask, labels, first, word_tags)


def words_from_pieces(piece_preds: Tensor, first_piece: Tensor, outside_id: int = 0) -> Tensor:
    """Word tag ids from piece tag ids: each word takes its first piece's prediction, "O" if it has none.

    piece_preds (N, T), first_piece (N, W) -> (N, W).
    """
    picked = piece_preds.gather(1, first_piece.clamp(min=0))  # (N, W)
    return torch.where(first_piece >= 0, picked, torch.full_like(picked, outside_id))
