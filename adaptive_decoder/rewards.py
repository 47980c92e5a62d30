"""Per-sample rewards used to rank samples for LPO (and to score them in evaluation).

Every reward is a small class with a `name` and a batched `score(completions, examples) -> list[float]`.
`examples[i]` is the task record of sample i; the fields a reward reads are:

    "answer"     GSM8K answer field (the gold number follows "#### ")      -> GSM8KCorrectness
    "reference"  reference translation                                     -> ChrF, BLEU
    "concepts"   list of words that must appear                            -> ConceptCoverage
    "prompt"     the prompt text                                           -> Fluency, RewardModelScorer

Rewards never return NaN for an empty completion (each one documents the value it gives instead);
dropping non-finite rewards that come from elsewhere (e.g. a reward model) is the job of `pairs.py`.

`CompositeReward` combines named components with weights; `build_reward` builds one from a YAML-style dict:

    build_reward({"gsm8k": {"weight": 1.0, "mode": "flexible"}, "repetition": {"weight": 0.2, "n": 3}})
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import re
from collections import Counter
from decimal import Decimal, InvalidOperation

import torch

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


def _prompt_ids(tokenizer, prompt: str, chat: bool | None) -> list[int]:
    """Token ids of a prompt exactly as generation encodes it (`adaptive_decoder.modeling.models.encode_prompts`):
    chat template + generation prompt when the tokenizer has one (and chat is not False), else plain encoding."""
    from .modeling.models import format_prompt, has_chat_template

    use_chat = has_chat_template(tokenizer) if chat is None else chat
    return tokenizer(format_prompt(tokenizer, prompt, chat), add_special_tokens=not use_chat)["input_ids"]


class Fluency:
    """Mean per-token log-likelihood (nats) of the completion given the prompt under a scorer LM (default: the
    frozen base model). Higher is better; high-temperature gibberish scores very low.

    Scores are clamped below at `floor` (default -20.0) so one absurd token cannot dominate a composite, and an
    empty completion gets exactly `floor`. Prompts are encoded like generation does (chat template if any);
    at most `max_length` tokens are scored (the prompt is cut from the left first).
    """

    name = "fluency"

    def __init__(self, model, tokenizer, batch_size: int = 8, floor: float = -20.0, max_length: int = 1024,
                 chat: bool | None = None):
        if model is None or tokenizer is None:
            raise ValueError("Fluency needs a scorer LM and its tokenizer (pass model=, tokenizer= to build_reward)")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.floor, self.max_length, self.chat = int(batch_size), float(floor), int(max_length), chat

    def _encode(self, completion: str, example: dict) -> tuple[list[int], int]:
        p = _prompt_ids(self.tokenizer, _require(example, "prompt", self.name), self.chat)
        c = self.tokenizer(completion, add_special_tokens=False)["input_ids"]
        c = c[: self.max_length - 1]
        p = p[-(self.max_length - len(c)) :] if len(p) + len(c) > self.max_length else p
        if not p:  # nothing to condition the first token on: use BOS/EOS as context
            p = [self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id]
        return p + c, len(c)

    @torch.no_grad()
    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        _check_batch(completions, examples, self.name)
        enc = [self._encode(c, e) for c, e in zip(completions, examples)]
        out = [self.floor] * len(enc)
        todo = [i for i, (_, n) in enumerate(enc) if n > 0]
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for s in range(0, len(todo), self.batch_size):
            idx = todo[s : s + self.batch_size]
            L = max(len(enc[i][0]) for i in idx)
            ids = torch.full((len(idx), L), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), L), dtype=torch.long)
            for r, i in enumerate(idx):  # right padding: positions stay 0..len-1 without position_ids
                ids[r, : len(enc[i][0])] = torch.tensor(enc[i][0])
                mask[r, : len(enc[i][0])] = 1
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            for r, i in enumerate(idx):
                seq, n = enc[i]
                start = len(seq) - n  # first completion position; predicted from position start-1
                lp = torch.log_softmax(logits[r, start - 1 : len(seq) - 1], dim=-1)
                tok = torch.tensor(seq[start:], device=lp.device)
                mean = lp.gather(-1, tok[:, None]).mean().item()
                out[i] = max(self.floor, mean) if math.isfinite(mean) else self.floor
        return out


logger = logging.getLogger(__name__)


def _is_cpu(where) -> bool:
    return isinstance(where, (str, torch.device)) and str(where).split(":")[0] == "cpu"


def _check_reward_model_placement(model, policy_device, asked_cpu: bool) -> None:
    """Warn (once per process) when the reward model ended on the CPU while the policy runs on CUDA, unless the
    CPU was asked for."""
    if asked_cpu or policy_device is None or torch.device(policy_device).type != "cuda":
        return
    if next(model.parameters()).device.type == "cpu":
        _warn_reward_model_on_cpu(str(policy_device))


@functools.lru_cache(maxsize=1)
def _warn_reward_model_on_cpu(policy_device: str) -> None:
    logger.warning("the reward model scores on the CPU while the policy runs on %s: set reward_model.device (e.g. "
                   "cuda, with dtype: bfloat16) in the reward spec, or device: cpu to keep it there", policy_device)


class RewardModelScorer:
    """Scores (prompt, completion) with any HF AutoModelForSequenceClassification reward model, batched.

    The conversation [user: prompt, assistant: completion] goes through the reward tokenizer's chat template
    when it has one (ArmoRM / Skywork style), else "prompt\\n\\ncompletion". The score is `outputs.score` when the
    model returns one (ArmoRM's custom head), else `logits[:, label_index]`.

    Loading from a path takes `revision` and `trust_remote_code` (model and tokenizer; ArmoRM ships its own
    modelling code, so it needs trust_remote_code: true, an opt-in since it runs that code), `dtype` (a name
    `adaptive_decoder.modeling.models.resolve_dtype` accepts, 'auto' its rule on the device the model goes to;
    None: transformers' default, float32) and `device_map` (placed while it loads). Placement: `device` moves
    the model there; `device_map` places it instead (give one of them); with neither, a model loaded from a path
    goes to `policy_device` (the policy LM's device, which `build_reward` passes), else to cuda when there is one,
    else stays on the CPU, and a given model object stays where it is. A reward model left on the CPU while the
    policy runs on CUDA, without `device: cpu` (or a CPU device_map) asking for it, is warned about once per
    process, naming `reward_model.device`: an 8B reward model scoring on the CPU is what slows a GPU collection.
    """

    name = "reward_model"

    def __init__(self, model_or_path, tokenizer=None, batch_size: int = 8, max_length: int = 2048, label_index: int = 0,
                 device=None, trust_remote_code: bool = False, dtype=None, device_map=None, revision: str | None = None,
                 policy_device=None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from .modeling.models import resolve_dtype

        if device is not None and device_map is not None:
            raise ValueError(f"reward_model: device {str(device)!r} and device_map {device_map!r} both place the "
                             "reward model; give one of them")
        if isinstance(model_or_path, str):
            target = device if device is not None or device_map is not None else (
                policy_device if policy_device is not None else ("cuda" if torch.cuda.is_available() else None))
            hub = {k: v for k, v in (("revision", revision), ("trust_remote_code", trust_remote_code)) if v}
            opts = {} if device_map is None else {"device_map": device_map}
            model = AutoModelForSequenceClassification.from_pretrained(
                model_or_path, dtype=None if dtype is None else resolve_dtype(dtype, target), **hub, **opts)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_or_path, **hub)
        else:
            target, model = device, model_or_path
        if tokenizer is None:
            raise ValueError("RewardModelScorer needs the reward model's tokenizer when given a model object")
        model.eval().requires_grad_(False)
        if target is not None and device_map is None:
            model.to(target)
        _check_reward_model_placement(model, policy_device, asked_cpu=_is_cpu(device) or _is_cpu(device_map))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id  # HF seq-cls finds the last non-pad token with it
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_length, self.label_index = int(batch_size), int(max_length), int(label_index)

    def format(self, prompt: str, completion: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            conv = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            return self.tokenizer.apply_chat_template(conv, tokenize=False)
        return f"{prompt}\n\n{completion}"

    @torch.no_grad()
    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        _check_batch(completions, examples, self.name)
        texts = [self.format(_require(e, "prompt", self.name), c) for c, e in zip(completions, examples)]
        device = next(self.model.parameters()).device
        # The chat template already contains BOS etc.; don't add special tokens twice.
        add_special = not bool(getattr(self.tokenizer, "chat_template", None))
        out: list[float] = []
        for s in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[s : s + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length, add_special_tokens=add_special).to(device)
            res = self.model(**enc)
            scores = res.score if getattr(res, "score", None) is not None else res.logits[:, self.label_index]
            out.extend(float(x) for x in scores.float().reshape(len(enc["input_ids"]), -1)[:, 0].cpu())
        return out


# --------------------------------------------------------------------------------------------------------
# Composite and registry
# --------------------------------------------------------------------------------------------------------


class CompositeReward:
    """Weighted sum of named rewards: total = sum_k weight_k * reward_k. `components`: {name: (reward, weight)}."""

    name = "composite"

    def __init__(self, components: dict):
        if not components:
            raise ValueError("CompositeReward needs at least one component")
        for key, val in components.items():
            if not (isinstance(val, tuple) and len(val) == 2 and hasattr(val[0], "score")):
                raise ValueError(f"component {key!r} must be a (reward, weight) tuple, got {val!r}")
            w = val[1]
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ValueError(f"component {key!r}: weight must be a finite number, got {w!r}")
        if "total" in components:
            raise ValueError("'total' is reserved for the weighted sum; rename that component")
        self.components = dict(components)

    def score_components(self, completions: list[str], examples: list[dict]) -> dict[str, list[float]]:
        _check_batch(completions, examples, self.name)
        out = {k: [float(x) for x in r.score(completions, examples)] for k, (r, _) in self.components.items()}
        out["total"] = [sum(self.components[k][1] * out[k][i] for k in self.components) for i in range(len(completions))]
        return out

    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        return self.score_components(completions, examples)["total"]


REWARDS = {
    "gsm8k": GSM8KCorrectness,
    "chrf": ChrF,
    "bleu": BLEU,
    "concepts": ConceptCoverage,
    "repetition": Repetition,
    "novelty": Novelty,
    "exact_match": ExactMatch,
    "distinct_valid": DistinctValid,
    "fluency": Fluency,
    "reward_model": RewardModelScorer,
}
# Constructor arguments that come from build_reward's own arguments, not from the YAML spec.
_INJECTED = {"fluency": {"model", "tokenizer"}, "reward_model": {"policy_device"}}
_ALIASES = {"reward_model": {"path": "model_or_path"}}


def group_components(reward) -> list[str]:
    """Names of the components of a reward (a CompositeReward, or an object wrapping one as `.reward`) whose value
    for a sample depends on the other samples of its prompt (`needs_group`, e.g. novelty)."""
    inner = getattr(reward, "reward", reward)
    comps = getattr(inner, "components", None)
    if comps is None:
        return [getattr(inner, "name", "reward")] if getattr(inner, "needs_group", False) else []
    return [k for k, (c, _) in comps.items() if getattr(c, "needs_group", False)]


def needs_group(reward) -> bool:
    return bool(group_components(reward))


def _valid_keys(name: str) -> list[str]:
    params = [p for p in inspect.signature(REWARDS[name].__init__).parameters if p != "self"]
    params = [p for p in params if p not in _INJECTED.get(name, set())]
    aliases = {v: k for k, v in _ALIASES.get(name, {}).items()}
    return ["weight"] + [aliases.get(p, p) for p in params]


def build_reward(spec: dict, model=None, tokenizer=None) -> CompositeReward:
    """Composite reward from a YAML-style dict {reward_name: {"weight": w, **constructor_kwargs}}.

    `model`/`tokenizer` are the scorer LM for "fluency" (normally the frozen base model); `model`'s device is where
    a reward_model goes unless its `device:` / `device_map:` say otherwise. A reward_model entry takes `path:` (a
    local dir or hub id) plus batch_size / max_length / label_index / device / device_map / dtype / revision /
    trust_remote_code (see RewardModelScorer).
    Unknown reward names or keys raise ValueError naming them and listing the valid ones.
    """
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"reward spec must be a non-empty mapping of reward name -> options, got {spec!r}; valid names: "
                         f"{sorted(REWARDS)}")
    unknown = [k for k in spec if k not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward name(s) {unknown}; valid: {sorted(REWARDS)}")
    comps = {}
    for name, opts in spec.items():
        opts = dict(opts or {})
        valid = _valid_keys(name)
        bad = [k for k in opts if k not in valid]
        if bad:
            raise ValueError(f"unknown key(s) {bad} for reward {name!r}; valid: {valid}")
        weight = opts.pop("weight", 1.0)
        for alias, real in _ALIASES.get(name, {}).items():
            if alias in opts:
                opts[real] = opts.pop(alias)
        if name == "fluency":
            opts.update(model=model, tokenizer=tokenizer)
        if name == "reward_model" and model is not None:  # its default place, and the CPU-placement warning
            opts["policy_device"] = next(model.parameters()).device
        if name == "reward_model" and "model_or_path" not in opts:
            raise ValueError("reward 'reward_model' needs 'path:' (local dir or hub id of a sequence-classification model)")
        comps[name] = (REWARDS[name](**opts), weight)
    return CompositeReward(comps)
