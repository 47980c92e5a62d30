"""Per-sample rewards used to rank samples for LPO (and to score them in evaluation).

Every reward is a small class with a `name` and a batched `score(completions, examples) -> list[float]`.
`examples[i]` is the task record of sample i; the fields a reward reads are:

    "answer"     GSM8K answer field (the gold number follows "#### ")      -> GSM8KCorrectness
    "reference"  reference translation                                     -> ChrF, BLEU
    "concepts"   list of words that must appear                            -> ConceptCoverage
    "prompt"     the prompt text                                           -> Fluency, RewardModelScorer

`CompositeReward` combines named components with weights; `build_reward` builds one from a YAML-style dict whose
keys name rewards and whose values are their options:

    build_reward({"gsm8k": {"weight": 1.0, "mode": "flexible"}, "repetition": {"weight": 0.2, "n": 3}})

A key is looked up in this order (`resolve_reward`):

1. a registered name: the built-ins above and anything decorated with `@register_reward("name")` (one registry,
   `REWARDS`; the built-ins are registered by the same function);
2. an import path `module:attribute` (`my_pkg.rewards:keyword_bonus`, `my_pkg.rewards:Scorer.create`);
3. an entry point of that name in the group `adaptive_decoder.rewards` (`importlib.metadata`), so an installed
   package can provide rewards by name without an import in the config.

What a key names may follow either convention:

* the library's: a class whose instances have `score(completions, examples)` (its options are passed to its
  constructor), or such an object itself (it takes no options);
* TRL's reward-function convention (`GRPOTrainer(reward_funcs=...)`): a function, or a callable class, called as
  `fn(completions=[...], prompts=[...], **columns)` where every other example field is passed as a keyword list
  (`answer=[...]`, `id=[...]`), returning one number per completion. `FunctionReward` adapts it; a function's
  options are passed on every call as extra fixed keywords (they replace an example field of the same name). TRL's
  `completion_ids` and `trainer_state` do not exist here and are not passed.

Two options (or attributes of the class / function) declare rather than configure a reward:
`needs_group: true` -- the value of a sample depends on the other samples of its prompt in the same call (e.g.
`Novelty`; see `group_components`): each call passes all the samples of a prompt, which the reward groups by the
example's "id" (or "prompt"), and the collection can score a sample among twins decoded like it
(`CollectionSettings.group_reward_twins`) instead of among the exploration pool;
`allow_nonfinite: true` -- NaN / inf scores are stored as they are and dropped when pairs are built (`pairs.py`),
as for a reward model that can overflow.

Every component's scores are checked where they are consumed, in `CompositeReward.score_components`, before the
collection or the evaluation writes anything: one number per completion, real numbers only, and finite unless
the reward allows otherwise; the error is one line naming the reward. The built-in rewards never return NaN, even
for an empty completion (each one documents the value it gives instead).
"""

from __future__ import annotations

import functools
import importlib
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
    allow_nonfinite = True  # a model may overflow in half precision: pairs.py drops such samples, counted

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
# Rewards of the TRL convention, and the check of every score
# --------------------------------------------------------------------------------------------------------


