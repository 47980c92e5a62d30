"""Rewards defined outside the library, as a user's package would: tests/test_reward_plugins.py names them by
import path (`reward_plugin_helpers:keyword_bonus`, tests/ is on sys.path) and through a fake entry point."""

CALLS: list = []  # what trl_style received, for the test to inspect


def keyword_bonus(completions, keyword="4", **kwargs):
    """TRL convention: 1.0 when the completion contains `keyword` (a fixed option of the spec)."""
    return [float(keyword in c) for c in completions]


def trl_style(completions, prompts, answer, **kwargs):
    """TRL convention with the prompts and a dataset column; records its arguments."""
    CALLS.append({"completions": completions, "prompts": prompts, "answer": answer, "kwargs": kwargs})
    return [float(a.split("#### ")[-1] in c) for c, a in zip(completions, answer)]


def named_only(completions, answer):
    """No **kwargs: receives only the fields it names."""
    return [float(a in c) for c, a in zip(completions, answer)]


def char_variety(completions, **kwargs):
    """A continuous signal on a random tiny model: distinct characters per character (empty -> 0)."""
    return [len(set(c)) / len(c) if c else 0.0 for c in completions]


class LengthScore:
    """Library convention: a class whose instances have score(completions, examples); options -> constructor."""

    name = "length"

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def score(self, completions, examples):
        return [self.scale * len(c) for c in completions]


class CallableBonus:
    """TRL convention as a callable class: options -> constructor, then called like a function."""

    def __init__(self, bonus: float = 1.0):
        self.bonus = bonus

    def __call__(self, completions, prompts=None, **kwargs):
        return [self.bonus * len(c.split()) for c in completions]


def first_word_unique(completions, id, **kwargs):
    """A group reward: 1.0 when no other sample of the same example id starts with the same word."""
    firsts = [(i, (c.split() or [""])[0]) for i, c in zip(id, completions)]
    return [float(sum(f == g for g in firsts) == 1) for f in firsts]


first_word_unique.needs_group = True


def wrong_length(completions, **kwargs):
    return [0.0]


def gives_nan(completions, **kwargs):
    return [float("nan")] + [0.0] * (len(completions) - 1)


def gives_inf(completions, **kwargs):
    return [0.0] * (len(completions) - 1) + [float("inf")]


def gives_strings(completions, **kwargs):
    return ["high"] * len(completions)


def gives_none(completions, **kwargs):
    return [None] * len(completions)


def gives_number(completions, **kwargs):
    return 1.0


def gives_text(completions, **kwargs):
    return "0.5 0.5"


def no_completions(texts):
    return [0.0] * len(texts)


NOT_CALLABLE = 42
