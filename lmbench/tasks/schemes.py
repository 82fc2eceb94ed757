"""Tagging schemes for token tasks: check tag prefixes and normalise IOB1 / BIOES to IOB2.

Span F1 (seqeval, conlleval) and the token-classification heads work in IOB2, where every entity
starts with B-. Files come in other schemes: the original CoNLL-2003 release is IOB1 (B- only
between two adjacent entities of the same type, I- otherwise), the Hugging Face copy is IOB2, and
many newer sets are BIOES. Normalising once on load means a model never sees two spellings of one
entity, and a dev set in one scheme cannot be scored against predictions in another.
"""

from __future__ import annotations

from collections.abc import Sequence

SCHEMES: dict[str, tuple[str, ...]] = {"IOB1": ("B", "I"), "IOB2": ("B", "I"), "BIOES": ("B", "I", "E", "S")}
_ALIASES = {"IOBES": "BIOES"}


def scheme_name(scheme: str) -> str:
    """The canonical name of `scheme` (case-insensitive; IOBES is BIOES), or ValueError listing the choices."""
    name = _ALIASES.get(scheme.upper(), scheme.upper())
    if name not in SCHEMES:
        raise ValueError(f"unknown tagging scheme {scheme!r}; allowed: {', '.join(SCHEMES)}")
    return name


def tag_problem(tag: str, scheme: str) -> str | None:
    """Why `tag` is not a tag of `scheme`, or None when it is. Only the prefix letter is checked."""
    if tag == "O":
        return None
    allowed = SCHEMES[scheme]
    prefix, dash, kind = tag.partition("-")
    expected = f"expected 'O' or {', '.join(p + '-TYPE' for p in allowed)}"
    if not dash or prefix not in allowed:
        hint = ""
        if dash and prefix in ("E", "S") and scheme != "BIOES":
            hint = " (E-/S- tags mean the file is BIOES: pass scheme='BIOES')"
        return f"tag {tag!r} is not a {scheme} tag: {expected}{hint}"
    if not kind:
        return f"tag {tag!r} has no entity type after {prefix}-: {expected}"
    return None


def _check(tags: Sequence[str], scheme: str) -> None:
    for tag in set(tags):
        problem = tag_problem(tag, scheme)
        if problem:
            raise ValueError(f"position {list(tags).index(tag)}: {problem}")


def iob1_to_iob2(tags: Sequence[str]) -> tuple[str, ...]:
    """IOB1 -> IOB2: an I-X that does not continue an X entity (sentence start, after O, after another
    type) starts one, so it becomes B-X. B-X stays B-X. The entities are those conlleval reads."""
    _check(tags, "IOB1")
    prev = ("O", *tags[:-1])
    return tuple(f"B-{t[2:]}" if t.startswith("I-") and (p == "O" or p[2:] != t[2:]) else t
                 for p, t in zip(prev, tags))


def bioes_to_iob2(tags: Sequence[str]) -> tuple[str, ...]:
    """BIOES -> IOB2: S-X (single-token entity) becomes B-X and E-X (entity end) becomes I-X."""
    _check(tags, "BIOES")
    return tuple("B" + t[1:] if t[0] == "S" else "I" + t[1:] if t[0] == "E" else t for t in tags)


def to_iob2(tags: Sequence[str], scheme: str) -> tuple[str, ...]:
    """`tags` in `scheme` (IOB1, IOB2 or BIOES) rewritten as IOB2. IOB2 input is returned as it is."""
    name = scheme_name(scheme)
    if name == "IOB1":
        return iob1_to_iob2(tags)
    if name == "BIOES":
        return bioes_to_iob2(tags)
    _check(tags, "IOB2")
    return tuple(tags)
