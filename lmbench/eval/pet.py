"""Downstream mode: prompt-based few-shot fine-tuning (PET, Schick & Schuetze 2021; LM-BFF, Gao et al. 2021).

Fine-tuning a fresh head needs hundreds of labelled examples; a pretrained LM can instead be tuned
through the prompt it already answers, which is how objectives differ most with few labels. The
WHOLE model trains on k examples per class: the example goes into the template, every verbalizer word
is scored whole in the slot exactly as the zero-shot scorer does (`scoring.score_candidates`: MLM
pseudo-log-likelihood, causal log-likelihood of the filled text, seq2seq infilling), a label scores the
logsumexp of its words (`prompts.label_scores`), and the loss is the cross-entropy of the gold label
over those label scores. The rows are built by the scorer's own helpers, so training optimises exactly
the numbers evaluation reads (tested); for an MLM, the rows of one-piece words share one forward pass.

Each seed draws its own k-shot set (k per class, `torch.Generator(seed)`), reloads the model fresh from
its directory and shuffles with the same generator. The first template trains and is evaluated (the
others are validated only, so a config listing several fails early on a bad one). Dev (and test)
accuracy and macro-F1 come from `prompts.label_scores` on the trained model. Text is cut (by pieces,
from the end) so the prompt fits `max_length` and the model's positions.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lmbench.eval.family import LoadedModel, load_scorer_model
from lmbench.eval.finetune import _schedule, classification_scores, model_max_length
from lmbench.eval.prompts import PromptError, PromptTemplate, Verbalizer, label_scores
from lmbench.eval.scoring import IGNORE, _encode_filled, _framing, _masked_lm_logits, _rows_for, split_slot
from lmbench.tasks import TextExample


@dataclass
class PETConfig:
    """Few-shot prompt fine-tuning, identical for every objective.

    k examples per class from train, one run per seed; each run takes `steps` AdamW steps of
    `batch_size` examples (weight decay on matrices only, linear warmup over `warmup_fraction` of the
    steps then linear decay to 0, gradient clipping at `max_grad_norm`). max_length: the longest
    prompt in pieces (also capped by the model's positions). device: where the model trains.
    The defaults suit lmbench's tiny/small presets (lr 1e-3: 1e-4 leaves the k-shot loss near 0.5 after
    100 steps from random init); LM-BFF used 1e-5 for RoBERTa-large.
    """

    k: int = 16
    seeds: tuple[int, ...] = (0, 1, 2)
    lr: float = 1e-3
    steps: int = 100
    batch_size: int = 8
    max_length: int = 128
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    eval_batch_size: int = 64
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds:
            raise ValueError("pet.seeds is empty; allowed values: a non-empty list of integers")
        for key in ("k", "steps", "batch_size", "max_length", "eval_batch_size"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"pet.{key}={getattr(self, key)!r}; allowed values: an integer >= 1")
        if not float(self.lr) > 0:
            raise ValueError(f"pet.lr={self.lr!r}; allowed values: a number > 0")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"pet.warmup_fraction={self.warmup_fraction!r}; allowed values: 0 <= x < 1")


@dataclass
class PromptRows:
    """The scoring rows of a list of examples, built as score_candidates builds them.

    inputs[r], labels[r]: model input ids and labels (-100 where unscored) of row r; example (R,) and
    word (R,): whose row it is. For an MLM every row scores one masked piece; `unique` (R,) points rows
    with identical inputs (the one-piece words of one example) at one shared input.
    """

    inputs: list[Tensor]
    labels: list[Tensor]
    example: Tensor
    word: Tensor
    unique: Tensor


def sample_k_shot(labels: Sequence[str], classes: Sequence[str], k: int, generator: torch.Generator) -> Tensor:
    """Indices of k examples of every class (class order, then a random order inside each class). (C*k,)

    Raises ValueError naming a class with fewer than k examples.
    """
    label_ids = torch.tensor([list(classes).index(label) for label in labels], dtype=torch.long)  # (N,)
    picked = []
    for c, name in enumerate(classes):
        members = (label_ids == c).nonzero().squeeze(1)  # (N_c,)
        if members.numel() < k:
            raise ValueError(f"pet.k={k} but train has only {members.numel()} example(s) of label {name!r}; "
                             "lower pet.k or add training examples")
        picked.append(members[torch.randperm(members.numel(), generator=generator)[:k]])
    return torch.cat(picked)


def fit_texts(loaded: LoadedModel, texts: Sequence[str], template: PromptTemplate, words: Sequence[str],
              max_length: int) -> list[str]:
    """`texts`, each cut from the end to the pieces that leave its prompt (with its longest word) within
    `max_length` and the model's positions."""
    tok = loaded.tokenizer
    filled = template.render("").replace(template.slot, max(words, key=lambda w: len(tok.tokenize(" " + w))))
    overhead = len(tok(filled)["input_ids"]) + 2  # template, longest word, frame tokens, a decoder's </s>
    budget = model_max_length(loaded.model, max_length) - overhead
    if budget < 1:
        raise ValueError(f"pet.max_length={max_length}: the template {template.text!r} with its longest word "
                         f"already takes {overhead} pieces; raise pet.max_length")
    enc = tok(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    return [t if len(offs) <= budget else t[:offs[budget - 1][1]] for t, offs in zip(texts, enc["offset_mapping"])]


def build_rows(loaded: LoadedModel, texts: Sequence[str], template: PromptTemplate,
               verbalizer: Verbalizer) -> PromptRows:
    """Every (example, word) scoring row, as `score_candidates(..., decoder_score="sentence")` builds it."""
    framing = _framing(loaded)
    inputs, labels, example, word, unique = [], [], [], [], []
    seen: dict[tuple[int, ...], int] = {}
    for i, text in enumerate(texts):
        prefix, suffix = split_slot(template.render(text), template.slot)
        for w, (ids, is_cand) in enumerate(_encode_filled(loaded, prefix, list(verbalizer.words), suffix,
                                                           add_special_tokens=loaded.kind == "encoder")):
            for row_input, row_labels in _rows_for(framing, ids, is_cand, "sentence"):
                key = (i, *row_input.tolist())
                unique.append(seen.setdefault(key, len(seen)))
                inputs.append(row_input)
                labels.append(row_labels)
                example.append(i)
                word.append(w)
    return PromptRows(inputs, labels, torch.tensor(example, dtype=torch.long), torch.tensor(word, dtype=torch.long),
                      torch.tensor(unique, dtype=torch.long))


def _pad(seqs: Sequence[Tensor], value: int) -> Tensor:
    return torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True, padding_value=value)  # (B, L)


