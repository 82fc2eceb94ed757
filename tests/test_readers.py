"""Task data readers: every bad input fails with path:line, harmless variants read the same, schemes
convert to IOB2 with the entities seqeval (conlleval semantics) reads from the original."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2, IOBES, Entities

from lmbench.corpus import NER_TYPES, SENTIMENT_LABELS, TOPIC_LABELS
from lmbench.tasks import (
    TaskDataError,
    TextExample,
    TokenExample,
    bioes_to_iob2,
    builtin_task,
    check_labels,
    iob1_to_iob2,
    read_conll,
    read_table,
    to_iob2,
)

SST = "sentence\tlabel\na fine film \t1\ndull , dull , dull \t0\nsays \"hi\" twice \t1\n"
SST_ROWS = [TextExample("a fine film ", "1"), TextExample("dull , dull , dull ", "0"),
            TextExample('says "hi" twice ', "1")]
CONLL = ("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n. . O O\n\n"
         "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n-DOCSTART- -X- -X- O\n\nBRUSSELS NNP B-NP B-LOC\n")
CONLL_SENTS = [TokenExample(("EU", "rejects", "German", "."), ("B-ORG", "O", "B-MISC", "O")),
               TokenExample(("Peter", "Blackburn"), ("B-PER", "I-PER")),
               TokenExample(("BRUSSELS",), ("B-LOC",))]


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def variants(text: str) -> dict[str, bytes]:
    """The clean file and the harmless variants a reader must read identically."""
    return {"clean": text.encode(), "bom": b"\xef\xbb\xbf" + text.encode(),
            "crlf": text.replace("\n", "\r\n").encode(), "no_final_newline": text.rstrip("\n").encode(),
            "all": b"\xef\xbb\xbf" + text.rstrip("\n").replace("\n", "\r\n").encode()}


def raises(path: Path, fn, *args, **kwargs) -> str:
    """Call fn and return the TaskDataError message, which must name the file."""
    with pytest.raises(TaskDataError) as info:
        fn(path, *args, **kwargs)
    msg = str(info.value)
    assert str(path) in msg, msg
    return msg


# --- tables -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["clean", "bom", "crlf", "no_final_newline", "all"])
def test_sst2_layout_and_harmless_variants(tmp_path: Path, variant: str) -> None:
    path = write(tmp_path, "train.tsv", variants(SST)[variant])
    assert read_table(path, "sentence", "label") == SST_ROWS  # quotes are text in TSV, trailing space kept


@pytest.mark.parametrize("variant", ["clean", "bom", "crlf", "no_final_newline", "all"])
def test_csv_quoted_fields_and_variants(tmp_path: Path, variant: str) -> None:
    text = 'label,text\npos,"good, really good"\nneg,"said ""no""\nthen left"\npos,plain\n'
    path = write(tmp_path, "d.csv", variants(text)[variant])
    want = [TextExample("good, really good", "pos"), TextExample('said "no"\nthen left', "neg"),
            TextExample("plain", "pos")]
    assert read_table(path, "text", "label") == want


@pytest.mark.parametrize("variant", ["clean", "bom", "crlf", "no_final_newline"])
def test_jsonl_and_variants(tmp_path: Path, variant: str) -> None:
    text = '{"t": "a, b", "y": 1}\n\n{"t": "c\\td", "y": "neg"}\n'
    path = write(tmp_path, "d.jsonl", variants(text)[variant])
    assert read_table(path, "t", "y") == [TextExample("a, b", "1"), TextExample("c\td", "neg")]
    assert read_table(write(tmp_path, "d.json", text), "t", "y") == read_table(path, "t", "y")


def test_headerless_integer_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "d.tsv", "1\tgood film\n0\tbad film\n")
    assert read_table(path, "1", "0") == [TextExample("good film", "1"), TextExample("bad film", "0")]
    assert read_table(path, "1", "-2", fmt="tsv", has_header=False) == read_table(path, "1", "0")
    # with has_header=True the first row is a header, and an integer name not in it is an index
    headed = write(tmp_path, "h.tsv", "text\tlabel\nx\t1\n")
    assert read_table(headed, "0", "1", has_header=True) == [TextExample("x", "1")]
    msg = raises(path, read_table, "text", "label", has_header=False)
    assert "integer indexes 0..1" in msg and "'text'" in msg
    msg = raises(path, read_table, "5", "0")
    assert "'5'" in msg


def test_missing_column_lists_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "test.tsv", "index\tsentence\n0\tsome text\n")
    msg = raises(path, read_table, "sentence", "label")
    assert "'label'" in msg and "['index', 'sentence']" in msg
    jsonl = write(tmp_path, "d.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n')
    msg = raises(jsonl, read_table, "text", "label")
    assert ":2:" in msg and "['text']" in msg


@pytest.mark.parametrize("name,text,line,needle", [
    ("wrong_count.tsv", "sentence\tlabel\nok\t1\ntoo\tmany\t1\n", 3, "3 fields, the header has 2"),
    ("missing_tab.tsv", "sentence\tlabel\nok\t1\nno tab here\n", 3, "1 fields"),
    ("empty_label.tsv", "sentence\tlabel\nok\t1\nno label\t \n", 3, "empty label"),
    ("empty_text.tsv", "sentence\tlabel\n\t1\n", 2, "empty text"),
    ("wrong_count.csv", "text,label\n\"a, b\",1\na,b,1\n", 3, "3 fields"),
    ("bad_quote.csv", "text,label\n\"a\"x,1\n", 2, "bad CSV"),
    ("empty_label.csv", "text,label\na,\n", 2, "empty label"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", label: 1}\n', 2, "not JSON"),
    ("array.jsonl", '["a", 1]\n', 1, "JSON object"),
    ("empty_label.jsonl", '{"text": "a", "label": ""}\n', 1, "empty label"),
    ("null_label.jsonl", '{"text": "a", "label": null}\n', 1, "string or number"),
])
def test_bad_rows_name_path_line(tmp_path: Path, name: str, text: str, line: int, needle: str) -> None:
    for variant in ("clean", "crlf", "bom"):  # the line number does not move with the line ends or a BOM
        path = write(tmp_path, name, variants(text)[variant])
        col = "sentence" if name.endswith(".tsv") else "text"
        msg = raises(path, read_table, col, "label")
        assert f"{path}:{line}:" in msg and needle in msg, msg
        offending = text.split("\n")[line - 1]
        assert repr(offending)[1:-1][:40] in msg, msg  # the offending line is shown


def test_long_offending_line_is_truncated(tmp_path: Path) -> None:
    path = write(tmp_path, "d.tsv", "sentence\tlabel\n" + "x" * 5000 + "\t\n")
    msg = raises(path, read_table, "sentence", "label")
    assert f"{path}:2:" in msg and len(msg) < 400 and "..." in msg


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl"])
def test_non_utf8_names_line(tmp_path: Path, suffix: str) -> None:
    good = {".tsv": b"sentence\tlabel\nok\t1\n", ".csv": b"sentence,label\nok,1\n",
            ".jsonl": b'{"sentence": "ok", "label": 1}\n'}[suffix]
    path = write(tmp_path, "d" + suffix, good + b"caf\xe9 \xe0 la carte\t1\n")
    msg = raises(path, read_table, "sentence", "label")
    line = good.count(b"\n") + 1
    assert f"{path}:{line}:" in msg and "UTF-8" in msg and "0xe9" in msg


@pytest.mark.parametrize("content", [b"", b"\n\n", b"\xef\xbb\xbf", b"  \r\n"])
def test_empty_file_names_file(tmp_path: Path, content: bytes) -> None:
    for name in ("d.tsv", "d.csv", "d.jsonl", "d.conll"):
        path = write(tmp_path, name, content)
        fn = read_conll if name.endswith(".conll") else read_table
        args = () if fn is read_conll else ("text", "label")
        assert "empty" in raises(path, fn, *args)


def test_header_only_and_unknown_format(tmp_path: Path) -> None:
    assert "no data rows" in raises(write(tmp_path, "d.tsv", "sentence\tlabel\n"), read_table, "sentence", "label")
    msg = raises(write(tmp_path, "d.txt", "a\t1\n"), read_table, "0", "1")
    assert "'.txt'" in msg and "fmt" in msg
    assert read_table(tmp_path / "d.txt", "0", "1", fmt="tsv") == [TextExample("a", "1")]
    with pytest.raises(TaskDataError, match="unknown fmt 'xml'"):
        read_table(tmp_path / "d.txt", "0", "1", fmt="xml")


def test_check_labels_names_unseen_label_and_file(tmp_path: Path) -> None:
    train = read_table(write(tmp_path, "train.tsv", "sentence\tlabel\na\tpos\nb\tneg\n"), "sentence", "label")
    dev_path = write(tmp_path, "dev.tsv", "sentence\tlabel\nc\tpos\nd\tneutral\n")
    dev = read_table(dev_path, "sentence", "label")
    check_labels([e.label for e in train], [e.label for e in train], "train", dev_path)  # no error
    with pytest.raises(TaskDataError) as info:
        check_labels([e.label for e in train], [e.label for e in dev], "dev", dev_path)
    msg = str(info.value)
    assert str(dev_path) in msg and "'neutral'" in msg and "dev" in msg and "['neg', 'pos']" in msg


# --- CoNLL --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["clean", "bom", "crlf", "no_final_newline", "all"])
def test_conll_four_columns_docstart_and_variants(tmp_path: Path, variant: str) -> None:
    path = write(tmp_path, "train.txt", variants(CONLL)[variant])
    assert read_conll(path) == CONLL_SENTS


@pytest.mark.parametrize("keep", [(0, 3), (0, 2, 3), (0, 3, 3, 3)])
def test_conll_two_three_four_columns(tmp_path: Path, keep: tuple[int, ...]) -> None:
    """The same sentences written with 2, 3 or 4 columns (tabs or runs of spaces) read the same."""
    lines = [" ".join(ln.split()[i] for i in keep) if ln else "" for ln in CONLL.split("\n")]
    sep = "\t" if len(keep) == 3 else "   "
    path = write(tmp_path, "d.txt", "\n".join(ln.replace(" ", sep) for ln in lines))
    assert read_conll(path) == CONLL_SENTS
    assert read_conll(path, token_column=0, tag_column=len(keep) - 1) == CONLL_SENTS


def test_conll_docstart_ends_sentence_and_can_be_disabled(tmp_path: Path) -> None:
    path = write(tmp_path, "d.txt", "A B-PER\n-DOCSTART- O\nB O\n\n\n\nC O")  # no blank line around it
    assert read_conll(path) == [TokenExample(("A",), ("B-PER",)), TokenExample(("B",), ("O",)),
                                TokenExample(("C",), ("O",))]
    assert read_conll(path, doc_start="")[0] == TokenExample(("A", "-DOCSTART-", "B"), ("B-PER", "O", "O"))
    assert "no sentences" in raises(write(tmp_path, "e.txt", "-DOCSTART- O\n\n"), read_conll)


@pytest.mark.parametrize("text,line,needle,kwargs", [
    ("EU B-NP B-ORG\nrejects O\n", 2, "2 columns, but line 1 has 3", {}),
    ("EU NNP B-NP B-ORG\n\nPeter NNP B-PER\n", 3, "3 columns, but line 1 has 4", {}),
    ("EU\n", 1, "1 column(s)", {}),
    ("a b c d O\n", 1, "5 column(s)", {}),
    ("EU B-ORG\nrejects X-ORG\n", 2, "'X-ORG' is not a IOB2 tag", {}),
    ("EU B-ORG\nrejects o\n", 2, "'o' is not a IOB2 tag", {}),
    ("EU B-\n", 1, "no entity type", {}),
    ("EU S-ORG\n", 1, "pass scheme='BIOES'", {}),
    ("EU E-ORG\n", 1, "is not a IOB1 tag", {"scheme": "IOB1"}),
    ("EU L-ORG\n", 1, "is not a BIOES tag", {"scheme": "BIOES"}),
    ("EU NNP B-ORG\n", 1, "tag_column=3 but lines have 3 columns", {"tag_column": 3}),
])
def test_conll_bad_lines_name_path_line(tmp_path: Path, text: str, line: int, needle: str, kwargs: dict) -> None:
    for variant in ("clean", "crlf", "bom", "no_final_newline"):
        path = write(tmp_path, "d.txt", variants(text)[variant])
        msg = raises(path, read_conll, **kwargs)
        assert f"{path}:{line}:" in msg and needle in msg, msg
        assert repr(text.split("\n")[line - 1])[1:-1] in msg, msg


def test_conll_non_utf8_and_scheme_names(tmp_path: Path) -> None:
    msg = raises(write(tmp_path, "d.txt", b"EU B-ORG\n\nM\xfcller B-PER\n"), read_conll)
    assert ":3:" in msg and "UTF-8" in msg
    path = write(tmp_path, "ok.txt", "EU S-ORG\n")
    assert read_conll(path, scheme="iobes") == [TokenExample(("EU",), ("B-ORG",))]
    with pytest.raises(ValueError, match="allowed: IOB1, IOB2, BIOES"):
        read_conll(path, scheme="BILOU")


# --- schemes ------------------------------------------------------------------------------------------

IOB1_CASES = [  # (IOB1 input, hand-made IOB2 reference)
    (["I-PER", "I-PER", "O", "I-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),
    (["I-PER", "B-PER", "I-PER", "O"], ["B-PER", "B-PER", "I-PER", "O"]),  # B- only between same-type neighbours
    (["I-ORG", "I-LOC", "I-LOC", "B-LOC"], ["B-ORG", "B-LOC", "I-LOC", "B-LOC"]),  # type change starts an entity
    (["O", "B-MISC", "I-MISC", "O", "I-MISC"], ["O", "B-MISC", "I-MISC", "O", "B-MISC"]),
    (["O", "O"], ["O", "O"]),
    ([], []),
]


@pytest.mark.parametrize("iob1,iob2", IOB1_CASES)
def test_iob1_to_iob2_hand_reference(iob1: list[str], iob2: list[str]) -> None:
    assert iob1_to_iob2(iob1) == tuple(iob2)
    assert iob1_to_iob2(iob2) == tuple(iob2)  # IOB2 is already valid IOB1 with the same entities


def test_iob1_to_iob2_matches_seqeval_entities() -> None:
    """On random IOB1 sequences, seqeval's conlleval-style entities of the input equal those of our
    IOB2 output, and the output is valid strict IOB2 (seqeval's IOB2 scheme reads the same entities)."""
    rng = random.Random(0)
    pool = ["O"] * 4 + [f"{p}-{t}" for p in "BI" for t in ("PER", "LOC", "ORG")] + ["I-PER", "I-LOC"] * 2
    for _ in range(500):
        tags = [rng.choice(pool) for _ in range(rng.randint(1, 14))]
        out = list(iob1_to_iob2(tags))
        assert get_entities(out) == get_entities(tags), (tags, out)
        strict = [(e.tag, e.start, e.end - 1) for e in Entities([out], IOB2).entities[0]]
        assert strict == get_entities(out), (tags, out)


def test_bioes_to_iob2_hand_reference_and_seqeval() -> None:
    bioes = ["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "B-ORG", "E-ORG", "S-ORG"]
    want = ("B-PER", "O", "B-LOC", "I-LOC", "I-LOC", "B-LOC", "B-ORG", "I-ORG", "B-ORG")
    assert bioes_to_iob2(bioes) == want
    strict = [(e.tag, e.start, e.end - 1) for e in Entities([bioes], IOBES).entities[0]]
    assert strict == get_entities(list(want)) == [("PER", 0, 0), ("LOC", 2, 4), ("LOC", 5, 5), ("ORG", 6, 7),
                                                 ("ORG", 8, 8)]


def test_conll_file_schemes_convert_on_load(tmp_path: Path) -> None:
    iob1 = write(tmp_path, "iob1.txt", "Peter I-PER\nBlackburn I-PER\nBonn B-PER\n\nin O\nBonn I-LOC\n")
    want = [TokenExample(("Peter", "Blackburn", "Bonn"), ("B-PER", "I-PER", "B-PER")),
            TokenExample(("in", "Bonn"), ("O", "B-LOC"))]
    assert read_conll(iob1, scheme="IOB1") == want
    # IOB2 input is kept as it is (an I- after O is legal in conlleval's default mode)
    assert read_conll(iob1, scheme="IOB2")[1].tags == ("O", "I-LOC")
    bioes = write(tmp_path, "bioes.txt", "Peter B-PER\nBlackburn E-PER\nBonn S-PER\n\nin O\nBonn S-LOC\n")
    assert read_conll(bioes, scheme="BIOES") == want
    assert to_iob2(["S-PER"], "BIOES") == ("B-PER",)
    with pytest.raises(ValueError, match="position 1"):
        iob1_to_iob2(["O", "S-PER"])


# --- built-in sets ------------------------------------------------------------------------------------

def test_builtin_tasks_wrap_corpus_sets() -> None:
    sent = builtin_task("sentiment", "train", 20, 0)
    assert len(sent) == 20 and {e.label for e in sent} == set(SENTIMENT_LABELS)
    assert all(isinstance(e, TextExample) and e.text for e in sent)
    topic = builtin_task("topic", "dev", 10, 0)
    assert {e.label for e in topic} == set(TOPIC_LABELS)
    ner = builtin_task("ner", "test", 30, 0)
    assert all(isinstance(e, TokenExample) and len(e.tokens) == len(e.tags) for e in ner)
    tags = {t for e in ner for t in e.tags}
    assert tags <= {"O", *(f"{p}-{t}" for p in "BI" for t in NER_TYPES)}
    assert all(get_entities(list(e.tags)) == [(x.tag, x.start, x.end - 1) for x in Entities([list(e.tags)], IOB2)
                                              .entities[0]] for e in ner)  # already strict IOB2
    assert builtin_task("ner", "test", 30, 0) == ner  # deterministic
    with pytest.raises(ValueError, match="allowed: sentiment, topic, ner"):
        builtin_task("sst2", "train", 1, 0)
