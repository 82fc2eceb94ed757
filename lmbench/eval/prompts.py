"""Zero-shot classification with a prompt template and a verbalizer, for every objective family.

A template such as "{sentence} It was [MASK] ." turns an example into a text with one slot; a
verbalizer maps each label to words ("positive" -> ["great", "good"]). Every word is scored whole in
the slot by `score_candidates` (MLM pseudo-log-likelihood, causal log-likelihood or seq2seq
infilling), a label's score is the logsumexp (or mean) of its words' log-likelihoods, normalised over
the labels, and the prediction is the best label. Mistakes are caught before any model runs: a
template without exactly one slot or with an unknown field, a verbalizer word the tokenizer can only
spell as [UNK], a word under two labels.

Contextual calibration (Zhao et al. 2021, "Calibrate Before Use"): the label distribution the model
gives a content-free input ("N/A", "") in the same template is its prior; calibrated scores divide
every label probability by it, i.e. subtract the log prior, so a model that always prefers "great"
is not credited with knowing the label. "[MASK]" is not a default content-free input because it is
the slot marker here.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

import torch
from torch import Tensor

from lmbench.eval.family import LoadedModel
from lmbench.eval.scoring import SLOT, score_candidates

TEMPLATE_FIELDS: tuple[str, ...] = ("text", "sentence", "span")
REDUCTIONS: tuple[str, ...] = ("logsumexp", "mean")
CONTENT_FREE: tuple[str, ...] = ("N/A", "")

Example = Union[str, Mapping[str, str]]


class PromptError(ValueError):
    """A template, verbalizer or example is unusable; the message names it and what is allowed."""


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt with input fields ({text}, {sentence}, {span}) and exactly one `slot` ([MASK]).

    `render(example)` fills the fields: a plain string fills a template with one distinct field, a
    mapping fills fields by name. Literal braces are written {{ and }}.
    """

    text: str
    slot: str = SLOT
    fields: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        count = self.text.count(self.slot)
        if count != 1:
            what = f"no {self.slot} slot" if count == 0 else f"{count} {self.slot} slots"
            raise PromptError(f"prompt template {self.text!r} has {what}; it needs exactly one, where the "
                              f"label word goes (e.g. \"{{sentence}} It was {self.slot} .\")")
        try:
            parsed = [name for _, name, _, _ in string.Formatter().parse(self.text) if name is not None]
        except ValueError as exc:
            raise PromptError(f"prompt template {self.text!r} is not a valid format string ({exc}); write "
                              "literal braces as {{ and }}") from exc
        unknown = sorted({name for name in parsed if name not in TEMPLATE_FIELDS})
        if unknown:
            shown = ", ".join("{" + name + "}" for name in unknown)
            raise PromptError(f"prompt template {self.text!r} has unknown field(s) {shown}; allowed fields: "
                              f"{', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}")
        if not parsed:
            raise PromptError(f"prompt template {self.text!r} has no input field; put one of "
                              f"{', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)} where the example goes")
        object.__setattr__(self, "fields", tuple(dict.fromkeys(parsed)))

    def render(self, example: Example) -> str:
        """The template with the example's text in its field(s); exactly one slot remains."""
        if isinstance(example, str):
            if len(self.fields) != 1:
                raise PromptError(f"prompt template {self.text!r} has fields {list(self.fields)}; give each "
                                  "example as a mapping with those keys, not a plain string")
            values = {self.fields[0]: example}
        else:
            missing = [f for f in self.fields if f not in example]
            if missing:
                raise PromptError(f"example {dict(example)!r} lacks field(s) {missing} of prompt template "
                                  f"{self.text!r}")
            values = {f: str(example[f]) for f in self.fields}
        rendered = self.text.format(**values)
        if rendered.count(self.slot) != 1:
            raise PromptError(f"example {example!r} contains the slot marker {self.slot}; with prompt template "
                              f"{self.text!r} it would leave {rendered.count(self.slot)} slots")
        return rendered


