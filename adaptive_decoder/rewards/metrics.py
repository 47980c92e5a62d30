"""Rewards computed from the text: GSM8K correctness (lm-eval's answer extraction), chrF / BLEU, concept
coverage and exact match, and the terms that compare or penalise samples (repetition, novelty among a prompt's
samples, distinct valid items). Each is a class with a `name` and a batched `score(completions, examples)`; the
package docstring (`adaptive_decoder.rewards`) says which example fields each reads."""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal, InvalidOperation


# --------------------------------------------------------------------------------------------------------
# GSM8K answer extraction, following lm-eval-harness' gsm8k task (filters "strict-match" / "flexible-extract"
# and the exact_match normalisation that removes ",", "$", "#### " and a trailing ".").
# --------------------------------------------------------------------------------------------------------

_STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
EXTRACTION_MODES = ("strict", "flexible")


def _normalize_number(s: str) -> str:
    s = s.replace(",", "").replace("$", "").strip()
    if s.endswith("."):
        s = s[:-1]
    return s


def extract_gsm8k_answer(text: str, mode: str = "flexible") -> str | None:
    """The answer a model's GSM8K completion gives, normalised; None when it gives none.

    mode="strict": the number after "#### " (first such marker); mode="flexible": the last number in the text.
    Normalisation removes "," and "$" and a trailing "." ("$1,200.50" -> "1200.50", "18." -> "18").
    """
    if mode not in EXTRACTION_MODES:
        raise ValueError(f"unknown GSM8K extraction mode {mode!r}; valid: {list(EXTRACTION_MODES)}")
    if text is None:
        return None
    if mode == "strict":
        m = _STRICT_RE.search(text)
        candidates = [m.group(1)] if m else []
    else:
        candidates = [a or b for a, b in _FLEXIBLE_RE.findall(text)]
    # The flexible regex (as in lm-eval) also matches runs like "..", "$." or ",,"; they hold no digit.
    candidates = [c for c in candidates if any(ch.isdigit() for ch in c)]
    if not candidates:
        return None
    out = _normalize_number(candidates[-1])
    return out if any(ch.isdigit() for ch in out) else None


def gsm8k_gold(answer_field: str) -> str:
    """The gold number of a GSM8K `answer` field ("... #### 1,000" -> "1000"). A bare number is accepted too."""
    if not isinstance(answer_field, str):
        raise ValueError(f"GSM8K answer field must be a string, got {type(answer_field).__name__}: {answer_field!r}")
    if "####" in answer_field:
        gold = _normalize_number(answer_field.split("####")[-1])
    else:
        gold = _normalize_number(answer_field)
    try:
        Decimal(gold)
    except InvalidOperation:
        raise ValueError(f"GSM8K answer field has no '#### <number>' and is not a number: {answer_field[-80:]!r}") from None
    return gold


def numbers_equal(a: str | None, b: str | None) -> bool:
    """Numeric equality of two normalised answers ("1200.50" == "1200.5", "18" == "18.0"); None never matches."""
    if a is None or b is None:
        return False
    a, b = _normalize_number(str(a)), _normalize_number(str(b))
    try:
        da, db = Decimal(a), Decimal(b)
    except InvalidOperation:
        return a == b
    if not (da.is_finite() and db.is_finite()):
        return a == b
    return da == db


def _require(example: dict, key: str, reward: str):
    if key not in example:
        raise ValueError(f"reward {reward!r} needs the field {key!r} in every example; got fields {sorted(example)}")
    return example[key]


def _check_batch(completions, examples, reward: str):
    if len(completions) != len(examples):
        raise ValueError(f"reward {reward!r}: {len(completions)} completions but {len(examples)} examples")


# --------------------------------------------------------------------------------------------------------
# Task rewards
# --------------------------------------------------------------------------------------------------------


