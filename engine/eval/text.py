"""Answer text normalised for scoring: the one rule the synthetic harness and the external benchmarks share."""

from __future__ import annotations

import re

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
