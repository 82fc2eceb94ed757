"""Synthetic token ids and blocks for conformance checks: no tokenizer, no corpus, no download.

The ids follow the layout of lmbench's own tokenizers (specials at the bottom, T5 sentinels counted
down from the top of the vocabulary), and the blocks look like packed text: ordinary ids with a
Zipf-like frequency profile (so a tiny model can fit them in a few steps), sentence ends and word
starts. Everything is drawn from an explicit generator, so a check sees the same data every run.
"""

from __future__ import annotations

import torch

from lmbench.objectives.base import Blocks, TokenInfo

PAD, UNK, CLS, SEP, MASK, BOS, EOS = 0, 1, 2, 3, 4, 5, 6
NAMED_SPECIALS: dict[str, int] = {"[PAD]": PAD, "[UNK]": UNK, "[CLS]": CLS, "[SEP]": SEP, "[MASK]": MASK,
                                  "<s>": BOS, "</s>": EOS, "[NLU]": 7, "[NLG]": 8, "[S2S]": 9}  # 7-9: UL2 modes
SENTENCE_END = 10  # '.'
NUM_SENTINELS = 100
SENTENCE_END_RATE = 0.1  # one sentence end every ~10 tokens
WORD_START_RATE = 0.7  # ~1.4 tokens per word


def conformance_tokens(vocab_size: int = 512) -> TokenInfo:
    """Synthetic token ids: pad 0, unk 1, cls 2, sep 3, mask 4, bos 5, eos 6, UL2's mode tokens
    [NLU] 7, [NLG] 8, [S2S] 9, '.' 10 (sentence end, ordinary), and 100 sentinels
    `<extra_id_k>` = vocab_size - 1 - k. Every other id is ordinary. `named_ids` names all specials."""
    if vocab_size < 2 * NUM_SENTINELS + 16:
        raise ValueError(f"conformance_tokens(vocab_size={vocab_size}): needs >= {2 * NUM_SENTINELS + 16} "
                         f"ids ({len(NAMED_SPECIALS)} specials, {NUM_SENTINELS} sentinels, as many ordinary ids)")
    sentinels = tuple(vocab_size - 1 - k for k in range(NUM_SENTINELS))
    named = {**NAMED_SPECIALS, **{f"<extra_id_{k}>": s for k, s in enumerate(sentinels)}}
    return TokenInfo(vocab_size=vocab_size, pad_id=PAD, mask_id=MASK, bos_id=BOS, eos_id=EOS, cls_id=CLS,
                     sep_id=SEP, unk_id=UNK, special_ids=tuple(sorted(named.values())),
                     sentinel_ids=sentinels, sentence_end_ids=(SENTENCE_END,), named_ids=named)


def toy_blocks(tokens: TokenInfo, batch: int, length: int, seed: int) -> Blocks:
    """A (batch, length) block of ordinary ids like packed text, with `word_starts`.

    Words are ordinary ids (no sentence ends) drawn with probability proportional to 1 / rank;
    about one position in ten is the first sentence-end id; about 70% of positions start a word
    (column 0 and every sentence end always do). No special id and no padding appear.
    """
    g = torch.Generator().manual_seed(int(seed))
    ordinary = tokens.ordinary_ids()  # (V_ord,)
    if tokens.sentence_end_ids:
        ordinary = ordinary[~torch.isin(ordinary, torch.tensor(tokens.sentence_end_ids))]
    if ordinary.numel() == 0:
        raise ValueError("toy_blocks: the TokenInfo has no ordinary (non-special) id to draw")
    zipf = 1.0 / torch.arange(1, ordinary.numel() + 1, dtype=torch.float64)  # (V_ord,)
    cdf = (zipf.cumsum(0) / zipf.sum()).float()  # (V_ord,)
    u = torch.rand(batch, length, generator=g)  # (B, L)
    ids = ordinary[torch.searchsorted(cdf, u).clamp_max(ordinary.numel() - 1)]  # (B, L) inverse-CDF draw
    u = torch.rand(batch, length, generator=g)  # (B, L)
    ends = u < SENTENCE_END_RATE  # (B, L)
    if tokens.sentence_end_ids:
        ids = ids.masked_fill(ends, tokens.sentence_end_ids[0])  # (B, L)
    word_starts = (torch.rand(batch, length, generator=g) < WORD_START_RATE) | ends  # (B, L)
    word_starts[:, 0] = True
    return Blocks(input_ids=ids, word_starts=word_starts)


def pad_row_ends(blocks: Blocks, pad_id: int) -> tuple[Blocks, torch.Tensor]:
    """Right-pad rows like the last block of a document: row i loses (i % 4) * L // 8 tokens to `pad_id`.

    Returns the padded blocks and the (B, L) bool mask of padding positions (row 0 stays unpadded).
    """
    ids = blocks.input_ids  # (B, L)
    rows, length = ids.shape
    pads = (torch.arange(rows) % 4) * (length // 8)  # (B,)
    padding = torch.arange(length)[None, :] >= (length - pads)[:, None]  # (B, L)
    starts = None if blocks.word_starts is None else blocks.word_starts & ~padding
    return Blocks(input_ids=ids.masked_fill(padding, pad_id), word_starts=starts), padding