class GSM8KCorrectness:
    """1.0 if the extracted answer numerically equals the gold answer (example["answer"]), else 0.0."""

    name = "gsm8k"

    def __init__(self, mode: str = "flexible"):
        if mode not in EXTRACTION_MODES:
            raise ValueError(f"unknown GSM8K extraction mode {mode!r}; valid: {list(EXTRACTION_MODES)}")
        self.mode = mode

    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        _check_batch(completions, examples, self.name)
        return [
            float(numbers_equal(extract_gsm8k_answer(c, self.mode), gsm8k_gold(_require(e, "answer", self.name))))
            for c, e in zip(completions, examples)
        ]


class _SentenceMetric:
    """A sacrebleu sentence metric against example["reference"], scaled to [0, 1]; an empty completion gets 0."""

    name = "sentence_metric"
    metric = None

    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        _check_batch(completions, examples, self.name)
        out = []
        for c, e in zip(completions, examples):
            ref = _require(e, "reference", self.name)
            out.append(self.metric.sentence_score(c.strip(), [ref]).score / 100.0 if c.strip() else 0.0)
        return out


class ChrF(_SentenceMetric):
    """Sentence-level chrF (sacrebleu, default chrF2) against example["reference"], scaled to [0, 1]. Empty -> 0."""

    name = "chrf"

    def __init__(self, char_order: int = 6, word_order: int = 0, beta: int = 2):
        from sacrebleu.metrics import CHRF

        self.metric = CHRF(char_order=char_order, word_order=word_order, beta=beta)


class BLEU(_SentenceMetric):
    """Sentence-level BLEU (sacrebleu, exponential smoothing) against example["reference"], in [0, 1]. Empty -> 0."""

    name = "bleu"

    def __init__(self, tokenize: str | None = None):
        from sacrebleu.metrics import BLEU as _SacreBLEU

        self.metric = _SacreBLEU(tokenize=tokenize, effective_order=True)


_WORD_RE = re.compile(r"[a-z]+")
_VOWELS = set("aeiou")


def word_forms(word: str) -> set[str]:
    """Simple inflections of a required word: plural s/es, -ed, -ing, -er, y->ies/ied, e-dropping, doubled
    final consonant (stop -> stopped). Irregular forms (run -> ran) are not covered."""
    w = word.lower().strip()
    forms = {w, w + "s", w + "es", w + "ed", w + "ing", w + "er", w + "ers"}
    if w.endswith("e"):  # dance -> danced, dancing, dancer
        forms |= {w + "d", w[:-1] + "ing", w + "r", w + "rs"}
    if w.endswith("y") and len(w) > 1 and w[-2] not in _VOWELS:  # carry -> carries, carried, carrier
        forms |= {w[:-1] + "ies", w[:-1] + "ied", w[:-1] + "ier"}
    if len(w) >= 3 and w[-1] not in _VOWELS | {"w", "x", "y"} and w[-2] in _VOWELS and w[-3] not in _VOWELS:
        forms |= {w + w[-1] + suf for suf in ("ed", "ing", "er")}  # stop -> stopped, stopping
    return forms


class ConceptCoverage:
    """Fraction of the required words (example["concepts"]) used in the completion, case-insensitive, any simple
    inflection (see `word_forms`). A multi-word concept counts when each of its words appears. Empty text -> 0."""

    name = "concepts"

    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        _check_batch(completions, examples, self.name)
        out = []
        for i, (c, e) in enumerate(zip(completions, examples)):
            concepts = _require(e, "concepts", self.name)
            if isinstance(concepts, str) or not concepts:
                raise ValueError(f"example {i}: 'concepts' must be a non-empty list of words, got {concepts!r}")
            words = set(_WORD_RE.findall(c.lower()))
            hit = 0
            for concept in concepts:
                parts = _WORD_RE.findall(str(concept).lower())
                if parts and all(word_forms(p) & words for p in parts):
                    hit += 1
            out.append(hit / len(concepts))
        return out


# --------------------------------------------------------------------------------------------------------
# Degeneration / quality terms
# --------------------------------------------------------------------------------------------------------


