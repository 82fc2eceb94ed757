"""Readers for downstream classification data (TSV, CSV, JSON Lines) and the built-in labelled sets.

Evaluation must see exactly the rows a user's file holds: a silently skipped row, a header read as
data or a label that only occurs in dev all change a reported score. So every reader fails loudly
with `path:line` and the offending line, and accepts the harmless variations real files have (a
UTF-8 BOM, CRLF line ends, no final newline). CoNLL token files are read by `lmbench.tasks.conll`.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
BUILTIN_TASKS = ("sentiment", "topic", "ner")


@dataclass(frozen=True)
class TextExample:
    """One sequence-classification example; labels are strings (any number of classes)."""
    text: str
    label: str


@dataclass(frozen=True)
class TokenExample:
    """One sentence for token classification: tokens and their IOB2 tags (same length)."""
    tokens: tuple[str, ...]
    tags: tuple[str, ...]


class TaskDataError(ValueError):
    """A task file cannot be used as it is; the message names path:line (or the file, key or columns)."""


def show(line: str, limit: int = 100) -> str:
    """`line` quoted for an error message, cut to `limit` characters."""
    return repr(line if len(line) <= limit else line[:limit] + "...")


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file without line ends: BOM dropped, LF or CRLF, final newline optional.

    Non-UTF-8 bytes raise TaskDataError naming path:line; an empty (or all-blank) file names the file.
    """
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_no = data.count(b"\n", 0, e.start) + 1
        start = data.rfind(b"\n", 0, e.start) + 1
        end = data.find(b"\n", e.start)
        raw = data[start:end if end >= 0 else len(data)].decode("utf-8", "replace")
        raise TaskDataError(f"{path}:{line_no}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column "
                            f"{e.start - start + 1}); re-save the file as UTF-8: {show(raw)}") from None
    if not text.strip():
        raise TaskDataError(f"{path}: the file is empty")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start another
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _is_index(name: str) -> bool:
    return name.lstrip("-").isdigit()


def _column(name: str, header: list[str] | None, width: int, path: Path) -> int:
    """Index of column `name`: a header name, or an integer index ("0", "1", "-1")."""
    if header is not None and name in header:
        if header.count(name) > 1:
            raise TaskDataError(f"{path}:1: column {name!r} occurs {header.count(name)} times in the header {header}")
        return header.index(name)
    if _is_index(name) and -width <= int(name) < width:
        return int(name) % width
    if header is None:
        raise TaskDataError(f"{path}: without a header row columns are integer indexes 0..{width - 1} "
                            f"(the first row has {width} columns), got {name!r}")
    raise TaskDataError(f"{path}: no column {name!r}; columns present: {header}")


def _rows(path: Path, lines: list[str], fmt: str) -> Iterable[tuple[int, str, list[str]]]:
    """(line number, line, fields) of each non-blank row of a TSV or CSV file."""
    if fmt == "tsv":  # GLUE-style TSV: no quoting, a quote character is just text
        for no, line in enumerate(lines, 1):
            if line:
                yield no, line, line.split("\t")
        return
    reader = csv.reader((ln + "\n" for ln in lines), strict=True)
    last = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise TaskDataError(f"{path}:{last + 1}: bad CSV ({e}): {show(lines[last])}") from None
        if fields:
            yield last + 1, lines[last], fields  # a quoted field may span lines: report the first
        last = reader.line_num


def _table(path: Path, lines: list[str], fmt: str, text_column: str, label_column: str,
           has_header: bool | None) -> list[TextExample]:
    rows = iter(_rows(path, lines, fmt))
    first = next(rows, None)
    if first is None:
        raise TaskDataError(f"{path}: the file has no rows")
    if has_header is None:  # integer column names mean a headerless file
        has_header = not (_is_index(text_column) and _is_index(label_column))
    header = first[2] if has_header else None
    width = len(first[2])
    ti = _column(text_column, header, width, path)
    li = _column(label_column, header, width, path)
    out: list[TextExample] = []
    for no, line, fields in rows if has_header else (first, *rows):
        if len(fields) != width:
            what = "the header" if has_header else "the first row"
            raise TaskDataError(f"{path}:{no}: {len(fields)} fields, {what} has {width}: {show(line)}")
        out.append(_example(path, no, line, fields[ti], fields[li]))
    if not out:
        raise TaskDataError(f"{path}: the file has a header row but no data rows")
    return out