def _call_params(fn) -> tuple[list[str], bool, list[str]]:
    """(keyword-passable parameter names, whether it takes **kwargs, the names without default) of a callable;
    for a class, of its constructor. A callable without a signature (a C builtin) counts as taking **kwargs."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return [], True, []
    names, var_kw, required = [], False, []
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.append(p.name)
            if p.default is p.empty:
                required.append(p.name)
    return names, var_kw, required


# the keywords a reward function receives from the call itself, never from an option or an example field
_CALL_KEYWORDS = ("completions", "prompts")


class FunctionReward:
    """A reward function in TRL's convention (`GRPOTrainer(reward_funcs=...)`) as a reward with `name` and `score`.

    `score(completions, examples)` calls `fn(completions=completions, prompts=[e["prompt"] ...], **columns,
    **fixed)`: every example field other than "prompt" becomes one keyword list aligned with the completions
    (None where an example lacks the field), the layout in which TRL passes a dataset's columns. A function with
    **kwargs receives every field, as in TRL; one without receives only those it names, and a parameter without
    a default that no field or option provides is an error naming the reward and the field, raised before the
    call. `fixed` (the spec's options) is passed on every call and replaces an example field of the same name.
    `needs_group` / `allow_nonfinite` are the function's attributes of that name, False when absent (the module
    docstring says what they declare). The returned list is checked by `CompositeReward.score_components`; TRL's
    None for "not applicable" is refused there, since a spec applies its rewards to every sample of its task.
    """

    def __init__(self, fn, name: str | None = None, **fixed):
        if not callable(fn):
            raise TypeError(f"reward {name!r}: {fn!r:.80} is not callable")
        self.fn, self.fixed = fn, fixed
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.needs_group = bool(getattr(fn, "needs_group", False))
        self.allow_nonfinite = bool(getattr(fn, "allow_nonfinite", False))
        params, self._var_kw, self._required = _call_params(fn)
        self._params = set(params)
        if "completions" not in self._params and not self._var_kw:
            raise TypeError(f"reward {self.name!r} takes no 'completions' argument; a reward function is called as "
                            "fn(completions=[...], prompts=[...], **example_fields)")
        bad = sorted(set(fixed) & set(_CALL_KEYWORDS)) or ([] if self._var_kw else sorted(set(fixed) - self._params))
        if bad:
            raise ValueError(f"unknown key(s) {bad} for reward {self.name!r}; valid: "
                             f"{sorted(self._params - set(_CALL_KEYWORDS))}")

    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        _check_batch(completions, examples, self.name)
        fields = list(dict.fromkeys(k for e in examples for k in e))
        kwargs = {k: [e.get(k) for e in examples] for k in fields if k not in ("prompt", *_CALL_KEYWORDS)}
        kwargs["prompts"] = [e.get("prompt") for e in examples]
        kwargs.update(self.fixed)
        if not self._var_kw:
            kwargs = {k: v for k, v in kwargs.items() if k in self._params}
        missing = [p for p in self._required if p != "completions" and p not in kwargs]
        if missing:
            raise ValueError(f"reward {self.name!r} needs the field {missing[0]!r} in every example; got fields {fields}")
        return self.fn(completions=list(completions), **kwargs)


def checked_scores(name: str, reward, values, n: int) -> list[float]:
    """`values` (what reward `name` returned for n completions) as n floats, or a one-line error naming the reward:
    TypeError for something that is not a list or holds a non-number (None, a string), ValueError for another
    length or for NaN / inf (unless the reward declares `allow_nonfinite`)."""
    try:
        if isinstance(values, (str, bytes, dict)):
            raise TypeError  # iterable, but never a list of scores
        vals = list(values)
    except TypeError:
        raise TypeError(f"reward {name!r} returned {type(values).__name__}, not a list of {n} numbers (one per "
                        "completion)") from None
    if len(vals) != n:
        raise ValueError(f"reward {name!r} returned {len(vals)} scores for {n} completions; it must return one number "
                         "per completion")
    allow = bool(getattr(reward, "allow_nonfinite", False))
    out = []
    for i, x in enumerate(vals):
        try:
            if x is None or isinstance(x, (str, bytes)):
                raise TypeError
            f = float(x)
        except (TypeError, ValueError):
            raise TypeError(f"reward {name!r} returned a non-number at index {i}: {x!r:.60} ({type(x).__name__}); it "
                            "must return one float per completion") from None
        if not math.isfinite(f) and not allow:
            raise ValueError(f"reward {name!r} returned {f} at index {i}; scores must be finite (or declare "
                             "allow_nonfinite: true to keep them and leave those samples out of the pairs)")
        out.append(f)
    return out


# --------------------------------------------------------------------------------------------------------
# Composite
# --------------------------------------------------------------------------------------------------------


class CompositeReward:
    """Weighted sum of named rewards: total = sum_k weight_k * reward_k. `components`: {name: (reward, weight)}.

    `score_components` is where every reward's scores are consumed (the collection, the evaluation and the HAG
    search all score through it), so it checks each component's list (`checked_scores`) before any total exists:
    a broken reward stops the batch before the caller writes it."""

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
        n = len(completions)
        out = {k: checked_scores(k, r, r.score(completions, examples), n) for k, (r, _) in self.components.items()}
        out["total"] = [sum(self.components[k][1] * out[k][i] for k in self.components) for i in range(n)]
        return out

    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        return self.score_components(completions, examples)["total"]


# --------------------------------------------------------------------------------------------------------
# Registry: registered names, import paths, entry points
# --------------------------------------------------------------------------------------------------------

ENTRY_POINT_GROUP = "adaptive_decoder.rewards"
# spec options that declare what a reward is (see the module docstring), accepted by every reward
FLAG_OPTIONS = ("needs_group", "allow_nonfinite")
REWARDS: dict = {}  # name -> reward class, reward function or reward object
# Constructor arguments that come from build_reward's own arguments, not from the YAML spec.
_INJECTED = {"fluency": {"model", "tokenizer"}, "reward_model": {"policy_device"}}
_ALIASES = {"reward_model": {"path": "model_or_path"}}


def _qualname(obj) -> str:
    target = obj if hasattr(obj, "__qualname__") else type(obj)
    return f"{getattr(target, '__module__', '?')}.{target.__qualname__}"


def register_reward(name: str):
    """Decorator registering a reward class, reward function or reward object under `name`, so that a reward spec
    can name it (`@register_reward("keyword_bonus")` above `def keyword_bonus(completions, **kwargs)`).

    The registry is `REWARDS`, which also holds the built-ins. Registering the same object again (a module
    imported twice) is a no-op; another object under a taken name is an error, so a plugin cannot silently
    replace a built-in. Names never contain ':', which marks an import path."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"reward name must be a non-empty string without ':' (':' marks an import path), got {name!r}")

    def deco(obj):
        old = REWARDS.get(name)
        if old is not None and _qualname(old) != _qualname(obj):
            raise ValueError(f"reward name {name!r} is already registered to {_qualname(old)}; register "
                             f"{_qualname(obj)} under another name")
        REWARDS[name] = obj
        return obj

    return deco


