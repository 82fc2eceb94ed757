"""Zero-shot scoring: whole-word MLM pseudo-log-likelihood, causal and seq2seq log-likelihoods.

Tiny models of each family are trained for a few dozen steps with the lmbench objective's own
corrupt + loss on a planted corpus ("the film was great ." / "the food was awful ."), so the planted
filler must rank first. Scores are checked against references computed independently: masked
conditionals summed by hand, and transformers' own label loss for causal and seq2seq models.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from lmbench.config import TokenizerConfig
from lmbench.data.tokenizer import train_tokenizer
from lmbench.eval.family import LoadedModel, ModelDirError, load_scorer_model, wrap_model
from lmbench.eval.scoring import SlotError, fill_mask, score_candidates, vocabulary_words
from lmbench.objectives.base import Blocks, TokenInfo
from lmbench.testing.training import micro_backbone
from lmbench_plugins.bart_infill import BartInfillConfig, BartInfilling
from lmbench_plugins.clm import CausalLM, CLMConfig
from lmbench_plugins.mlm import MaskedLM, MLMConfig
from lmbench_plugins.t5_span import T5SpanConfig, T5SpanCorruption

PLANTED = {"film": "great", "food": "awful"}
DOCS = [f"the {subject} was {adjective} ." for subject, adjective in PLANTED.items()] * 40
QUERIES = [f"the {subject} was [MASK] ." for subject in PLANTED]
T5_QUERIES = [q.removesuffix(" .") for q in QUERIES]  # T5 trains on "the film was great" (see RECIPES)
ANSWERS = list(PLANTED.values())  # candidate order: query i's planted answer is candidate i

# family -> (kind, tokenizer type, objective, AdamW steps, learning rate)
RECIPES = {
    "bert": ("encoder", "wordpiece", lambda t: MaskedLM(MLMConfig(mlm_probability=0.3, add_cls_sep=False), t), 200, 3e-3),
    "gpt2": ("decoder", "bpe", lambda t: CausalLM(CLMConfig(), t), 80, 3e-3),
    # T5's noise mask puts a block's only span at its end, so T5 reads "the film was great" blocks
    "t5": ("encoder-decoder", "wordpiece", lambda t: T5SpanCorruption(T5SpanConfig(), t), 100, 3e-3),
    "bart": ("encoder-decoder", "bpe", lambda t: BartInfilling(BartInfillConfig(), t), 200, 3e-3),
}


def tiny_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """An lmbench tokenizer of `kind` trained on the planted corpus (every word is one token)."""
    source = SimpleNamespace(iter_documents=lambda: iter(DOCS))
    cfg = TokenizerConfig(type=kind, vocab_size=400, min_frequency=1, extra_special_tokens=[])
    return train_tokenizer(cfg, source)


def training_rows(family: str, tok: PreTrainedTokenizerFast) -> torch.Tensor:
    """The planted sentences as blocks in the framing the scorer presents them. (N, L)"""
    eos = tok.eos_token_id
    plain = tok(DOCS, add_special_tokens=False)["input_ids"]
    rows = {"bert": tok(DOCS)["input_ids"],  # [CLS] text [SEP], like the fill-mask pipeline
            "gpt2": [[eos] + ids for ids in plain],  # a document starts after </s>
            "t5": [ids[:-1] for ids in plain],  # span corruption masks the last word and appends </s>
            "bart": [ids + [eos] for ids in plain]}[family]
    return torch.tensor(rows)


def planted_model(family: str, seed: int = 0) -> LoadedModel:
    """A micro backbone of `family` trained with its lmbench objective until the planted fillers win."""
    kind, tok_type, make_objective, steps, lr = RECIPES[family]
    tok = tiny_tokenizer(tok_type)
    info = TokenInfo.from_tokenizer(tok)
    rows = training_rows(family, tok)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest on a shared machine
    try:
        torch.manual_seed(seed)
        model = micro_backbone(kind, info, 64, family)
        objective = make_objective(info)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(steps):
            pick = torch.randint(rows.shape[0], (16,), generator=gen)  # (16,)
            batch = objective.corrupt(Blocks(rows[pick]), gen)
            batch = {k: v for k, v in batch.items() if not k.startswith("stat_")}
            loss = objective.loss(model, batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return wrap_model(model, tok)


@pytest.fixture(scope="module")
def models() -> dict[str, LoadedModel]:
    return {family: planted_model(family) for family in RECIPES}


@pytest.mark.parametrize("family", list(RECIPES))
def test_planted_answer_ranks_first(models: dict[str, LoadedModel], family: str) -> None:
    queries = T5_QUERIES if family == "t5" else QUERIES
    scores = score_candidates(models[family], queries, [ANSWERS] * len(queries))
    assert [int(s.argmax()) for s in scores] == list(range(len(QUERIES))), [s.tolist() for s in scores]
    assert all(s.shape == (len(ANSWERS),) and bool(torch.isfinite(s).all()) and bool((s < 0).all()) for s in scores)


@pytest.mark.parametrize("family", list(RECIPES))
def test_batching_and_padding_do_not_change_scores(models: dict[str, LoadedModel], family: str) -> None:
    texts = QUERIES + ["the [MASK] was great .", "[MASK] film was great", "the film was great . the food [MASK]"]
    cands = [ANSWERS, ANSWERS, ["film", "food", "great"], ["the", "was"], ["was", "is"]]
    together = torch.cat(score_candidates(models[family], texts, cands, batch_size=64))
    alone = torch.cat([score_candidates(models[family], [t], [c], batch_size=1)[0] for t, c in zip(texts, cands)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def _masked_logprob(lm: LoadedModel, ids: list[int], position: int) -> float:
    masked = torch.tensor([ids])
    masked[0, position] = lm.tokenizer.mask_token_id
    with torch.no_grad():
        logits = lm.model(input_ids=masked).logits[0, position]  # (V,)
    return float(logits.log_softmax(-1)[ids[position]])


def test_mlm_multi_piece_word_is_scored_whole_by_pll(models: dict[str, LoadedModel]) -> None:
    lm = models["bert"]
    tok = lm.tokenizer
    word = "filmawful"
    pieces = tok.tokenize(word)
    assert len(pieces) >= 2 and tok.unk_token not in pieces, pieces
    ids = tok(f"the film was {word} .")["input_ids"]
    start = 4  # [CLS] the film was | pieces
    assert tok.convert_ids_to_tokens(ids[start:start + len(pieces)]) == pieces
    manual = sum(_masked_logprob(lm, ids, start + i) for i in range(len(pieces)))
    first_piece_only = _masked_logprob(lm, ids, start)
    (scores,) = score_candidates(lm, ["the film was [MASK] ."], [[word, "great"]])
    assert scores[0].item() == pytest.approx(manual, abs=1e-5)
    assert abs(scores[0].item() - first_piece_only) > 1e-3  # never cut to the first piece
    # a one-piece word is log p at a single [MASK]: the log of fill-mask's vocabulary softmax
    best = {c.token: c.score for c in fill_mask(lm, "the film was [MASK] .", top_k=len(tok))}
    assert scores[1].item() == pytest.approx(float(torch.tensor(best["great"]).log()), abs=1e-5)


def test_causal_scores_match_transformers_label_loss(models: dict[str, LoadedModel]) -> None:
    lm = models["gpt2"]
    tok = lm.tokenizer
    text = "the film was great ."
    ids = [tok.eos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        loss = lm.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
    sentence = score_candidates(lm, ["the film was [MASK] ."], [["great"]])[0][0].item()
    assert sentence == pytest.approx(-loss.item() * (len(ids) - 1), abs=1e-4)
    # "candidate": only the candidate's own tokens count (it owns the space before it)
    cand = score_candidates(lm, ["the film was [MASK] ."], [["great"]], decoder_score="candidate")[0][0].item()
    k = len(tok("the film was", add_special_tokens=False)["input_ids"]) + 1  # position of the candidate
    n = len(tok(" great", add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logp = lm.model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)  # (T, V)
    manual = sum(float(logp[t - 1, ids[t]]) for t in range(k, k + n))
    assert cand == pytest.approx(manual, abs=1e-5)
    assert cand > sentence


@pytest.mark.parametrize("family, text, encoder_text, target",
                         [("t5", "the film was [MASK] .", "the film was <extra_id_0> .",
                           "<extra_id_0> great <extra_id_1>"),
                          ("t5", "the film was [MASK]", "the film was <extra_id_0>", "<extra_id_0> great"),
                          ("bart", "the film was [MASK] .", "the film was [MASK] .", "the film was great .")])
def test_seq2seq_scores_match_transformers_label_loss(models: dict[str, LoadedModel], family: str, text: str,
                                                      encoder_text: str, target: str) -> None:
    lm = models[family]
    tok = lm.tokenizer
    enc = tok(encoder_text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    labels = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():  # transformers shifts the labels with the config's decoder_start_token_id
        loss = lm.model(input_ids=torch.tensor([enc]), labels=torch.tensor([labels])).loss
    score = score_candidates(lm, [text], [["great"]])[0][0].item()
    assert score == pytest.approx(-loss.item() * len(labels), abs=1e-4)


def test_saved_models_load_with_their_kind(models: dict[str, LoadedModel], tmp_path: Path) -> None:
    for family, lm in models.items():
        lm.model.save_pretrained(tmp_path / family)
        lm.tokenizer.save_pretrained(tmp_path / family)
        loaded = load_scorer_model(tmp_path / family)
        assert (loaded.kind, loaded.family, loaded.model.training) == (lm.kind, family, False)
        torch.testing.assert_close(torch.stack(score_candidates(loaded, QUERIES, [ANSWERS] * 2)),
                                   torch.stack(score_candidates(lm, QUERIES, [ANSWERS] * 2)), atol=1e-5, rtol=1e-5)


def test_model_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="local directory"):
        load_scorer_model("google-bert/bert-base-uncased")
    with pytest.raises(ModelDirError, match="config.json"):
        load_scorer_model(tmp_path)


def test_slot_and_candidate_errors(models: dict[str, LoadedModel]) -> None:
    lm = models["gpt2"]
    with pytest.raises(SlotError, match="no \\[MASK\\] slot"):
        score_candidates(lm, ["the film was great ."], [ANSWERS])
    with pytest.raises(SlotError, match="2 \\[MASK\\] slot"):
        score_candidates(lm, ["the [MASK] was [MASK] ."], [ANSWERS])
    with pytest.raises(SlotError, match="produces no token"):
        score_candidates(lm, QUERIES[:1], [["great", " "]])
    with pytest.raises(ValueError, match="2 texts but 1 candidate lists"):
        score_candidates(lm, QUERIES, [ANSWERS])
    with pytest.raises(ValueError, match="decoder_score"):
        score_candidates(lm, QUERIES, [ANSWERS] * 2, decoder_score="prefix")


def test_vocabulary_words_are_whole_ordinary_words(models: dict[str, LoadedModel]) -> None:
    for family in ("bert", "gpt2"):
        words = vocabulary_words(models[family])
        assert {"film", "was", "great", "awful", "food"} <= set(words), words
        # BPE learnt "the" only without its leading space (it starts every document): not a word here
        assert ("the" in words) == (family == "bert")
        assert all(w.isalpha() for w in words)  # no ## pieces, no punctuation, no specials
        assert vocabulary_words(models[family], limit=3) == words[:3]


def test_mlm_head_shortcut_equals_full_logits(models: dict[str, LoadedModel],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import lmbench.eval.scoring as scoring
    texts, cands = QUERIES + ["the [MASK] was great ."], [ANSWERS, ANSWERS, ["filmawful", "film"]]
    shortcut = torch.cat(score_candidates(models["bert"], texts, cands))
    monkeypatch.setattr(scoring, "MLM_HEADS", {})  # unknown head: the full model output is used
    torch.testing.assert_close(torch.cat(score_candidates(models["bert"], texts, cands)), shortcut,
                               atol=1e-5, rtol=1e-5)
