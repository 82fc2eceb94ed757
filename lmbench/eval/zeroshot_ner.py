"""Zero-shot NER by prompts: ask the pretrained LM what type every candidate span is, for any family.

Fine-tuning and probes need labelled sentences; this needs none, so it measures what pretraining alone
put in the model (as `prompts.classify` does for classification). Every span of up to `max_span_len`
words is put in a template ("{sentence} {span} is a type of [MASK].") and the verbalizer words of each
entity type and of the "not an entity" class are scored whole in the slot with lmbench's family-aware
scorers (MLM pseudo-log-likelihood, causal log-likelihood, seq2seq infilling; see `scoring`). A class
scores the logsumexp of its words, normalised over the classes (optionally calibrated, Zhao et al.
2021); a span is an entity when its best class is a type. Overlapping entities are resolved greedily
by score, the kept spans become IOB2 tags, and `SpanF1` scores them exactly as fine-tuned NER.

Cost is spans x forward passes, so for an MLM every one-piece word is read from ONE forward pass per
span (all such words share the masked row; the head runs at the mask only). Only multi-piece words and
the other families take one row per (span, word) through `score_candidates`. The fast path is used
only when the words around the slot in the template cannot merge with a field, so each word's pieces
cannot depend on the sentence; it gives the numbers `score_candidates` gives (tested).

Span filter (an orthographic prior, documented so the ceiling is known): `cased` (default) keeps spans
whose first word holds an upper-case letter and whose last word an upper-case letter or a digit
("Bank of England", "Euro 96"); `alnum` drops spans starting or ending in a punctuation-only word;
`none` keeps all. CoNLL-2003 dev, max_span_len 4, spans / gold entities reachable: none 186,258 / 98.1%;
alnum 151,139 / 97.8%; cased 22,783 / 97.4% (8x fewer forward passes; lower-cased data fails).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import chain
from typing import Optional, Sequence

import torch
from torch import Tensor

from lmbench.eval.family import LoadedModel
from lmbench.eval.finetune import model_max_length
from lmbench.eval.metrics import MODES, SpanF1
from lmbench.eval.prompts import PromptError, PromptTemplate, Verbalizer, content_free_log_prior
from lmbench.eval.scoring import _encode_filled, _masked_lm_logits, score_candidates
from lmbench.tasks import TokenExample

# one-piece words in most small English vocabularies (one forward pass per span for an MLM)
DEFAULT_TYPE_WORDS = {"PER": ["person"], "ORG": ["company"], "LOC": ["place"], "MISC": ["other"]}
DEFAULT_NONE_WORDS: list[str] = ["thing"]
NONE_LABEL = "O"
SPAN_FILTERS: tuple[str, ...] = ("cased", "alnum", "none")
FAST_CHECK = {"sentence": "Anna Berg lives in Paris .", "span": "Paris"}  # any example: words are context-free


@dataclass
class ZeroShotNERConfig:
    """Zero-shot NER settings (validated on construction, before any model runs).

    template: needs {sentence}, {span} and one [MASK]. type_words: entity type -> verbalizer words;
    none_words: the "not an entity" class. max_span_len: longest candidate span in words. span_filter:
    cased | alnum | none (module docstring). context_words: longest {sentence} window (words around
    the span); a prompt still longer than the model's positions is re-rendered with half the window.
    calibrate: subtract the content-free log prior. mode: SpanF1 mode, conlleval | strict.
    max_sentences: score only the first N sentences (quick checks).
    """

    template: str = "{sentence} {span} is a type of [MASK]."
    type_words: dict[str, list[str]] = field(default_factory=lambda: {k: list(v)
                                                                      for k, v in DEFAULT_TYPE_WORDS.items()})
    none_words: list[str] = field(default_factory=lambda: list(DEFAULT_NONE_WORDS))
    max_span_len: int = 4
    batch_size: int = 64
    calibrate: bool = False
    mode: str = "conlleval"
    max_sentences: Optional[int] = None
    span_filter: str = "cased"
    context_words: int = 64

    def __post_init__(self) -> None:
        try:
            template = PromptTemplate(self.template)
        except PromptError as exc:
            raise PromptError(f"zeroshot_ner.template: {exc}") from None
        missing = [f"{{{name}}}" for name in ("sentence", "span") if name not in template.fields]
        if missing:
            raise PromptError(f"zeroshot_ner.template={self.template!r} lacks {' and '.join(missing)}; it needs "
                              "{sentence}, {span} and one [MASK], e.g. \"{sentence} {span} is a type of [MASK].\"")
        self.type_words = {str(k): [v] if isinstance(v, str) else list(v) for k, v in dict(self.type_words).items()}
        self.none_words = [self.none_words] if isinstance(self.none_words, str) else list(self.none_words)
        if not self.type_words:
            raise PromptError("zeroshot_ner.type_words is empty; give entity type -> words, e.g. {PER: [person]}")
        bad = [t for t in self.type_words if t == NONE_LABEL or not t or "-" in t or t != t.strip()]
        if bad:
            raise PromptError(f"zeroshot_ner.type_words has type name(s) {bad}; a type is the X of B-X tags: "
                              f"non-empty, no '-', no spaces, not {NONE_LABEL!r}")
        if not self.none_words:
            raise PromptError("zeroshot_ner.none_words is empty; give the word(s) of the not-an-entity class")
        self.verbalizer()  # a word under two classes, an empty word, a type without words
        for key in ("max_span_len", "batch_size", "context_words"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"zeroshot_ner.{key}={getattr(self, key)!r}; allowed values: an integer >= 1")
        if self.max_sentences is not None and int(self.max_sentences) < 1:
            raise ValueError(f"zeroshot_ner.max_sentences={self.max_sentences!r}; allowed values: null or >= 1")
        if self.mode not in MODES:
            raise ValueError(f"zeroshot_ner.mode={self.mode!r}; allowed values: {', '.join(MODES)}")
        if self.span_filter not in SPAN_FILTERS:
            raise ValueError(f"zeroshot_ner.span_filter={self.span_filter!r}; allowed values: "
                             f"{', '.join(SPAN_FILTERS)}")

    def verbalizer(self) -> Verbalizer:
        """The classes in score-column order: the entity types, then "O" (not an entity) last."""
        try:
            return Verbalizer({**self.type_words, NONE_LABEL: self.none_words})
        except PromptError as exc:
            raise PromptError(f"zeroshot_ner.type_words / none_words: {exc}") from None


@dataclass
class Spans:
    """Candidate spans over all sentences' words concatenated: global first word (S,), length (S,),
    sentence (S,); `offsets` (N+1,) is where each sentence starts in the global word index."""

    start: Tensor
    length: Tensor
    sentence: Tensor
    offsets: Tensor


@dataclass
class NERPrediction:
    """Predicted IOB2 tags per sentence, and how much was scored."""

    tags: list[tuple[str, ...]]
    num_spans: int
    num_entities: int


def candidate_spans(examples: Sequence[TokenExample], max_span_len: int, span_filter: str = "none") -> Spans:
    """Every span of 1..max_span_len words inside one sentence, kept by `span_filter`, by length then start."""
    lengths = torch.tensor([len(e.tokens) for e in examples], dtype=torch.long)  # (N,)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])  # (N+1,)
    sent_of = torch.repeat_interleave(torch.arange(len(examples)), lengths)  # (W,)
    words = [w for e in examples for w in e.tokens]
    upper = torch.tensor([any(c.isupper() for c in w) for w in words], dtype=torch.bool)  # (W,)
    digit = torch.tensor([any(c.isdigit() for c in w) for w in words], dtype=torch.bool)  # (W,)
    alnum = torch.tensor([any(c.isalnum() for c in w) for w in words], dtype=torch.bool)  # (W,)
    every = torch.ones_like(alnum)  # (W,)
    first_ok = {"cased": upper, "alnum": alnum, "none": every}[span_filter]  # (W,)
    last_ok = {"cased": upper | digit, "alnum": alnum, "none": every}[span_filter]  # (W,)
    starts, spans_len, n = [], [], len(words)
    for length in range(1, max_span_len + 1):
        g = torch.arange(max(0, n - length + 1))  # (S_l,) candidate first words
        keep = (sent_of[g] == sent_of[g + length - 1]) & first_ok[g] & last_ok[g + length - 1]  # (S_l,)
        starts.append(g[keep])
        spans_len.append(torch.full((int(keep.sum()),), length, dtype=torch.long))
    start, length = torch.cat(starts), torch.cat(spans_len)  # (S,), (S,)
    return Spans(start, length, sent_of[start] if n else start.clone(), offsets)


def _render(template: PromptTemplate, examples: Sequence[TokenExample], spans: Spans, context: Tensor) -> list[str]:
    """The prompt of every span; {sentence} is the window of at most `context` (S,) words around the span."""
    local = spans.start - spans.offsets[spans.sentence]  # (S,) first word inside its sentence
    n = spans.offsets[spans.sentence + 1] - spans.offsets[spans.sentence]  # (S,) sentence length
    size = torch.minimum(context, n)  # (S,) window size
    lo = (local - (size - spans.length) // 2).clamp(min=0)  # (S,)
    lo = torch.minimum(lo, n - size)  # (S,)
    whole = [" ".join(e.tokens) for e in examples]
    out = []
    for s, i, a, b, sz, ln in zip(spans.sentence.tolist(), local.tolist(), lo.tolist(), (lo + size).tolist(),
                                  size.tolist(), spans.length.tolist()):
        tokens = examples[s].tokens
        sentence = whole[s] if sz == len(tokens) else " ".join(tokens[a:b])
        out.append(template.render({"sentence": sentence, "span": " ".join(tokens[i:i + ln])}))
    return out


@dataclass
class _Encoded:
    """Prompts tokenized with one filler word in the slot: ids (S rows of (T_i,)), the filler's first
    piece (S,) and its number of pieces (S,)."""

    rows: list[Tensor]
    position: Tensor
    pieces: Tensor


def _encode_prompts(loaded: LoadedModel, prompts: Sequence[str], slot: str, filler: str) -> _Encoded:
    """Tokenize every prompt with `filler` in the slot and find the filler's pieces by character offsets,
    the way score_candidates does (the filler owns the whitespace before it). No padding token needed."""
    parts = [p.split(slot) for p in prompts]
    enc = loaded.tokenizer([a + filler + b for a, b in parts], return_offsets_mapping=True,
                           return_special_tokens_mask=True)
    lengths = torch.tensor([len(ids) for ids in enc["input_ids"]], dtype=torch.long)  # (S,)
    ids = torch.tensor(list(chain.from_iterable(enc["input_ids"])), dtype=torch.long)  # (N,) all prompts' pieces
    offsets = torch.tensor(list(chain.from_iterable(enc["offset_mapping"])), dtype=torch.long).view(-1, 2)  # (N, 2)
    special = torch.tensor(list(chain.from_iterable(enc["special_tokens_mask"])), dtype=torch.bool)  # (N,)
    row = torch.repeat_interleave(torch.arange(len(prompts)), lengths)  # (N,)
    start = torch.tensor([len(a.rstrip()) for a, _ in parts], dtype=torch.long)[row]  # (N,)
    end = torch.tensor([len(a) + len(filler) for a, _ in parts], dtype=torch.long)[row]  # (N,)
    is_cand = (offsets[:, 0] < end) & (offsets[:, 1] > start) & (offsets[:, 1] > offsets[:, 0]) & ~special  # (N,)
    local = torch.arange(ids.numel()) - (lengths.cumsum(0) - lengths)[row]  # (N,) position inside its prompt
    position = torch.full((len(prompts),), -1, dtype=torch.long).scatter_reduce(
        0, row[is_cand], local[is_cand], reduce="amin", include_self=False)  # (S,) first filler piece
    pieces = torch.bincount(row[is_cand], minlength=len(prompts))  # (S,)
    return _Encoded(list(ids.split(lengths.tolist())), position, pieces)


def _fit_prompts(loaded: LoadedModel, template: PromptTemplate, examples: Sequence[TokenExample], spans: Spans,
                 context_words: int, filler: str) -> tuple[list[str], _Encoded]:
    """Rendered prompts and their encoding with `filler`; a window is halved until its prompt fits the model."""
    limit = model_max_length(loaded.model, 10 ** 9) - 2  # room for the frame tokens a family adds (</s>)
    context = torch.full(spans.start.shape, context_words, dtype=torch.long)  # (S,)
    prompts = _render(template, examples, spans, context)
    encoded = _encode_prompts(loaded, prompts, template.slot, filler)
    while True:
        long = torch.tensor([r.numel() > limit for r in encoded.rows], dtype=torch.bool)  # (S,)
        todo = long.nonzero().squeeze(1)  # (S',)
        if not todo.numel():
            return prompts, encoded
        if bool((context[todo] == 1).all()):
            raise ValueError(f"zero-shot NER: the prompt {prompts[int(todo[0])]!r} is longer than the model's "
                             f"{limit + 2} positions even without context; shorten zeroshot_ner.template or "
                             "zeroshot_ner.max_span_len")
        context[todo] = (context[todo] // 2).clamp(min=1)
        sub = Spans(spans.start[todo], spans.length[todo], spans.sentence[todo], spans.offsets)
        again = _render(template, examples, sub, context[todo])
        redone = _encode_prompts(loaded, again, template.slot, filler)
        for j, i in enumerate(todo.tolist()):
            prompts[i], encoded.rows[i] = again[j], redone.rows[j]
        encoded.position[todo], encoded.pieces[todo] = redone.position, redone.pieces


def _slot_is_closed(template: PromptTemplate) -> bool:
    """True when whitespace separates the slot's word from every field, so fillers cannot merge with the text."""
    before, after = template.text.split(template.slot)
    chunk = re.search(r"\S*$", before).group() + re.match(r"\S*", after).group()  # the slot's whitespace word
    return "{" not in chunk and "}" not in chunk


