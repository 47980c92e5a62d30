"""The example's own rewards, outside the library: the task file names them by import path (`my_rewards:...`),
which imports once this directory is on PYTHONPATH (see README.md). One function in TRL's reward-function
convention, one class in the library's; a reward needs nothing from adaptive_decoder."""

import re

_WORD = re.compile(r"[a-z]+")
_ARTICLES = {"a", "an", "the"}


def _first_word(text: str) -> str:
    """The reply's first word, lower-cased, skipping articles: "A Zebra." -> "zebra"."""
    return next((w for w in _WORD.findall(text.lower()) if w not in _ARTICLES), "")


def letter_answer(completions, letter, answers, partial=0.5, **kwargs):
    """TRL convention: called as fn(completions=[...], prompts=[...], **example_fields), one list per field.

    1.0 when the reply's first word (after an article) is one of the record's `answers`; `partial` when it only
    starts with the record's `letter` (the answer lists are not exhaustive, so an unlisted word that fits earns
    some credit); else 0.0. `partial` is an option of the spec (`my_rewards:letter_answer: {partial: 0.25}`)."""
    out = []
    for text, want, ok in zip(completions, letter, answers):
        word = _first_word(text)
        out.append(1.0 if word in ok else partial if word.startswith(want.lower()) else 0.0)
    return out


class OneWord:
    """Library convention: a class whose instances have score(completions, examples); its options go to the
    constructor. 1.0 for a reply of at most `max_words` words, else `max_words / words` (a ramble scores less;
    an empty reply 0.0)."""

    def __init__(self, max_words: int = 1):
        self.max_words = max_words

    def score(self, completions, examples):
        return [0.0 if not (n := len(c.split())) else min(1.0, self.max_words / n) for c in completions]
