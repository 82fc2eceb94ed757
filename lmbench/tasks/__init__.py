"""Downstream task data: readers for user files (TSV/CSV/JSONL, CoNLL) and the built-in labelled sets.

Everything evaluation trains or scores on comes through here as TextExample (text, label) or
TokenExample (tokens, IOB2 tags); a file that cannot be read exactly raises TaskDataError with
path:line.
"""

from lmbench.tasks.conll import read_conll
from lmbench.tasks.readers import (
    BUILTIN_TASKS,
    TaskDataError,
    TextExample,
    TokenExample,
    builtin_task,
    check_labels,
    read_table,
)
from lmbench.tasks.schemes import SCHEMES, bioes_to_iob2, iob1_to_iob2, to_iob2

__all__ = [
    "BUILTIN_TASKS", "SCHEMES", "TaskDataError", "TextExample", "TokenExample", "bioes_to_iob2", "builtin_task",
    "check_labels", "iob1_to_iob2", "read_conll", "read_table", "to_iob2",
]