def row_log_likelihoods(loaded: LoadedModel, rows: PromptRows, index: Tensor) -> Tensor:
    """Differentiable summed log-probability of the labels of rows `index` (R_b,). (R_b,)

    The same numbers as scoring's `_score_rows`; an MLM runs each distinct input once.
    """
    model, device = loaded.model, loaded.device
    pad = loaded.tokenizer.pad_token_id
    pad = int(pad) if pad is not None else 0
    if loaded.kind == "encoder":
        shared, slot = torch.unique(rows.unique[index], return_inverse=True)  # (U,), (R_b,) row -> shared input
        first = torch.zeros(shared.numel(), dtype=torch.long).scatter_(0, slot, index)  # (U,) a row per input
        inputs = _pad([rows.inputs[r] for r in first.tolist()], pad).to(device)  # (U, L)
        attention = _pad([torch.ones_like(rows.inputs[r]) for r in first.tolist()], 0).to(device)  # (U, L)
        labels = _pad([rows.labels[r] for r in index.tolist()], IGNORE)  # (R_b, L)
        pos = (labels != IGNORE).long().argmax(1)  # (R_b,) the one masked piece of each row
        target = labels[torch.arange(index.numel()), pos].to(device)  # (R_b,)
        scored = torch.zeros(inputs.shape, dtype=torch.bool)  # (U, L)
        scored[slot, pos] = True
        flat = scored.flatten().cumsum(0) - 1  # (U*L,) rank of a scored position in row-major order
        where = flat.view(scored.shape)[slot, pos].to(device)  # (R_b,)
        logits = _masked_lm_logits(model, inputs, attention, scored.to(device))  # (N, V)
        return logits.float().log_softmax(-1)[where, target]  # (R_b,)
    inputs = _pad([rows.inputs[r] for r in index.tolist()], pad).to(device)  # (R_b, L)
    labels = _pad([rows.labels[r] for r in index.tolist()], IGNORE).to(device)  # (R_b, L) or (R_b, Ltgt)
    attention = _pad([torch.ones_like(rows.inputs[r]) for r in index.tolist()], 0).to(device)  # (R_b, L)
    if loaded.kind == "encoder-decoder":
        decoder_inputs = model.prepare_decoder_input_ids_from_labels(labels=labels)  # (R_b, Ltgt)
        logits = model(input_ids=inputs, attention_mask=attention, decoder_input_ids=decoder_inputs).logits
    else:
        logits = model(input_ids=inputs, attention_mask=attention).logits[:, :-1]  # (R_b, L-1, V)
        labels = labels[:, 1:]  # logits at t predict token t + 1
    token_lp = -F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                reduction="none")  # (R_b * T,) 0 where ignored
    return token_lp.view(labels.shape).sum(1)  # (R_b,)


