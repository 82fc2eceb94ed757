"""Reader for CoNLL-style token files (one token per line, blank line between sentences) into IOB2.

CoNLL-2003 and its many relatives differ in column count (2 to 4), in `-DOCSTART-` lines, in the
tagging scheme (IOB1, IOB2, BIOES) and in whether the last sentence ends with a blank line. Each
of those, read wrong, silently shifts span F1, so the reader accepts them explicitly, normalises
tags to IOB2 on load, and stops at the first line it cannot read with path:line and the line.
"""

from __future__ import annotations

import re
from pathlib import Path

from lmbench.tasks.readers import TaskDataError, TokenExample, read_lines, show
from lmbench.tasks.schemes import scheme_name, tag_problem, to_iob2

_FIELD = re.compile(r"[^ \t]+")  # columns split on spaces/tabs only: other Unicode spaces stay in the token


def _columns(path: Path, no: int, line: str, width: int, token_column: int, tag_column: int) -> None:
    """Check the first token line: 2 to 4 columns, and the chosen columns exist and differ."""
    if not 2 <= width <= 4:
        raise TaskDataError(f"{path}:{no}: {width} column(s); a CoNLL file has 2 to 4 (token ... tag): {show(line)}")
    for key, col in (("token_column", token_column), ("tag_column", tag_column)):
        if not -width <= col < width:
            raise TaskDataError(f"{path}:{no}: {key}={col} but lines have {width} columns "
                                f"(allowed {-width}..{width - 1}): {show(line)}")
    if token_column % width == tag_column % width:
        raise TaskDataError(f"{path}: token_column={token_column} and tag_column={tag_column} are the same column")


def read_conll(path: str | Path, scheme: str = "IOB2", token_column: int = 0, tag_column: int = -1,
               doc_start: str = "-DOCSTART-") -> list[TokenExample]:
    """Read a CoNLL file into one TokenExample per sentence, tags normalised to IOB2.

    Columns are separated by spaces or tabs; every token line of a file must have the same number
    (2 to 4). Lines whose first column is `doc_start` ("" disables) end a sentence and are dropped;
    blank lines end a sentence; the last sentence needs no blank line after it. scheme: the scheme
    the file is written in, "IOB1" (converted), "IOB2" (kept as it is) or "BIOES" (converted); only
    the tag prefixes are checked (B-/I-/O, plus E-/S- for BIOES). Problems raise TaskDataError.
    """
    path = Path(path)
    scheme = scheme_name(scheme)
    lines = read_lines(path)
    sentences: list[TokenExample] = []
    tokens: list[str] = []
    tags: list[str] = []
    width, first = 0, 0  # column count, fixed by the first token line (line `first`)
    valid = {"O"}

    def end_sentence() -> None:
        if tokens:
            sentences.append(TokenExample(tuple(tokens), to_iob2(tags, scheme)))
            tokens.clear()
            tags.clear()

    for no, line in enumerate(lines, 1):
        fields = _FIELD.findall(line)
        if not fields or (doc_start and fields[0] == doc_start):
            end_sentence()
            continue
        if not width:
            _columns(path, no, line, len(fields), token_column, tag_column)
            width, first = len(fields), no
        elif len(fields) != width:
            raise TaskDataError(f"{path}:{no}: {len(fields)} columns, but line {first} has {width}; every "
                                f"token line needs the same columns: {show(line)}")
        tag = fields[tag_column]
        if tag not in valid:
            problem = tag_problem(tag, scheme)
            if problem:
                raise TaskDataError(f"{path}:{no}: {problem}: {show(line)}")
            valid.add(tag)
        tokens.append(fields[token_column])
        tags.append(tag)
    end_sentence()
    if not sentences:
        raise TaskDataError(f"{path}: no sentences (only blank or {doc_start!r} lines)")
    return sentences
