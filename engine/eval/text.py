"""Answer text normalised for scoring: the one rule the synthetic harness and the external benchmarks share."""

from __future__ import annotations

import re
from collections.abc import Iterable

_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}


def normalise(text: str) -> str:
    """Lower case, punctuation -> spaces, number words -> digits, single spaces."""
    words = re.sub(r"[^0-9a-z]+", " ", str(text).lower()).split()
    return " ".join(_NUMBER_WORDS.get(w, w) for w in words)


# ---------------------------------------------------------------------------------------------
# Text matching


def contains(text: str, phrase: str) -> bool:
    """Whole-word, normalised containment."""
    p = normalise(phrase)
    return bool(p) and f" {p} " in f" {normalise(text)} "


def matches(text: str, accept: Iterable[str], kind: str = "") -> bool:
    """Every accept phrase occurs in text. An empty accept list matches any non-empty text."""
    accept = [str(a) for a in accept]
    if not accept:
        return bool(normalise(text))
    for a in accept:
        alts = [a]
        if kind in ("count", "count_total") and normalise(a) == "no":
            alts += ["0", "none"]
        if not any(contains(text, x) for x in alts):
            return False
    return True


def first_sentence(text: str) -> str:
    m = re.search(r"[.!?](\s|$)", text.strip())
    return text.strip()[: m.end()].strip() if m else text.strip()


# ---------------------------------------------------------------------------------------------