def _example(path: Path, no: int, line: str, text: object, label: object) -> TextExample:
    if isinstance(label, (int, float)):  # JSON numbers and booleans: 1 -> "1", true -> "true"
        label = json.dumps(label)
    if not isinstance(text, str) or not isinstance(label, str):
        raise TaskDataError(f"{path}:{no}: text must be a string and label a string or number: {show(line)}")
    label = label.strip()
    if not label:
        raise TaskDataError(f"{path}:{no}: empty label: {show(line)}")
    if not text.strip():
        raise TaskDataError(f"{path}:{no}: empty text: {show(line)}")
    return TextExample(text, label)


def _jsonl(path: Path, lines: list[str], text_column: str, label_column: str) -> list[TextExample]:
    out: list[TextExample] = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskDataError(f"{path}:{no}: not JSON ({e.msg}); JSON Lines needs one object per line: "
                                f"{show(line)}") from None
        if not isinstance(obj, dict):
            raise TaskDataError(f"{path}:{no}: expected a JSON object per line: {show(line)}")
        for key in (text_column, label_column):
            if key not in obj:
                raise TaskDataError(f"{path}:{no}: no key {key!r}; keys present: {sorted(obj)}")
        out.append(_example(path, no, line, obj[text_column], obj[label_column]))
    return out


def read_table(path: str | Path, text_column: str, label_column: str, fmt: str | None = None,
               has_header: bool | None = None) -> list[TextExample]:
    """Read a classification file into TextExamples, one per row, in file order.

    fmt: "tsv" (tab-separated, no quoting; GLUE / SST-2 layout), "csv" (csv module, quoted fields may
    hold commas and newlines) or "jsonl" (one JSON object per line, columns are keys); None infers it
    from the suffix (.tsv, .csv, .jsonl, .json). has_header: None means a header row unless both
    columns are integer indexes ("0", "1"), which read a headerless file. Blank lines are skipped;
    the text is kept as it is, the label is stripped. Any other problem raises TaskDataError.
    """
    path = Path(path)
    if fmt is None:
        if path.suffix.lower() not in FORMATS:
            raise TaskDataError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
                                f"use one of {sorted(FORMATS)} or pass fmt= one of {sorted(set(FORMATS.values()))}")
        fmt = FORMATS[path.suffix.lower()]
    if fmt not in FORMATS.values():
        raise TaskDataError(f"unknown fmt {fmt!r}; allowed: {sorted(set(FORMATS.values()))}")
    lines = read_lines(path)
    if fmt == "jsonl":
        return _jsonl(path, lines, text_column, label_column)
    return _table(path, lines, fmt, text_column, label_column, has_header)


def check_labels(train_labels: Iterable[str], other_labels: Iterable[str], split_name: str,
                 path: str | Path) -> None:
    """Raise TaskDataError when `split_name` (read from `path`) has a label that training never shows.

    A classifier cannot predict a class it has no output for, so such a split would be scored wrong.
    Works for class labels and for IOB2 tags alike.
    """
    seen = set(train_labels)
    unseen = sorted(set(other_labels) - seen)
    if unseen:
        raise TaskDataError(f"{path}: {split_name} label(s) {unseen} never occur in the training data "
                            f"(training labels: {sorted(seen)})")


def builtin_task(name: str, split: str, n: int, seed: int) -> list[TextExample] | list[TokenExample]:
    """`n` examples of a built-in labelled set drawn from the lmbench.corpus world `seed`.

    name: "sentiment" or "topic" (TextExamples with label names) or "ner" (IOB2 TokenExamples);
    split: "train", "dev" or "test" (disjoint by construction).
    """
    from lmbench import corpus  # the world generator is heavy; load it only when a built-in set is asked for

    if name == "sentiment":
        labels = corpus.SENTIMENT_LABELS
        return [TextExample(e.text, labels[e.label]) for e in corpus.sentiment_examples(n, seed, split)]
    if name == "topic":
        return [TextExample(e.text, corpus.TOPIC_LABELS[e.label]) for e in corpus.topic_examples(n, seed, split)]
    if name == "ner":
        return [TokenExample(e.tokens, e.tags) for e in corpus.ner_examples(n, seed, split)]
    raise ValueError(f"unknown built-in task {name!r}; allowed: {', '.join(BUILTIN_TASKS)}")
