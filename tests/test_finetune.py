"""Fine-tuning (downstream mode 1): pooling, backbone features, word alignment, and real training runs.

Tiny randomly initialised backbones of each kind (BERT, GPT-2, T5; 64 wide, 2 layers) with a BPE
tokenizer trained on the built-in world's texts are saved with save_pretrained and fine-tuned on the
built-in sentiment and NER sets. References: pooling by hand, hidden states from transformers' own
output_hidden_states / encoder outputs, alignment against the pieces' decoded text and the fast
tokenizer's word_ids(), span F1 of an oracle through SpanF1.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from lmbench.config import TokenizerConfig
from lmbench.data.tokenizer import train_tokenizer
from lmbench.eval.encode import (IGNORE, encode_classification, encode_tagging, first_pieces, tag_list,
                                 word_of_piece, words_from_pieces)
from lmbench.eval.family import load_scorer_model
from lmbench.eval.finetune import (FinetuneConfig, SequenceClassifier, finetune_classification, finetune_ner,
                                   select_on_dev, tagging_scores, train_model)
from lmbench.eval.pooling import default_pooling, encoder_hidden, pool
from lmbench.objectives.base import TokenInfo
from lmbench.tasks import TaskDataError, TextExample, TokenExample, builtin_task
from lmbench.testing.training import micro_backbone, save_micro_backbones

KINDS = ("encoder", "decoder", "encoder-decoder")


def world_tokenizer(kind: str = "bpe") -> PreTrainedTokenizerFast:
    """An lmbench tokenizer trained on the built-in world's sentiment texts and NER sentences."""
    texts = [e.text for e in builtin_task("sentiment", "train", 2000, 0)]
    texts += [" ".join(e.tokens) for e in builtin_task("ner", "train", 1000, 0)]
    cfg = TokenizerConfig(type=kind, vocab_size=1000, min_frequency=2, extra_special_tokens=[])
    return train_tokenizer(cfg, SimpleNamespace(iter_documents=lambda: iter(texts)))


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kind -> a save_pretrained directory (model + tokenizer) of a random-init micro backbone."""
    torch.set_num_threads(1)
    tok = world_tokenizer()
    return save_micro_backbones(tok, KINDS, tmp_path_factory.mktemp)


@pytest.fixture(scope="module")
def sentiment() -> tuple[list[TextExample], ...]:
    return tuple(builtin_task("sentiment", split, n, 0) for split, n in (("train", 800), ("dev", 200), ("test", 200)))


def test_pooling_against_hand_computation() -> None:
    hidden = torch.randn(3, 5, 4)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    torch.testing.assert_close(pool(hidden, right, "first"), hidden[:, 0])
    torch.testing.assert_close(pool(hidden, right, "last"), torch.stack([hidden[0, 2], hidden[1, 4], hidden[2, 0]]))
    mean = torch.stack([hidden[0, :3].mean(0), hidden[1].mean(0), hidden[2, 0]])
    torch.testing.assert_close(pool(hidden, right, "mean"), mean)
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    torch.testing.assert_close(pool(hidden, left, "last"), hidden[:, 4])
    assert [default_pooling(k) for k in KINDS] == ["first", "last", "mean"]
    with pytest.raises(ValueError, match="allowed values: first, last, mean"):
        pool(hidden, right, "max")


@pytest.mark.parametrize("kind", KINDS)
def test_encoder_hidden_matches_transformers_outputs(model_dirs: dict[str, Path], kind: str) -> None:
    loaded = load_scorer_model(model_dirs[kind])
    enc = encode_classification(loaded.tokenizer, kind, builtin_task("sentiment", "dev", 4, 0),
                                ["negative", "positive"], 128)
    ids, mask = enc.input_ids, enc.attention_mask
    with torch.no_grad():
        ours = encoder_hidden(loaded.model, ids, mask)  # (B, T, H)
        if kind == "encoder-decoder":
            out = loaded.model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :1])
            ref = out.encoder_last_hidden_state
        else:
            ref = loaded.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    keep = mask.bool()
    torch.testing.assert_close(ours[keep], ref[keep])
    assert ours.shape == (*ids.shape, loaded.model.config.hidden_size)


@pytest.mark.parametrize("kind,family", [("encoder", "roberta"), ("decoder", "llama"), ("encoder-decoder", "bart")])
def test_encoder_hidden_other_families(kind: str, family: str) -> None:
    torch.manual_seed(0)
    info = TokenInfo(vocab_size=50, pad_id=0, mask_id=4, bos_id=5, eos_id=6, cls_id=2, sep_id=3, unk_id=1,
                     special_ids=(0, 1, 2, 3, 4, 5, 6))
    model = micro_backbone(kind, info, 32, family).eval()
    ids = torch.randint(7, 50, (2, 9))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    ids[0, 6:] = 0
    with torch.no_grad():
        ours = encoder_hidden(model, ids, mask)
        if kind == "encoder-decoder":
            ref = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        else:
            ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(ours[mask.bool()], ref[mask.bool()])


def test_framing_per_kind(model_dirs: dict[str, Path]) -> None:
    tok = load_scorer_model(model_dirs["encoder"]).tokenizer
    text = [TextExample("The soup was great.", "positive")]
    plain = tok(text[0].text, add_special_tokens=False)["input_ids"]
    framed = {k: encode_classification(tok, k, text, ["positive"], 128).input_ids[0].tolist() for k in KINDS}
    assert framed["encoder"] == [tok.cls_token_id, *plain, tok.sep_token_id]
    assert framed["decoder"] == [tok.eos_token_id, *plain, tok.eos_token_id]
    assert framed["encoder-decoder"] == [*plain, tok.eos_token_id]


@pytest.mark.parametrize("tok_type", ["wordpiece", "bpe", "unigram"])
def test_labels_on_first_pieces_and_oracle_round_trip(tok_type: str) -> None:
    tok = world_tokenizer(tok_type)
    sents = builtin_task("ner", "dev", 60, 0)
    tags = tag_list([t for e in sents for t in e.tags], {}, "test")
    for kind in KINDS:
        enc = encode_tagging(tok, kind, sents, tags, 128)
        for i, e in enumerate(sents):  # each word's pieces, from its first to the next word's first, spell it
            ids, first = enc.input_ids[i], enc.first_piece[i, :len(e.tokens)]
            assert bool((first >= 0).all()) and bool((first[1:] > first[:-1]).all())
            stop = int(enc.attention_mask[i].sum()) - 1  # the closing [SEP] or </s>
            bounds = [*first.tolist(), stop]
            spelled = [tok.decode(ids[a:b]).replace(" ", "") for a, b in zip(bounds, bounds[1:])]
            assert spelled == [w if tok_type != "wordpiece" else w.lower() for w in e.tokens], (kind, spelled)
            labelled = (enc.labels[i] != IGNORE).nonzero().squeeze(1)
            assert labelled.tolist() == first.tolist()
            assert [tags[k] for k in enc.labels[i, labelled]] == list(e.tags)
        # an oracle that predicts gold on first pieces and junk elsewhere gives the gold words back
        junk = torch.randint(len(tags), enc.labels.shape, generator=torch.Generator().manual_seed(0))
        oracle = torch.where(enc.labels != IGNORE, enc.labels, junk)  # (N, T)
        words = words_from_pieces(oracle, enc.first_piece)  # (N, W)
        assert torch.equal(words[enc.word_tags != IGNORE], enc.word_tags[enc.word_tags != IGNORE])
        assert tagging_scores(words, enc.word_tags, tags, "conlleval")["f1"] == 1.0
    if tok_type == "wordpiece":  # reference: the fast tokenizer's own word_ids() on pre-split words
        ref = tok([list(e.tokens) for e in sents], is_split_into_words=True)
        enc = encode_tagging(tok, "encoder", sents, tags, 128)
        for i, e in enumerate(sents):
            wid = ref.word_ids(i)
            want = [wid.index(w) for w in range(len(e.tokens))]
            assert enc.first_piece[i, :len(e.tokens)].tolist() == want


def test_alignment_of_space_pieces_and_truncation() -> None:
    # pieces: "Ab" "c" " " "de" "" "." over words "Abc" (0-3) "de" (4-6) "." (7-8)
    offsets = torch.tensor([[0, 2], [2, 3], [3, 4], [4, 6], [0, 0], [6, 8]])
    spans = torch.tensor([[0, 3], [4, 6], [7, 8]])
    word_ids = word_of_piece(offsets, spans)
    assert word_ids.tolist() == [0, 0, -1, 1, -1, 2]
    assert first_pieces(word_ids, 4).tolist() == [0, 3, 5, -1]
    tok = world_tokenizer("bpe")
    sent = [TokenExample(("Anna", "Berg", "lives", "in", "Stadburg", "."), ("B-PER", "I-PER", "O", "O", "B-LOC", "O"))]
    tags = tag_list(list(sent[0].tags), {}, "test")
    enc = encode_tagging(tok, "encoder", sent, tags, 5)  # [CLS] + 3 pieces + [SEP]: later words are cut
    cut = enc.first_piece[0] < 0
    assert bool(cut.any()) and bool(cut[-1])
    words = words_from_pieces(enc.labels.clamp(min=0), enc.first_piece)
    assert words[0, cut].tolist() == [tags.index("O")] * int(cut.sum())


def test_select_on_dev_means_seeds_and_prefers_first_on_ties() -> None:
    grid = [{"lr": lr, "seed": s, "dev": {"acc": d}, "test": {"acc": t}}
            for lr, s, d, t in [(1, 0, 0.6, 0.1), (1, 1, 0.8, 0.3), (2, 0, 0.7, 0.5), (2, 1, 0.7, 0.7),
                                (3, 0, 0.5, 0.9), (3, 1, 0.5, 0.9)]]
    out = select_on_dev(grid, "lr", "acc")
    assert out["best_lr"] == 1 and out["dev_best"] == pytest.approx(0.7) and out["test"] == pytest.approx(0.2)
    assert out["dev_median"] == pytest.approx(0.7)


@pytest.mark.parametrize("kind", KINDS)
def test_finetune_sentiment_beats_majority(model_dirs: dict[str, Path], sentiment: tuple, kind: str) -> None:
    out = finetune_classification(model_dirs[kind], *sentiment, FinetuneConfig(lrs=(1e-3,), epochs=3))
    assert out["kind"] == kind and out["pooling"] == default_pooling(kind) and out["labels"] == ["negative", "positive"]
    assert out["test_majority"] == pytest.approx(0.5)
    assert out["test"] > out["test_majority"] + 0.15, out  # measured: 0.78 / 0.85 / 0.70
    assert out["test"] == out["test_metrics"]["acc"] and 0 < out["test_metrics"]["macro_f1"] <= 1
    assert out["best_lr"] == 1e-3 and out["dev_best"] == out["dev_median"] > 0.65


def test_finetune_is_deterministic_per_seed_and_keeps_caller_rng(model_dirs: dict[str, Path], sentiment: tuple) -> None:
    train, dev, test = (split[:96] for split in sentiment)
    cfg = FinetuneConfig(lrs=(1e-3,), epochs=1, batch_size=16)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = finetune_classification(model_dirs["encoder"], train, dev, test, cfg)
    assert torch.equal(torch.get_rng_state(), state)
    b = finetune_classification(model_dirs["encoder"], train, dev, test, cfg)
    assert a["grid"] == b["grid"]
    # the trained weights themselves: equal for one seed, different for another
    loaded = load_scorer_model(model_dirs["encoder"])
    data = encode_classification(loaded.tokenizer, "encoder", train, ["negative", "positive"], 128)

    def trained(seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        model = SequenceClassifier(load_scorer_model(model_dirs["encoder"]).model, 2, "first", gen)
        train_model(model, data, cfg, 1e-3, gen)
        return model.state_dict()

    first, again, other = trained(0), trained(0), trained(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["head.weight"], other["head.weight"])
    assert not torch.equal(first["backbone.bert.encoder.layer.0.attention.self.query.weight"],
                           other["backbone.bert.encoder.layer.0.attention.self.query.weight"])


def test_ner_finetune_reaches_span_f1(model_dirs: dict[str, Path]) -> None:
    train, dev, test = (builtin_task("ner", split, n, 0) for split, n in (("train", 800), ("dev", 200), ("test", 200)))
    out = finetune_ner(model_dirs["encoder"], train, dev, test, FinetuneConfig(lrs=(3e-3,), epochs=6))
    assert out["tags"][0] == "O" and {"B-PER", "I-PER", "B-LOC"} <= set(out["tags"])
    assert out["test"] > 0.3, out  # measured 0.49 from random init (an all-O tagger scores 0)
    assert set(out["test_metrics"]) >= {"precision", "recall", "f1", "f1/PER"}


def test_unseen_dev_label_raises_before_training(model_dirs: dict[str, Path]) -> None:
    train = [TextExample("good", "positive"), TextExample("bad", "negative")]
    dev = [TextExample("fine", "neutral")]
    with pytest.raises(TaskDataError, match=r"reviews.tsv: dev label\(s\) \['neutral'\] never occur"):
        finetune_classification(model_dirs["encoder"], train, dev, train, source="reviews.tsv")
    ner_train = [TokenExample(("Anna", "sings"), ("B-PER", "O"))]
    ner_test = [TokenExample(("Paris",), ("B-LOC",))]
    with pytest.raises(TaskDataError, match=r"test label\(s\) \['B-LOC'\]"):
        finetune_ner(model_dirs["encoder"], ner_train, ner_train, ner_test)
    with pytest.raises(TaskDataError, match="the dev split is empty"):
        finetune_classification(model_dirs["encoder"], train, [], train)
    only_o = [TokenExample(("a", "b"), ("O", "O"))]
    with pytest.raises(TaskDataError, match="no entity tags"):
        finetune_ner(model_dirs["encoder"], only_o, only_o, only_o)


def test_config_errors_name_the_key_and_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"finetune.lrs=\[\]; allowed values"):
        FinetuneConfig(lrs=())
    with pytest.raises(ValueError, match="finetune.pooling='max'; allowed values: auto, first, last, mean"):
        FinetuneConfig(pooling="max")
    with pytest.raises(ValueError, match="finetune.span_mode='iob'"):
        FinetuneConfig(span_mode="iob")