def _ngrams(text: str, n: int) -> list[tuple]:
    if n < 1:
        raise ValueError(f"n-gram order must be >= 1, got {n}")
    toks = text.lower().split()
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def distinct_n(text: str, n: int) -> float:
    """Unique n-grams / all n-grams over whitespace words (lower-cased). 1.0 when the text has no n-gram."""
    grams = _ngrams(text, n)
    return len(set(grams)) / len(grams) if grams else 1.0


def repeated_ngram_rate(text: str, n: int) -> float:
    """Fraction of n-gram positions that repeat an n-gram seen earlier in the text (Welleck et al.'s rep-n,
    = 1 - distinct_n). 0.0 when the text has no n-gram."""
    grams = _ngrams(text, n)
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(c - 1 for c in counts.values()) / len(grams)


class Repetition:
    """Quality in [0, 1]: 1 - repeated_ngram_rate(text, n); 1 = no repeated n-gram, ~0 = a greedy loop.

    A completion with no word at all gets `empty_score` (default 0.0, so silence is not rewarded); a short one
    with fewer than n words has nothing repeated and gets 1.0.
    """

    name = "repetition"

    def __init__(self, n: int = 3, empty_score: float = 0.0):
        if int(n) != n or n < 1:
            raise ValueError(f"repetition n must be an integer >= 1, got {n!r}")
        self.n, self.empty_score = int(n), float(empty_score)

    def score(self, completions: list[str], examples: list[dict] | None = None) -> list[float]:
        if examples is not None:
            _check_batch(completions, examples, self.name)
        return [self.empty_score if not c.split() else 1.0 - repeated_ngram_rate(c, self.n) for c in completions]


def _prompt_groups(examples: list[dict], name: str) -> dict:
    """{prompt key: indices of its samples} for a group reward: the example's "id", else its "prompt"; every
    group needs >= 2 samples, since the reward of one sample is defined by the others."""
    groups: dict = {}
    for i, e in enumerate(examples):
        key = e.get("id", e.get("prompt")) if isinstance(e, dict) else None
        if key is None:
            raise ValueError(f"reward {name!r} groups samples by their example's 'id' or 'prompt'; the example has neither")
        groups.setdefault(key, []).append(i)
    for key, idx in groups.items():
        if len(idx) < 2:
            raise ValueError(f"reward {name!r} compares the samples of one prompt, but prompt {key!r} has a single "
                             "sample in this call: generate >= 2 samples per prompt (num_samples)")
    return groups


class Novelty:
    """Diversity in [0, 1] of each sample among the other samples of the same prompt (pool diversity, as in DivPO):
    1 - max_{j != i} Jaccard(n-grams of sample i, n-grams of sample j), over lower-cased whitespace words.

    Why: a per-sample reward can only favour a temperature above 0 for open-ended tasks if some term sees the
    other samples. With it, k identical greedy samples score 0 each; k samples that share no n-gram score 1.
    Samples are grouped by their example's "id" (or "prompt" when there is no id): pass all the samples of a
    prompt in one `score` call (the evaluation's k samples, the collection's N samples). A group with a single
    sample has no pool to compare with and is an error, not a silent 0 or 1. `reduce="mean"` uses the mean
    instead of the max similarity. An empty completion scores 0 (silence is not novel); a text with fewer than n
    words counts as one n-gram of all its words.
    """

    name = "novelty"
    needs_group = True  # the value of a sample depends on the other samples of its prompt in the same call

    def __init__(self, n: int = 2, reduce: str = "max"):
        if int(n) != n or n < 1:
            raise ValueError(f"novelty n must be an integer >= 1, got {n!r}")
        if reduce not in ("max", "mean"):
            raise ValueError(f"novelty reduce must be 'max' or 'mean', got {reduce!r}")
        self.n, self.reduce = int(n), reduce

    def _grams(self, text: str) -> frozenset:
        toks = text.lower().split()
        if len(toks) < self.n:
            return frozenset([tuple(toks)]) if toks else frozenset()
        return frozenset(tuple(toks[i : i + self.n]) for i in range(len(toks) - self.n + 1))

    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        _check_batch(completions, examples, self.name)
        groups = _prompt_groups(examples, self.name)
        grams = [self._grams(c or "") for c in completions]
        out = [0.0] * len(completions)
        for idx in groups.values():
            for i in idx:
                if not grams[i]:
                    continue
                sims = [len(grams[i] & grams[j]) / len(grams[i] | grams[j]) for j in idx if j != i]
                out[i] = 1.0 - (max(sims) if self.reduce == "max" else sum(sims) / len(sims))
        return out


