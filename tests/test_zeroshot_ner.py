"""Zero-shot NER by prompts: span enumeration, greedy decoding, IOB2, scoring, errors, and a planted model.

References: a sequential greedy written out by hand, seqeval on the decoded tags, score_candidates for
every word score the one-forward-per-span MLM path produces, and a micro BERT trained to answer the
prompt of every span of a few sentences, which zero-shot NER must then decode to exactly the gold tags.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from seqeval.metrics import f1_score, precision_score, recall_score
from torch import nn
from transformers import PreTrainedTokenizerFast

from lmbench.config import TokenizerConfig
from lmbench.data.tokenizer import train_tokenizer
from lmbench.eval import zeroshot_ner as zs
from lmbench.eval.family import LoadedModel, wrap_model
from lmbench.eval.finetune import tagging_scores
from lmbench.eval.prompts import PromptError, PromptTemplate
from lmbench.eval.scoring import score_candidates
from lmbench.eval.zeroshot_ner import (ZeroShotNERConfig, candidate_spans, greedy_non_overlapping, predict_entities,
                                       spans_to_iob2, word_scores, zeroshot_ner)
from lmbench.objectives.base import TokenInfo
from lmbench.tasks import TokenExample
from lmbench.testing.training import micro_backbone

SENTENCES = [
    TokenExample(("Anna", "Berg", "lives", "in", "Paris", "."), ("B-PER", "I-PER", "O", "O", "B-LOC", "O")),
    TokenExample(("Fiandon", "Appliances", "hired", "Noden", "Kulbruday", "."),
                 ("B-ORG", "I-ORG", "O", "B-PER", "I-PER", "O")),
    TokenExample(("The", "German", "team", "won", "in", "Serenne", "."), ("O", "B-MISC", "O", "O", "O", "B-LOC", "O")),
    TokenExample(("It", "rained", "in", "Paris", "today", "."), ("O", "O", "O", "B-LOC", "O", "O")),
]
CFG = ZeroShotNERConfig()
WORD = {**{t: w[0] for t, w in CFG.type_words.items()}, "O": CFG.none_words[0]}  # type -> its one word


def gold_entities(e: TokenExample) -> dict[tuple[int, int], str]:
    """{(first word, length): type} of a sentence's IOB2 tags."""
    out, i = {}, 0
    while i < len(e.tags):
        if e.tags[i].startswith("B-"):
            j = i + 1
            while j < len(e.tags) and e.tags[j] == "I-" + e.tags[i][2:]:
                j += 1
            out[(i, j - i)] = e.tags[i][2:]
            i = j
        else:
            i += 1
    return out


def tokenizer() -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer that knows the sentences, the template and the class words (one piece each)."""
    texts = [" ".join(e.tokens) for e in SENTENCES] * 5 + ["is a type of person company place other thing ."] * 5
    cfg = TokenizerConfig(type="wordpiece", vocab_size=300, min_frequency=1, extra_special_tokens=[])
    return train_tokenizer(cfg, SimpleNamespace(iter_documents=lambda: iter(texts)))


class Exploding(nn.Module):
    """A model that fails the test if anything reaches it."""

    def forward(self, *args, **kwargs):  # noqa: D401
        raise AssertionError("the model ran before validation finished")


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return tokenizer()


def planted_prompts(tok: PreTrainedTokenizerFast) -> tuple[list[str], list[str]]:
    """The prompt of every cased span of SENTENCES and its answer: the gold type's word, else thing."""
    spans = candidate_spans(SENTENCES, CFG.max_span_len, "cased")
    prompts = zs._render(PromptTemplate(CFG.template), SENTENCES, spans, torch.full(spans.start.shape, 64))
    answers = []
    for s, g, n in zip(spans.sentence.tolist(), spans.start.tolist(), spans.length.tolist()):
        answers.append(WORD[gold_entities(SENTENCES[s]).get((g - int(spans.offsets[s]), n), "O")])
    return prompts, answers