def _fast_words(loaded: LoadedModel, template: PromptTemplate, words: Sequence[str]) -> dict[int, int]:
    """{word index: token id} of the words an MLM scores from one shared masked row (one piece, same row)."""
    if loaded.kind != "encoder" or not _slot_is_closed(template):
        return {}
    prefix, suffix = template.render(FAST_CHECK).split(template.slot)
    fast, shared = {}, None
    for k, (ids, is_cand) in enumerate(_encode_filled(loaded, prefix, list(words), suffix, add_special_tokens=True)):
        if int(is_cand.sum()) != 1:
            continue
        masked = ids.masked_fill(is_cand, int(loaded.tokenizer.mask_token_id))  # (T,)
        shared = masked if shared is None else shared
        if torch.equal(masked, shared):
            fast[k] = int(ids[is_cand])
    return fast


@torch.inference_mode()
def _mlm_one_pass(loaded: LoadedModel, encoded: _Encoded, token_ids: list[int], batch_size: int) -> Tensor:
    """log p(token | prompt) at the slot for each of `token_ids`, one forward per prompt. (S, K)

    `encoded` holds the prompts with a one-piece filler; its piece is replaced by the mask token, which
    is the row score_candidates builds for every one-piece word.
    """
    tok, model, device = loaded.tokenizer, loaded.model, loaded.device
    rows = encoded.rows
    order = sorted(range(len(rows)), key=lambda r: -rows[r].numel())
    wanted = torch.tensor(token_ids, device=device)  # (K,)
    pad = int(tok.pad_token_id) if tok.pad_token_id is not None else 0
    out = torch.zeros(len(rows), len(token_ids), dtype=torch.float32)  # (S, K)
    for b in range(0, len(order), batch_size):
        chunk = torch.tensor(order[b:b + batch_size])  # (B,)
        inputs = torch.nn.utils.rnn.pad_sequence([rows[r] for r in chunk.tolist()], batch_first=True,
                                                 padding_value=pad)  # (B, L)
        attention = torch.nn.utils.rnn.pad_sequence([torch.ones_like(rows[r]) for r in chunk.tolist()],
                                                    batch_first=True)  # (B, L)
        inputs[torch.arange(len(chunk)), encoded.position[chunk]] = int(tok.mask_token_id)
        scored = torch.zeros_like(inputs, dtype=torch.bool)  # (B, L)
        scored[torch.arange(len(chunk)), encoded.position[chunk]] = True
        logits = _masked_lm_logits(model, inputs.to(device), attention.to(device), scored.to(device))  # (B, V)
        out[chunk] = logits.float().log_softmax(-1)[:, wanted].cpu()  # (B, K)
    return out