for _builtin in (GSM8KCorrectness, ChrF, BLEU, ConceptCoverage, Repetition, Novelty, ExactMatch, DistinctValid, Fluency,
                 RewardModelScorer):
    register_reward(_builtin.name)(_builtin)


def _entry_points() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_rewards() -> list[str]:
    """Every reward name a spec accepts without an import path: registered names and installed entry points."""
    return sorted(set(REWARDS) | set(_entry_points()))


def _unknown(name) -> str:
    return f"unknown reward {name!r}; valid: {available_rewards()} (or an import path 'module:attribute')"


def _import_path(path: str):
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"reward {path!r}: an import path is 'module:attribute', e.g. my_pkg.rewards:keyword_bonus")
    try:
        obj = importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise ValueError(f"reward {path!r}: cannot import {module!r} ({e}); install it or add its directory to "
                         "PYTHONPATH") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"reward {path!r}: module {module!r} has no attribute {attr!r}; check the name after ':'")
        obj = getattr(obj, part)
    return obj


def resolve_reward(name: str):
    """The class, function or object a reward spec key names: a registered name, else an import path
    'module:attribute', else an entry point of group `adaptive_decoder.rewards` (loaded on first use). Raises a
    one-line ValueError (unknown name, missing module or attribute) or TypeError (not callable) naming the key."""
    if not isinstance(name, str):
        raise ValueError(f"reward names must be strings, got {name!r}")
    if name in REWARDS:
        obj = REWARDS[name]
    elif ":" in name:
        obj = _import_path(name)
    else:
        eps = _entry_points()
        if name not in eps:
            raise ValueError(_unknown(name))
        try:
            obj = eps[name].load()
        except (ImportError, AttributeError) as e:
            raise ValueError(f"reward {name!r}: its entry point {eps[name].value!r} (group {ENTRY_POINT_GROUP}) does not "
                             f"load: {e}") from None
    if not (isinstance(obj, type) or hasattr(obj, "score") or callable(obj)):
        raise TypeError(f"reward {name!r}: {type(obj).__name__} {obj!r:.60} is not callable; name a reward class, a "
                        "reward function or an object with score(completions, examples)")
    return obj


def _option_keys(name: str, obj) -> list[str] | None:
    if not isinstance(obj, type) and hasattr(obj, "score"):
        return ["weight", *FLAG_OPTIONS]  # a ready object: nothing to construct
    params, var_kw, _ = _call_params(obj)
    if var_kw:
        return None
    params = [p for p in params if p not in _INJECTED.get(name, set()) and p not in _CALL_KEYWORDS]
    aliases = {v: k for k, v in _ALIASES.get(name, {}).items()}
    return ["weight"] + [aliases.get(p, p) for p in params] + list(FLAG_OPTIONS)


def reward_options(name: str) -> list[str] | None:
    """The option keys the spec entry of reward `name` accepts: weight, the class's constructor arguments or the
    function's parameters, and the FLAG_OPTIONS; None when it takes **kwargs (any key)."""
    return _option_keys(name, resolve_reward(name))