def prompt_label_scores(loaded: LoadedModel, rows: PromptRows, examples: Tensor, verbalizer: Verbalizer) -> Tensor:
    """log p(label | example) over the labels for `examples` (B,), differentiable (as label_scores). (B, C)"""
    index = torch.isin(rows.example, examples).nonzero().squeeze(1)  # (R_b,)
    row_lp = row_log_likelihoods(loaded, rows, index)  # (R_b,)
    position = torch.full((int(rows.example.max()) + 1,), -1, dtype=torch.long)
    position[examples] = torch.arange(examples.numel())  # example id -> its row in the output
    n_words = len(verbalizer.words)
    flat = (position[rows.example[index]] * n_words + rows.word[index]).to(row_lp.device)  # (R_b,)
    words = torch.zeros(examples.numel() * n_words, device=row_lp.device, dtype=row_lp.dtype).index_add(
        0, flat, row_lp).view(-1, n_words)  # (B, W) summed pieces of each word
    member = torch.tensor(verbalizer.word_label)[None, :] == torch.arange(len(verbalizer.labels))[:, None]  # (C, W)
    member = member.to(row_lp.device)
    raw = words[:, None, :].masked_fill(~member, float("-inf")).logsumexp(-1)  # (B, C)
    return raw.log_softmax(-1)  # (B, C)