def word_scores(loaded: LoadedModel, template: PromptTemplate, examples: Sequence[TokenExample], spans: Spans,
                words: Sequence[str], context_words: int = 64, batch_size: int = 64) -> tuple[list[str], Tensor]:
    """(prompts (S,), log-likelihood of every word in every prompt's slot (S, W)), as score_candidates gives it.

    One-piece MLM words come from one forward pass per span (`_mlm_one_pass`); the others go through
    score_candidates, one row per (span, word, piece).
    """
    fast = _fast_words(loaded, template, words)
    pieces = [len(ids) for ids in loaded.tokenizer([" " + w for w in words], add_special_tokens=False)["input_ids"]]
    longest = max(range(len(words)), key=lambda k: (pieces[k], k in fast))  # every prompt must fit with it
    prompts, encoded = _fit_prompts(loaded, template, examples, spans, context_words, words[longest])
    scores = torch.zeros(len(prompts), len(words), dtype=torch.float32)  # (S, W)
    if fast and prompts:
        if longest not in fast:
            encoded = _encode_prompts(loaded, prompts, template.slot, words[min(fast)])
        if not bool((encoded.pieces == 1).all()):
            bad = int((encoded.pieces != 1).nonzero()[0])
            raise RuntimeError(f"zero-shot NER: a one-piece word is not one piece in {prompts[bad]!r}")
        cols = sorted(fast)
        scores[:, cols] = _mlm_one_pass(loaded, encoded, [fast[k] for k in cols], batch_size)
    slow = [k for k in range(len(words)) if k not in fast]
    if slow and prompts:
        per_prompt = score_candidates(loaded, prompts, [[words[k] for k in slow]] * len(prompts),
                                      slot=template.slot, batch_size=batch_size)
        scores[:, slow] = torch.stack(per_prompt)  # (S, W_slow)
    return prompts, scores