def train_planted(kind: str, tok: PreTrainedTokenizerFast, inputs: torch.Tensor, attention: torch.Tensor,
                  loss_of: Callable[[torch.Tensor], torch.Tensor], final_loss: float) -> LoadedModel:
    """A micro backbone of `kind` after 100 full-batch AdamW steps on `loss_of(logits)`, below `final_loss`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = micro_backbone(kind, TokenInfo.from_tokenizer(tok), 128)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(100):
            loss = loss_of(model(input_ids=inputs, attention_mask=attention).logits)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert loss.item() < final_loss, loss.item()
    return wrap_model(model, tok)


@pytest.fixture(scope="module")
def planted(tok: PreTrainedTokenizerFast, one_torch_thread: None) -> LoadedModel:
    """A micro BERT trained (masked slot, cross-entropy) to answer every cased span's prompt with its type word."""
    prompts, answers = planted_prompts(tok)
    enc = zs._encode_prompts(SimpleNamespace(tokenizer=tok), prompts, "[MASK]", "thing")
    assert bool((enc.pieces == 1).all())
    inputs = nn.utils.rnn.pad_sequence(enc.rows, batch_first=True, padding_value=tok.pad_token_id)  # (S, L)
    attention = nn.utils.rnn.pad_sequence([torch.ones_like(r) for r in enc.rows], batch_first=True)  # (S, L)
    rows = torch.arange(len(prompts))
    inputs[rows, enc.position] = tok.mask_token_id
    target = torch.tensor(tok.convert_tokens_to_ids(answers))  # (S,)
    return train_planted("encoder", tok, inputs, attention,
                         lambda logits: F.cross_entropy(logits[rows, enc.position], target), 0.05)


@pytest.fixture(scope="module")
def planted_decoder(tok: PreTrainedTokenizerFast, one_torch_thread: None) -> LoadedModel:
    """A micro GPT-2 trained as a causal LM on "</s> prompt-with-its-answer" (how the decoder scorer reads it)."""
    prompts, answers = planted_prompts(tok)
    ids = [[tok.eos_token_id] + tok(p.replace("[MASK]", a), add_special_tokens=False)["input_ids"]
           for p, a in zip(prompts, answers)]
    inputs = nn.utils.rnn.pad_sequence([torch.tensor(x) for x in ids], batch_first=True,
                                       padding_value=tok.pad_token_id)  # (S, L)
    attention = (torch.arange(inputs.shape[1])[None, :] < torch.tensor([len(x) for x in ids])[:, None]).long()
    labels = inputs.masked_fill(attention == 0, -100)[:, 1:]  # (S, L-1) next tokens

    def loss_of(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=-100)

    return train_planted("decoder", tok, inputs, attention, loss_of, 0.3)  # the prompts' own words stay uncertain


def sequential_greedy(start: list[int], length: list[int], score: list[float]) -> list[bool]:
    """The reference: visit spans best score first (earlier first on ties), keep one unless it overlaps."""
    order = sorted(range(len(start)), key=lambda i: (-score[i], i))
    taken: set[int] = set()
    kept = [False] * len(start)
    for i in order:
        words = set(range(start[i], start[i] + length[i]))
        if not words & taken:
            kept[i] = True
            taken |= words
    return kept


def test_greedy_decoding_matches_the_sequential_reference() -> None:
    # "New York City": the 3-word span beats "New York" and "York City", which overlap it
    kept = greedy_non_overlapping(torch.tensor([0, 0, 1, 2, 4]), torch.tensor([2, 3, 2, 1, 1]),
                                  torch.tensor([-0.5, -0.1, -0.3, -0.2, -0.9]), 6)
    assert kept.tolist() == [False, True, False, False, True]
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        n = int(torch.randint(1, 60, (1,), generator=gen))
        start = torch.randint(0, 40, (n,), generator=gen)
        length = torch.randint(1, 5, (n,), generator=gen)
        score = torch.randint(0, 8, (n,), generator=gen).float()  # many ties
        kept = greedy_non_overlapping(start, length, score, 44)
        assert kept.tolist() == sequential_greedy(start.tolist(), length.tolist(), score.tolist())


def test_spans_to_iob2_and_candidate_spans() -> None:
    tags = spans_to_iob2(torch.tensor([0, 4, 6]), torch.tensor([2, 1, 3]), torch.tensor([0, 2, 1]), 10)
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    assert [names[i] for i in tags] == ["B-PER", "I-PER", "O", "O", "B-LOC", "O", "B-ORG", "I-ORG", "I-ORG", "O"]
    sents = [TokenExample(("Anna", "sings", "."), ("B-PER", "O", "O")), TokenExample(("in", "Paris"), ("O", "B-LOC")),
             TokenExample(("Euro", "96"), ("B-MISC", "I-MISC"))]
    every = candidate_spans(sents, 4, "none")
    pairs = sorted(zip(every.start.tolist(), every.length.tolist()))
    assert pairs == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (2, 1), (3, 1), (3, 2), (4, 1), (5, 1), (5, 2), (6, 1)]
    assert every.sentence.tolist() == [0 if s < 3 else 1 if s < 5 else 2 for s in every.start.tolist()]  # no crossing
    cased = candidate_spans(sents, 4, "cased")  # first word holds a capital, last word a capital or a digit
    assert sorted(zip(cased.start.tolist(), cased.length.tolist())) == [(0, 1), (4, 1), (5, 1), (5, 2)]
    alnum = candidate_spans(sents, 4, "alnum")  # no span starts or ends with the bare "."
    assert sorted(zip(alnum.start.tolist(), alnum.length.tolist())) == [(0, 1), (0, 2), (1, 1), (3, 1), (3, 2),
                                                                         (4, 1), (5, 1), (5, 2), (6, 1)]
    assert candidate_spans(sents, 1, "none").length.tolist() == [1] * 7