def train_pet(loaded: LoadedModel, rows: PromptRows, gold: Tensor, verbalizer: Verbalizer, cfg: PETConfig,
              generator: torch.Generator) -> None:
    """`cfg.steps` AdamW steps on the cross-entropy of the gold label ids (N,) over the label scores of
    the N examples in `rows`; batches are drawn in epochs shuffled by `generator`."""
    model = loaded.model
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg.steps, cfg.warmup_fraction))
    n = gold.numel()
    batches: list[Tensor] = []
    model.train()
    for _ in range(cfg.steps):
        if not batches:
            batches = list(torch.randperm(n, generator=generator).split(cfg.batch_size))  # one epoch
        examples = batches.pop(0)  # (B,)
        scores = prompt_label_scores(loaded, rows, examples, verbalizer)  # (B, C)
        loss = F.nll_loss(scores, gold[examples].to(scores.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
    model.eval()


@torch.no_grad()
def prompt_loss(loaded: LoadedModel, rows: PromptRows, gold: Tensor, verbalizer: Verbalizer, batch_size: int) -> float:
    """Mean cross-entropy of the gold labels (N,) over the label scores, in eval mode."""
    loaded.model.eval()
    total = 0.0
    for examples in torch.arange(gold.numel()).split(batch_size):
        scores = prompt_label_scores(loaded, rows, examples, verbalizer)  # (B, C)
        total += float(F.nll_loss(scores, gold[examples].to(scores.device), reduction="sum"))
    return total / max(1, gold.numel())


def evaluate(loaded: LoadedModel, texts: Sequence[str], gold: Tensor, template: PromptTemplate,
             verbalizer: Verbalizer, batch_size: int) -> dict[str, float]:
    """{"accuracy", "macro_f1"} of the arg-max of `prompts.label_scores` against gold label ids (N,)."""
    loaded.model.eval()
    scores = label_scores(loaded, list(texts), template, verbalizer, batch_size=batch_size)  # (N, C)
    out = classification_scores(scores.argmax(-1), gold, len(verbalizer.labels))
    return {"accuracy": out["acc"], "macro_f1": out["macro_f1"]}


def _check(templates: Sequence[str], verbalizer: dict[str, list[str]],
           splits: dict[str, Sequence[TextExample]]) -> tuple[PromptTemplate, Verbalizer]:
    """The training template and the verbalizer; PromptError for any bad template, word or label."""
    if not templates or isinstance(templates, str):
        raise PromptError("pet.templates must be a non-empty list of templates, e.g. [\"{text} It was [MASK] .\"]")
    parsed = []
    for i, text in enumerate(templates):
        try:
            template = PromptTemplate(str(text))
        except PromptError as exc:
            raise PromptError(f"pet.templates[{i}]: {exc}") from None
        if len(template.fields) != 1:
            raise PromptError(f"pet.templates[{i}]={text!r} has fields {list(template.fields)}; a classification "
                              "template has exactly one, {text} or {sentence}, where the example goes")
        parsed.append(template)
    words = {str(k): [v] if isinstance(v, str) else list(v) for k, v in dict(verbalizer).items()}
    try:
        verbal = Verbalizer(words)
    except PromptError as exc:
        raise PromptError(f"pet.verbalizer: {exc}") from None
    for name, split in splits.items():
        if name != "test" and not split:
            raise PromptError(f"pet: the {name} split is empty; it needs at least one example")
        unknown = sorted({e.label for e in split} - set(verbal.labels))
        if unknown:
            raise PromptError(f"pet: {name} label(s) {unknown} have no words in pet.verbalizer "
                              f"(labels given: {list(verbal.labels)}); add words for them")
    return parsed[0], verbal


def pet_finetune(model_dir: str | Path, train: Sequence[TextExample], dev: Sequence[TextExample],
                 test: Sequence[TextExample] | None, templates: Sequence[str], verbalizer: dict[str, list[str]],
                 cfg: PETConfig | None = None) -> dict[str, Any]:
    """Few-shot prompt fine-tuning of the backbone in `model_dir`, one run per seed (module docstring).

    Returns floats and per-seed lists only: "dev/accuracy", "dev/macro_f1" (and "test/..." when test is
    given) as lists over `cfg.seeds`; "train/loss_before", "train/loss_after" (k-shot loss per seed);
    "zero_shot_dev/accuracy", "zero_shot_dev/macro_f1" (the untrained model, same template);
    "majority_dev/accuracy" (always answering dev's most frequent label); "seconds". Every template,
    verbalizer word and label is checked before any training (PromptError / ValueError naming it).
    """
    cfg = cfg or PETConfig()
    start = time.perf_counter()
    splits = {"train": list(train), "dev": list(dev), **({"test": list(test)} if test else {})}
    template, verbal = _check(templates, verbalizer, splits)
    reference = load_scorer_model(model_dir, device=cfg.device)
    verbal.check_tokenizer(reference.tokenizer)
    label_id = {label: c for c, label in enumerate(verbal.labels)}
    for seed in cfg.seeds:  # every k-shot draw, before any training
        sample_k_shot([e.label for e in splits["train"]], verbal.labels, cfg.k, torch.Generator().manual_seed(seed))
    texts = {name: fit_texts(reference, [e.text for e in split], template, verbal.words, cfg.max_length)
             for name, split in splits.items()}
    gold = {name: torch.tensor([label_id[e.label] for e in split], dtype=torch.long) for name, split in splits.items()}
    zero = evaluate(reference, texts["dev"], gold["dev"], template, verbal, cfg.eval_batch_size)
    out: dict[str, Any] = {"zero_shot_dev/accuracy": zero["accuracy"], "zero_shot_dev/macro_f1": zero["macro_f1"],
                           "majority_dev/accuracy": Counter(gold["dev"].tolist()).most_common(1)[0][1] / len(dev)}
    del reference
    for seed in cfg.seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # dropout, if the saved config has any
            generator = torch.Generator().manual_seed(seed)
            shots = sample_k_shot([e.label for e in splits["train"]], verbal.labels, cfg.k, generator)  # (C*k,)
            loaded = load_scorer_model(model_dir, device=cfg.device)
            rows = build_rows(loaded, [texts["train"][i] for i in shots.tolist()], template, verbal)
            shot_gold = gold["train"][shots]  # (C*k,)
            out.setdefault("train/loss_before", []).append(prompt_loss(loaded, rows, shot_gold, verbal,
                                                                       cfg.eval_batch_size))
            train_pet(loaded, rows, shot_gold, verbal, cfg, generator)
            out.setdefault("train/loss_after", []).append(prompt_loss(loaded, rows, shot_gold, verbal,
                                                                      cfg.eval_batch_size))
            for name in ("dev", "test"):
                if name in texts:
                    scores = evaluate(loaded, texts[name], gold[name], template, verbal, cfg.eval_batch_size)
                    for metric, value in scores.items():
                        out.setdefault(f"{name}/{metric}", []).append(value)
    out["seconds"] = time.perf_counter() - start
    return out