def class_scores(word_lp: Tensor, verbalizer: Verbalizer) -> Tensor:
    """Per class, the logsumexp of its words' log-likelihoods, log-softmaxed over the classes. (S, C)"""
    member = torch.tensor(verbalizer.word_label)[None, :] == torch.arange(len(verbalizer.labels))[:, None]  # (C, W)
    raw = word_lp[:, None, :].masked_fill(~member, float("-inf")).logsumexp(-1)  # (S, C)
    return raw.log_softmax(-1)  # (S, C)


def greedy_non_overlapping(start: Tensor, length: Tensor, score: Tensor, num_words: int) -> Tensor:
    """Keep spans greedily by score (ties: earlier in the input), dropping any that overlaps a kept one.

    start, length, score: (E,); words are global indices < num_words. Runs in parallel rounds: a span
    that outranks every live span sharing a word with it is kept by the sequential greedy too, so each
    round keeps all such local maxima and drops what they overlap. Returns the kept mask (E,) bool.
    """
    e = start.numel()
    if e == 0:
        return torch.zeros(0, dtype=torch.bool)
    order = torch.argsort(-score, stable=True)  # (E,)
    priority = torch.empty(e, dtype=torch.long)
    priority[order] = torch.arange(e, 0, -1)  # (E,) unique, higher is better
    width = int(length.max())
    cover = start[:, None] + torch.arange(width)[None, :]  # (E, Lmax) word indices
    valid = torch.arange(width)[None, :] < length[:, None]  # (E, Lmax)
    cover = torch.where(valid, cover, torch.zeros_like(cover))  # (E, Lmax)
    alive = torch.ones(e, dtype=torch.bool)
    kept = torch.zeros(e, dtype=torch.bool)
    taken = torch.zeros(num_words, dtype=torch.bool)
    while bool(alive.any()):
        live = valid & alive[:, None]  # (E, Lmax)
        best = torch.zeros(num_words, dtype=torch.long).scatter_reduce(
            0, cover[live], priority[:, None].expand_as(cover)[live], reduce="amax")  # (num_words,)
        local_max = alive & ((best[cover] == priority[:, None]) | ~valid).all(1)  # (E,)
        kept |= local_max
        taken[cover[valid & local_max[:, None]]] = True
        alive &= ~(taken[cover] & valid).any(1)
    return kept