def spec_needs_group(name: str, opts: dict | None) -> bool:
    """Whether the spec entry `name: opts` compares the samples of a prompt (`needs_group`), without building it:
    the option when given, else the class's or function's attribute."""
    opts = opts or {}
    if "needs_group" in opts:
        return bool(opts["needs_group"])
    return bool(getattr(resolve_reward(name), "needs_group", False))


def _instantiate(name: str, obj, opts: dict):
    flags = {k: opts.pop(k) for k in FLAG_OPTIONS if k in opts}
    for k, v in flags.items():
        if not isinstance(v, bool):
            raise ValueError(f"reward {name!r}: {k} must be true or false, got {v!r}")
    if isinstance(obj, type):
        reward = obj(**opts)
        if not hasattr(reward, "score"):
            if not callable(reward):
                raise TypeError(f"reward {name!r}: {_qualname(obj)} instances have neither score(completions, "
                                "examples) nor __call__")
            reward = FunctionReward(reward, name)  # a callable class of the TRL convention
    elif hasattr(obj, "score"):
        reward = obj
    else:
        reward = FunctionReward(obj, name, **opts)
    for k, v in flags.items():
        setattr(reward, k, v)
    return reward


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


def check_reward_spec(spec) -> dict:
    """Validate a reward spec without building it: every key resolves (`resolve_reward`: unknown names are listed
    with the valid ones, a key that does not import names what is missing) and every option is one its reward
    takes. Returns {key: the resolved object}. `build_reward` runs it first; a config that carries a spec (a
    task's `reward:` option) runs it on load, so a typo stops the run before its first stage."""
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"reward spec must be a non-empty mapping of reward name -> options, got {spec!r}; valid names: "
                         f"{available_rewards()}")
    unknown = [k for k in spec if not (isinstance(k, str) and (k in REWARDS or ":" in k))]
    if unknown:
        eps = _entry_points()
        unknown = [k for k in unknown if k not in eps]
    if unknown:
        raise ValueError(f"unknown reward name(s) {unknown}; valid: {available_rewards()} (or an import path "
                         "'module:attribute')")
    objs = {}
    for name, opts in spec.items():
        if opts is not None and not isinstance(opts, dict):
            raise ValueError(f"reward {name!r}: options must be a mapping, got {opts!r}")
        objs[name] = obj = resolve_reward(name)
        valid = _option_keys(name, obj)
        bad = [k for k in (opts or {}) if valid is not None and k not in valid]
        if bad:
            raise ValueError(f"unknown key(s) {bad} for reward {name!r}; valid: {valid}")
    return objs


def build_reward(spec: dict, model=None, tokenizer=None) -> CompositeReward:
    """Composite reward from a YAML-style dict {reward: {"weight": w, **options}}; each key is resolved by
    `resolve_reward` (a registered name, an import path 'module:attribute' or an entry point).

    Options go to a class's constructor, or to a plain function as fixed keywords of every call (`FunctionReward`);
    `needs_group` / `allow_nonfinite` set those attributes on the built reward. `model`/`tokenizer` are the scorer
    LM for "fluency" (normally the frozen base model); `model`'s device is where a reward_model goes unless its
    `device:` / `device_map:` say otherwise. A reward_model entry takes `path:` (a local dir or hub id) plus
    batch_size / max_length / label_index / device / device_map / dtype / revision / trust_remote_code (see
    RewardModelScorer). Unknown reward names or keys raise ValueError naming them and listing the valid ones; a key
    that does not import raises naming the key and what is missing.
    """
    objs = check_reward_spec(spec)
    comps = {}
    for name, opts in spec.items():
        obj, opts = objs[name], dict(opts or {})
        weight = opts.pop("weight", 1.0)
        for alias, real in _ALIASES.get(name, {}).items():
            if alias in opts:
                opts[real] = opts.pop(alias)
        opts.update({k: v for k, v in (("model", model), ("tokenizer", tokenizer)) if k in _INJECTED.get(name, ())})
        if name == "reward_model" and model is not None:  # its default place, and the CPU-placement warning
            opts["policy_device"] = next(model.parameters()).device
        if name == "reward_model" and "model_or_path" not in opts:
            raise ValueError("reward 'reward_model' needs 'path:' (local dir or hub id of a sequence-classification model)")
        comps[name] = (_instantiate(name, obj, opts), weight)
    return CompositeReward(comps)