@dataclass(frozen=True)
class Verbalizer:
    """Label -> the words that express it in the slot; labels keep their order (score column order).

    A label may be given one word as a plain string. Words are stripped; an empty word, a label
    without words, or a word under two labels raises `PromptError`.
    """

    label_words: Mapping[str, Union[str, Sequence[str]]]
    labels: tuple[str, ...] = field(init=False)
    words: tuple[str, ...] = field(init=False)
    word_label: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.label_words:
            raise PromptError("verbalizer has no labels; give a mapping label -> list of words")
        labels, words, owner = [], [], []
        for k, (label, group) in enumerate(self.label_words.items()):
            group = [group] if isinstance(group, str) else list(group)
            if not group:
                raise PromptError(f"verbalizer label {label!r} has no words; give at least one")
            for word in group:
                clean = str(word).strip()
                if not clean:
                    raise PromptError(f"verbalizer label {label!r} has an empty word {word!r}")
                if clean in words:
                    other = labels[owner[words.index(clean)]]
                    raise PromptError(f"verbalizer word {clean!r} is under label {other!r} and label {label!r}; "
                                      "each word may express one label only")
                words.append(clean)
                owner.append(k)
            labels.append(str(label))
        object.__setattr__(self, "labels", tuple(labels))
        object.__setattr__(self, "words", tuple(words))
        object.__setattr__(self, "word_label", tuple(owner))

    def check_tokenizer(self, tokenizer) -> None:
        """Raise `PromptError` naming every word the tokenizer cannot spell without [UNK]."""
        unk = tokenizer.unk_token_id
        encoded = tokenizer([" " + w for w in self.words], add_special_tokens=False)["input_ids"]
        bad = [(w, self.labels[k]) for w, k, ids in zip(self.words, self.word_label, encoded)
               if not ids or (unk is not None and unk in ids)]
        if bad:
            shown = ", ".join(f"{w!r} (label {label!r})" for w, label in bad)
            raise PromptError(f"verbalizer word(s) {shown} map to the unknown token {tokenizer.unk_token!r}: "
                              "the model cannot score them; choose words its tokenizer can spell")


def _check_reduce(reduce: str) -> None:
    if reduce not in REDUCTIONS:
        raise PromptError(f"reduce={reduce!r}; allowed values: {', '.join(REDUCTIONS)}")


def label_scores(loaded: LoadedModel, texts: Sequence[Example], template: PromptTemplate, verbalizer: Verbalizer,
                 reduce: str = "logsumexp", batch_size: int = 64) -> Tensor:
    """log p(label | example) normalised over the labels. (N, C) float32.

    Each label's unnormalised score is the logsumexp (or mean) of its words' log-likelihoods in the
    slot; a log-softmax over the labels then normalises them.
    """
    _check_reduce(reduce)
    verbalizer.check_tokenizer(loaded.tokenizer)
    rendered = [template.render(t) for t in texts]  # every error before any model call
    per_text = score_candidates(loaded, rendered, [list(verbalizer.words)] * len(rendered),
                                slot=template.slot, batch_size=batch_size)
    word_scores = torch.stack(per_text) if per_text else torch.zeros(0, len(verbalizer.words))  # (N, W)
    owner = torch.tensor(verbalizer.word_label)  # (W,)
    member = owner[None, :] == torch.arange(len(verbalizer.labels))[:, None]  # (C, W)
    spread = word_scores[:, None, :].expand(-1, member.shape[0], -1)  # (N, C, W)
    if reduce == "logsumexp":
        raw = spread.masked_fill(~member, float("-inf")).logsumexp(dim=-1)  # (N, C)
    else:
        raw = (spread * member).sum(dim=-1) / member.sum(dim=-1)  # (N, C)
    return raw.log_softmax(dim=-1)  # (N, C)


def content_free_log_prior(loaded: LoadedModel, template: PromptTemplate, verbalizer: Verbalizer,
                           content_free: Sequence[str] = CONTENT_FREE, reduce: str = "logsumexp",
                           batch_size: int = 64) -> Tensor:
    """log of the mean label distribution over content-free inputs in every field. (C,) float32."""
    if not content_free:
        raise PromptError("content_free is empty; give at least one content-free input such as 'N/A'")
    inputs = [{f: cf for f in template.fields} for cf in content_free]
    probs = label_scores(loaded, inputs, template, verbalizer, reduce, batch_size).exp()  # (M, C)
    return probs.mean(dim=0).log()  # (C,)


def classify(loaded: LoadedModel, texts: Sequence[Example], template: PromptTemplate, verbalizer: Verbalizer,
             calibrate: bool = False, reduce: str = "logsumexp", content_free: Sequence[str] = CONTENT_FREE,
             batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """Zero-shot labels: (pred_label_indices (N,) int64, scores (N, C) float32).

    scores are log p(label | example) over the labels (see `label_scores`); with `calibrate`, minus
    `content_free_log_prior` (Zhao et al. 2021), i.e. log(p / p_prior), no longer normalised.
    Label index c is `verbalizer.labels[c]`.
    """
    scores = label_scores(loaded, texts, template, verbalizer, reduce, batch_size)  # (N, C)
    if calibrate:
        scores = scores - content_free_log_prior(loaded, template, verbalizer, content_free, reduce,
                                                 batch_size)[None, :]  # (N, C)
    return scores.argmax(dim=-1), scores