def spans_to_iob2(start: Tensor, length: Tensor, label: Tensor, num_words: int) -> Tensor:
    """Tag ids of non-overlapping spans: 0 = O, 1 + 2k = B-type k, 2 + 2k = I-type k. (num_words,)"""
    tags = torch.zeros(num_words, dtype=torch.long)  # (W,)
    if start.numel():
        width = int(length.max())
        cover = start[:, None] + torch.arange(width)[None, :]  # (E, Lmax)
        valid = torch.arange(width)[None, :] < length[:, None]  # (E, Lmax)
        code = torch.where(torch.arange(width)[None, :] == 0, 1, 2) + 2 * label[:, None]  # (E, Lmax)
        tags[cover[valid]] = code[valid]
    return tags


def predict_entities(loaded: LoadedModel, examples: Sequence[TokenExample],
                     cfg: ZeroShotNERConfig | None = None) -> NERPrediction:
    """Zero-shot IOB2 tags for every sentence (see the module docstring); all checks before the model runs."""
    cfg = cfg or ZeroShotNERConfig()
    examples = list(examples)[:cfg.max_sentences] if cfg.max_sentences else list(examples)
    template, verbalizer = PromptTemplate(cfg.template), cfg.verbalizer()
    verbalizer.check_tokenizer(loaded.tokenizer)
    if cfg.span_filter == "cased" and not any(c.isupper() for e in examples for w in e.tokens for c in w):
        raise ValueError("zeroshot_ner.span_filter='cased' keeps spans starting with an upper-case letter, but these "
                         "sentences have none (lower-cased data?); set zeroshot_ner.span_filter to alnum or none")
    spans = candidate_spans(examples, cfg.max_span_len, cfg.span_filter)
    _, word_lp = word_scores(loaded, template, examples, spans, verbalizer.words, cfg.context_words, cfg.batch_size)
    scores = class_scores(word_lp, verbalizer)  # (S, C)
    if cfg.calibrate:
        scores = scores - content_free_log_prior(loaded, template, verbalizer, batch_size=cfg.batch_size)[None, :]
    best, label = scores.max(-1)  # (S,), (S,)
    entity = label != len(verbalizer.labels) - 1  # (S,) the last class is "O"
    num_words = int(spans.offsets[-1])
    kept = greedy_non_overlapping(spans.start[entity], spans.length[entity], best[entity], num_words)  # (E,)
    tag_ids = spans_to_iob2(spans.start[entity][kept], spans.length[entity][kept], label[entity][kept], num_words)
    names = ["O", *(f"{p}-{t}" for t in verbalizer.labels[:-1] for p in "BI")]
    flat = [names[i] for i in tag_ids.tolist()]
    bounds = spans.offsets.tolist()
    tags = [tuple(flat[a:b]) for a, b in zip(bounds, bounds[1:])]
    return NERPrediction(tags=tags, num_spans=int(spans.start.numel()), num_entities=int(kept.sum()))


def zeroshot_ner(loaded: LoadedModel, examples: Sequence[TokenExample],
                 cfg: ZeroShotNERConfig | None = None) -> dict[str, float]:
    """Entity-level {"precision", "recall", "f1", "precision/<T>", "recall/<T>", "f1/<T>"} of zero-shot NER.

    The keys of `finetune.tagging_scores` (SpanF1 in `cfg.mode`). A gold entity type without verbalizer
    words raises PromptError naming it, before any scoring.
    """
    cfg = cfg or ZeroShotNERConfig()
    examples = list(examples)[:cfg.max_sentences] if cfg.max_sentences else list(examples)
    gold_types = {t[2:] for e in examples for t in e.tags if t != "O"}
    unknown = sorted(gold_types - set(cfg.type_words))
    if unknown:
        raise PromptError(f"zero-shot NER: gold entity type(s) {unknown} have no words in zeroshot_ner.type_words "
                          f"(types given: {sorted(cfg.type_words)}); add words for them")
    pred = predict_entities(loaded, examples, cfg)
    metric = SpanF1(entity_types=list(cfg.type_words), mode=cfg.mode)
    metric.update(pred.tags, [list(e.tags) for e in examples])
    return {k: float(v) for k, v in metric.compute().items()}