def test_planted_scores_decode_to_planted_entities(tok: PreTrainedTokenizerFast,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A scorer we control: 'Anna Berg' person beats the overlapping 'Anna'; 'Paris' place; 'Fiandon Appliances'
    company and 'German' other lose to thing (1 everywhere) until calibration removes a prior towards thing."""
    planted = {"Anna Berg": ("person", 3.0), "Anna": ("person", 2.0), "Fiandon Appliances": ("company", 0.5),
               "Paris": ("place", 2.0), "German": ("other", 0.5)}

    def fake_word_scores(loaded, template, examples, spans, words, context_words=64, batch_size=64):
        scores = torch.zeros(spans.start.numel(), len(words))
        scores[:, words.index("thing")] = 1.0
        for i, (s, g, n) in enumerate(zip(spans.sentence.tolist(), spans.start.tolist(), spans.length.tolist())):
            local = g - int(spans.offsets[s])
            word, value = planted.get(" ".join(examples[s].tokens[local:local + n]), ("thing", 1.0))
            scores[i, words.index(word)] = value
        return [], scores

    monkeypatch.setattr(zs, "word_scores", fake_word_scores)
    loaded = LoadedModel(model=Exploding(), tokenizer=tok, kind="encoder")
    pred = predict_entities(loaded, SENTENCES)
    assert pred.tags[0] == ("B-PER", "I-PER", "O", "O", "B-LOC", "O")
    assert pred.tags[1] == ("O",) * 6 and pred.tags[2] == ("O",) * 7  # company / other 0.5 < thing 1
    assert pred.tags[3] == ("O", "O", "O", "B-LOC", "O", "O") and pred.num_entities == 3
    # calibration subtracts the content-free log prior: a prior on thing lets 'German' through
    prior = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.6]).log()
    monkeypatch.setattr(zs, "content_free_log_prior", lambda *a, **k: prior)
    assert predict_entities(loaded, SENTENCES, ZeroShotNERConfig(calibrate=True)).tags[2][1] == "B-MISC"
    # the scores are seqeval's on the decoded tags, and tagging_scores' keys
    gold = [list(e.tags) for e in SENTENCES]
    out = zeroshot_ner(loaded, SENTENCES)
    tags = [list(t) for t in pred.tags]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert out["f1"] == pytest.approx(f1_score(gold, tags)) and out["f1"] == pytest.approx(2 * 3 / (3 + 7))
        assert out["precision"] == pytest.approx(precision_score(gold, tags)) == 1.0
        assert out["recall"] == pytest.approx(recall_score(gold, tags))
    names = ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-ORG", "I-PER"]
    ids = torch.tensor([[names.index(t) for t in s] + [-100] * (7 - len(s)) for s in gold])
    pids = torch.tensor([[names.index(t) for t in s] + [0] * (7 - len(s)) for s in tags])
    assert set(out) == set(tagging_scores(pids, ids, names, "conlleval"))
    assert out["f1/PER"] == pytest.approx(2 / 3) and out["f1/ORG"] == 0.0


def test_errors_before_any_scoring(tok: PreTrainedTokenizerFast) -> None:
    for template, missing in [("{sentence} is a type of [MASK].", "{span}"),
                              ("{span} is a type of [MASK].", "{sentence}")]:
        with pytest.raises(PromptError, match=f"zeroshot_ner.template=.*lacks \\{missing}"):
            ZeroShotNERConfig(template=template)
    with pytest.raises(PromptError, match="zeroshot_ner.template: .*has no \\[MASK\\] slot"):
        ZeroShotNERConfig(template="{sentence} {span} is a person.")
    with pytest.raises(PromptError, match="zeroshot_ner.template: .*unknown field.*\\{label\\}"):
        ZeroShotNERConfig(template="{sentence} {span} is a {label} [MASK].")
    with pytest.raises(PromptError, match="'person' is under label 'PER' and label 'O'"):
        ZeroShotNERConfig(none_words=["person"])
    with pytest.raises(ValueError, match="zeroshot_ner.span_filter='upper'; allowed values: cased, alnum, none"):
        ZeroShotNERConfig(span_filter="upper")
    with pytest.raises(ValueError, match="zeroshot_ner.mode='iob'"):
        ZeroShotNERConfig(mode="iob")
    with pytest.raises(ValueError, match="zeroshot_ner.max_span_len=0"):
        ZeroShotNERConfig(max_span_len=0)
    loaded = LoadedModel(model=Exploding(), tokenizer=tok, kind="encoder")
    with pytest.raises(PromptError) as info:  # no 'z' or 'q' in the tokenizer's alphabet
        zeroshot_ner(loaded, SENTENCES, ZeroShotNERConfig(type_words={"PER": ["person", "zebu"], "ORG": ["company"],
                                                                      "LOC": ["quay"], "MISC": ["other"]}))
    assert "'zebu' (label 'PER')" in str(info.value) and "'quay' (label 'LOC')" in str(info.value)
    with pytest.raises(PromptError, match="gold entity type\\(s\\) \\['MISC'\\] have no words"):
        zeroshot_ner(loaded, SENTENCES, ZeroShotNERConfig(type_words={"PER": ["person"], "ORG": ["company"],
                                                                      "LOC": ["place"]}))
    lower = [TokenExample(("anna", "sings"), ("B-PER", "O"))]
    with pytest.raises(ValueError, match="set zeroshot_ner.span_filter to alnum or none"):
        zeroshot_ner(loaded, lower)


def test_one_pass_mlm_scores_equal_score_candidates(planted: LoadedModel) -> None:
    template = PromptTemplate(CFG.template)
    words = ("person", "company", "place", "other", "thing", "thingperson")  # the last is several pieces: PLL
    pieces = planted.tokenizer.tokenize(" thingperson")
    assert len(pieces) > 1 and planted.tokenizer.unk_token not in pieces
    assert sorted(zs._fast_words(planted, template, words)) == [0, 1, 2, 3, 4]
    spans = candidate_spans(SENTENCES, 4, "none")
    prompts, ours = word_scores(planted, template, SENTENCES, spans, words, batch_size=7)
    reference = torch.stack(score_candidates(planted, prompts, [list(words)] * len(prompts)))  # (S, W)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    # a slot glued to a field ("[MASK]{span}") cannot share one row: everything goes through score_candidates
    assert zs._fast_words(planted, PromptTemplate("{sentence} [MASK]{span}"), words) == {}


def test_long_sentences_are_windowed_to_fit_the_model(tok: PreTrainedTokenizerFast) -> None:
    torch.manual_seed(0)
    small = wrap_model(micro_backbone("encoder", TokenInfo.from_tokenizer(tok), 24), tok)
    long = [TokenExample(("Paris", *(["in"] * 30), "Anna", "."), ("B-LOC", *(["O"] * 30), "B-PER", "O"))]
    spans = candidate_spans(long, 1, "cased")
    prompts, scores = word_scores(small, PromptTemplate(CFG.template), long, spans, ("person", "thing"))
    lengths = [len(ids) for ids in tok(prompts)["input_ids"]]
    assert len(tok(" ".join(long[0].tokens))["input_ids"]) > 24  # the whole sentence would not fit
    assert max(lengths) <= small.model.config.max_position_embeddings - 2
    assert all(p.endswith(" is a type of [MASK].") for p in prompts)
    assert [p.split(" is a type")[0].split()[-1] for p in prompts] == ["Paris", "Anna"]  # the span is kept
    assert prompts[0].startswith("Paris in") and bool(torch.isfinite(scores).all())


def test_planted_model_end_to_end(planted: LoadedModel) -> None:
    out = zeroshot_ner(planted, SENTENCES)
    assert out["f1"] == 1.0 and out["precision"] == 1.0 and out["recall"] == 1.0, out
    pred = predict_entities(planted, SENTENCES)
    assert pred.tags == [e.tags for e in SENTENCES]
    assert pred.num_spans == candidate_spans(SENTENCES, 4, "cased").start.numel()
    assert zeroshot_ner(planted, SENTENCES, ZeroShotNERConfig(max_sentences=1))["f1"] == 1.0
    assert zeroshot_ner(planted, SENTENCES, ZeroShotNERConfig(mode="strict")) == out  # decoded tags are valid IOB2


def test_planted_decoder_end_to_end(planted_decoder: LoadedModel) -> None:
    """Causal models score every (span, word) row through score_candidates; the planted tags come back."""
    assert zs._fast_words(planted_decoder, PromptTemplate(CFG.template), ("person", "thing")) == {}
    assert predict_entities(planted_decoder, SENTENCES).tags == [e.tags for e in SENTENCES]