def _normalize_text(text: str, ignore_case: bool, ignore_punctuation: bool) -> str:
    t = text or ""
    if ignore_case:
        t = t.lower()
    if ignore_punctuation:
        t = re.sub(r"[^\w\s]", " ", t)
    return " ".join(t.split())


class ExactMatch:
    """1.0 when the (post-processed) completion equals the example's `field` ("answer" by default), else 0.0;
    whitespace runs always count as one space, case and punctuation are ignored unless told otherwise.
    `mode="contains"`: 1.0 when the answer occurs in the completion as whole words instead; `mode="prefix"`: when
    the completion starts with it (whole words). The answer field may list alternatives separated by "|"."""

    name = "exact_match"

    def __init__(self, field: str = "answer", ignore_case: bool = True, ignore_punctuation: bool = True,
                 mode: str = "exact"):
        if mode not in ("exact", "contains", "prefix"):
            raise ValueError(f"exact_match mode must be 'exact', 'contains' or 'prefix', got {mode!r}")
        self.field, self.ignore_case, self.ignore_punctuation = field, bool(ignore_case), bool(ignore_punctuation)
        self.mode = mode

    def _match(self, text: str, gold: str) -> bool:
        norm = lambda x: _normalize_text(str(x), self.ignore_case, self.ignore_punctuation)  # noqa: E731
        t = norm(text)
        for g in str(gold).split("|"):
            g = norm(g)
            hit = {"exact": lambda: t == g, "contains": lambda: f" {g} " in f" {t} ",
                   "prefix": lambda: f"{t} ".startswith(f"{g} ")}[self.mode]
            if g and hit():
                return True
        return False

    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        _check_batch(completions, examples, self.name)
        return [float(self._match(c or "", _require(e, self.field, self.name))) for c, e in zip(completions, examples)]


class DistinctValid:
    """1.0 for a sample that is valid AND whose value no other sample of the same prompt has, else 0.0: a reward
    for distinct valid answers across a prompt's samples (k identical answers score 0 each).

    Valid: the stripped completion matches `pattern` in full and, when `min` / `max` are given, is a number in
    [min, max]. Values are compared after stripping and lower-casing. Samples are grouped like `Novelty` (by the
    example's "id", else its "prompt"); every group needs >= 2 samples. `needs_group`: the collection scores a
    sample among twins drawn with its own decoding values (CollectionSettings.group_reward_twins / twins)."""

    name = "distinct_valid"
    needs_group = True

    def __init__(self, pattern: str = r"\d+", min: float | None = None, max: float | None = None):
        self.pattern = re.compile(pattern)
        self.min, self.max = min, max

    def value(self, text: str):
        t = (text or "").strip().lower()
        if not t or not self.pattern.fullmatch(t):
            return None
        if self.min is not None or self.max is not None:
            try:
                x = float(t)
            except ValueError:
                return None
            if (self.min is not None and x < self.min) or (self.max is not None and x > self.max):
                return None
        return t

    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        _check_batch(completions, examples, self.name)
        groups = _prompt_groups(examples, self.name)
        vals = [self.value(c) for c in completions]
        out = [0.0] * len(completions)
        for idx in groups.values():
            counts = Counter(vals[i] for i in idx if vals[i] is not None)
            for i in idx:
                out[i] = float(vals[i] is not None and counts[vals[i]] == 1)
        return out
