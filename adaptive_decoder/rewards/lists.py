"""A reward for replies that list things ("Name 5 different fruits"): how many of the requested items the reply
gives, each well-formed and none repeated.

Why its own reward: a list task sits between the closed-answer and the open-ended tasks of a mix. Within one reply
the items must be distinct and short, which greedy decoding usually manages and a hot sample breaks (run-on items,
repeats, prose); across a prompt's samples the same greedy list every time is no better than one, which `novelty`
(n=1) rewards separately. Together they put the best temperature in the middle of the grid.
"""

from __future__ import annotations

import re

from .metrics import _check_batch, _require

_SPLIT = re.compile(r"[,;\n]+|\s+and\s+")       # items are separated by commas, semicolons, line breaks or "and"
_MARKER = re.compile(r"^\s*(?:[-*•]|\d+[.)]|[a-z][.)])\s+", re.IGNORECASE)  # "1. ", "- ", "a) " list marks
_ITEM = re.compile(r"[a-z][a-z' -]*[a-z]|[a-z]")  # letters with inner spaces, hyphens, apostrophes
# a gloss after the item: "Cow (Bovine)", "Gold: a soft metal", "Oak - a tree" (SmolLM2-135M adds one to most items)
_GLOSS = re.compile(r"\s*(?:\(|:|\s[-–—]\s).*$")


def list_items(text: str) -> list[str]:
    """The items of a reply, in order: split at `,` `;` line breaks and " and "; list marks, a gloss (from "(", ":"
    or a spaced dash on) and a final "." removed; lower-cased, inner whitespace collapsed; empty pieces dropped.
    "1. Apple\\n2. Pear (Pyrus)." -> ["apple", "pear"]."""
    out = []
    for piece in _SPLIT.split(text or ""):
        piece = _GLOSS.sub("", _MARKER.sub("", piece)).strip().rstrip(".!").strip().lower()
        piece = " ".join(piece.split())
        if piece:
            out.append(piece)
    return out


class DistinctItems:
    """min(number of distinct valid items, n) / n, in [0, 1]; n is the example's `field` ("n" by default), the
    number of items the prompt asks for.

    An item (`list_items`) is valid when it is letters only (inner spaces, hyphens and apostrophes allowed) of
    1..`max_words` words; a valid item equal to an earlier one counts once. Items past the n-th are ignored, so a
    reply cannot make up for repeats or prose by listing more. "apple, banana, apple, the best fruit is a mango"
    with n = 4 and max_words = 3: apple, banana (apple again counts once; the last item has 6 words) -> 2/4 = 0.5.
    An empty reply scores 0."""

    name = "distinct_items"

    def __init__(self, field: str = "n", max_words: int = 3):
        if int(max_words) != max_words or max_words < 1:
            raise ValueError(f"distinct_items max_words must be an integer >= 1, got {max_words!r}")
        self.field, self.max_words = field, int(max_words)

    def valid(self, item: str) -> bool:
        return bool(_ITEM.fullmatch(item)) and len(item.split()) <= self.max_words

    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        _check_batch(completions, examples, self.name)
        out = []
        for c, e in zip(completions, examples):
            n = _require(e, self.field, self.name)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"reward {self.name!r}: field {self.field!r} must be an integer >= 1, got {n!r}")
            items = list_items(c)[:n]
            out.append(len({i for i in items if self.valid(i)}) / n)
        return out
