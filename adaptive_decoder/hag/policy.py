"""HAG (Hyperparameter Aware Generation, arXiv 2402.11251): the LM writes its own decoding config, then answers.

Stage 1: the config model reads a prompt built by `build_config_prompt` and, decoding greedily, writes one line
in the config text format below. Stage 2: the answer is generated with the parsed config through
`AdaptiveDecodingModel.generate(force=...)` (per-row lists; the same sampling code path as every other method).

Config text format (one line; keys in any order, any spacing, `=` or `:`; case-insensitive; `top-p`/`top p`
accepted for `top_p`; a trailing sentence after the config is ignored):

    temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.1

Valid ranges (`RANGES`): temperature [0, 2] (0 = greedy), top_p (0, 1], top_k an integer in [0, 1000]
(0 = off), repetition_penalty [1, 2] (1 = off). A value is a whole token in plain ASCII decimal notation
("0.7", ".9", "1e-3"; for top_k an integral one): "1_000", "0.7abc", "1,5", "1.1.1", ".9." or full-width
digits are not numbers, never cut to a valid-looking prefix (a period followed by a space ends a sentence, not
the number). The parser never raises: a key that is missing, not a number or out of range takes the
configured default value and is counted (`ParseResult.problems`, `ParseStats`). Status:
"ok" (all four keys valid), "partial" (some valid), "failed" (none valid: the whole default config is used).
`parse_failed` (what evaluation reports) is True unless the status is "ok".

Trained vs untrained: a HAG model fine-tuned by `training/train_hag.py` sees the short `TRAINED_TEMPLATE`; the
untrained mode (the paper's "is the model aware of decoding hyperparameters at all?") prompts the base model
with `UNTRAINED_TEMPLATE`, which explains each hyperparameter and the expected line.
Stage 2 always answers with the evaluated (base) model passed to `generate`, so a trained HAG differs from the
base model only in the config it picks; the tuned weights are used for stage 1 only.

Methods (`adaptive_decoder.methods.base.build_policies`): "hag" -> HAGPolicy(**options), "hag_untrained" ->
HAGPolicy(untrained=True, **options).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..methods.base import DecodingPolicy, forced_generate, register_policy
from ..modeling.sampling import NEUTRAL

KEYS = ("temperature", "top_p", "top_k", "repetition_penalty")
# (low, high, low_inclusive): every parsed value lies in its range; top_k must also be an integer
RANGES = {"temperature": (0.0, 2.0, True), "top_p": (0.0, 1.0, False), "top_k": (0, 1000, True),
          "repetition_penalty": (1.0, 2.0, True)}
# what a config text that gives no valid value for a key decodes with: the neutral value (no change to the LM)
DEFAULT_CONFIG = {k: NEUTRAL[k] for k in KEYS}

TRAINED_TEMPLATE = ("Choose the decoding hyperparameters for answering the request below. Reply with one line: "
                    "temperature=<t>, top_p=<p>, top_k=<k>, repetition_penalty=<r>\n\nRequest:\n{prompt}")
UNTRAINED_TEMPLATE = (
    "You will answer the request below later. First, choose the decoding hyperparameters that will give the best "
    "answer to it.\n"
    "- temperature (0 to 2): 0 is deterministic, higher is more random and creative.\n"
    "- top_p (0 to 1): sample only from the most likely tokens covering this probability; 1 means no limit.\n"
    "- top_k (integer, 0 to 1000): sample only from the k most likely tokens; 0 means no limit.\n"
    "- repetition_penalty (1 to 2): higher discourages repeating words; 1 means none.\n"
    "Reply with exactly one line in this format and nothing else:\n"
    "temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.1\n\n"
    "Request:\n{prompt}")

# A number is a whole token in plain ASCII decimal notation ("0.7", ".9", "1e-3", "-3", "nan"/"inf": the last
# two are numbers here and then out of range). re.ASCII: Python's \d would also match "４０", which float()
# accepts. Anything else in the token ("1_000", "0.7abc", "1.1.1", "2e-9990.2") makes it not a number, rather
# than letting a prefix through. top_k reads the same grammar and must then be integral ("2.5" is out of range).
_NUMBER = re.compile(r"[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|nan|inf(?:inity)?)",
                     re.IGNORECASE | re.ASCII)
_KEY_PATTERNS = {
    "temperature": r"temp(?:erature)?",
    "top_p": r"top[\s_\-]?p",
    "top_k": r"top[\s_\-]?k",
    "repetition_penalty": r"rep(?:etition)?[\s_\-]?penalty",
}
# The value token runs to a delimiter: whitespace, ";", a quote, a bracket, a comma (pairs are comma-separated)
# or a period followed by whitespace (a sentence end: "repetition_penalty=1.1. Sure!"). A comma between digits
# ("1,5": a decimal comma) and a period not followed by whitespace (".9.", "1.1.1") stay in the token, so such a
# token is "not_a_number" instead of being cut to a valid-looking prefix.
_PAIR = re.compile(r"(?<![a-z_])(" + "|".join(f"(?P<{k}>{p})" for k, p in _KEY_PATTERNS.items()) + r")"
                   r"[\"']?\s*[=:]\s*[\"']?(?P<value>(?:[^\s,;\"'()\[\]{}.]|,(?=[0-9])|\.(?!\s))*)", re.IGNORECASE)


def validate_config(config: dict, where: str = "config") -> dict:
    """Check a config dict against `RANGES` (all four keys, right types); returns it normalised. Raises ValueError."""
    unknown = sorted(set(config) - set(KEYS))
    missing = [k for k in KEYS if k not in config]
    if unknown or missing:
        raise ValueError(f"{where}: needs exactly the keys {list(KEYS)}; unknown {unknown}, missing {missing}")
    out = {}
    for k in KEYS:
        v, problem = _check_value(k, config[k])
        if problem:
            raise ValueError(f"{where}: {k}={config[k]!r} is {problem.replace('_', ' ')}; valid: {describe_range(k)}")
        out[k] = v
    return out


def describe_range(key: str) -> str:
    lo, hi, lo_incl = RANGES[key]
    kind = "integer " if key == "top_k" else ""
    return f"{kind}{'[' if lo_incl else '('}{lo}, {hi}]"


def _check_value(key: str, value) -> tuple[object, str | None]:
    """(normalised value, None) or (None, problem) where problem is 'not_a_number' or 'out_of_range'."""
    if isinstance(value, bool):
        return None, "not_a_number"
    if isinstance(value, str):
        # float() alone is far too lenient ("1_000", " 40 ", "４０"): the token must be exactly a number
        if not _NUMBER.fullmatch(value):
            return None, "not_a_number"
        mantissa = re.split(r"[eE]", value)[0]
        if float(value) == 0.0 and re.search("[1-9]", mantissa):
            return None, "out_of_range"  # "2e-9990" underflows to 0.0: a non-zero temperature must not turn greedy
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        return None, "not_a_number"
    lo, hi, lo_incl = RANGES[key]
    if not math.isfinite(x) or x > hi or x < lo or (x == lo and not lo_incl):
        return None, "out_of_range"
    if key == "top_k":
        if x != int(x):
            return None, "out_of_range"  # a fractional k is not a valid top_k
        return int(x), None
    return x + 0.0, None  # + 0.0 turns -0.0 into 0.0


def format_config(config: dict) -> str:
    """The canonical config line (what the search writes as SFT targets). Validates first."""
    c = validate_config(config)
    return ", ".join(f"{k}={_fmt(c[k])}" for k in KEYS)


def _fmt(v) -> str:
    return str(v) if isinstance(v, int) else f"{v:.6g}"  # 6 significant digits: never rounds into a bad value


@dataclass
class ParseResult:
    config: dict                  # always complete and in range (defaults filled in)
    status: str                   # "ok" | "partial" | "failed"
    problems: dict = field(default_factory=dict)   # key -> "missing" | "not_a_number" | "out_of_range"
    text: str = ""                # the line that was parsed

    @property
    def failed(self) -> bool:
        return self.status != "ok"


def parse_config(text, default: dict | None = None) -> ParseResult:
    """Parse a config line written by the model; never raises, never returns an out-of-range value.

    Only the first non-empty line counts (a model that keeps talking after the config is not penalised, and a
    number in its later prose is not mistaken for a config value). The first occurrence of each key wins.
    """
    default = validate_config(dict(DEFAULT_CONFIG if default is None else default), "default config")
    if not isinstance(text, str):
        text = ""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    found: dict = {}
    for m in _PAIR.finditer(line):
        key = next(k for k in KEYS if m.group(k) is not None)
        if key not in found:
            found[key] = m.group("value")
    config, problems = {}, {}
    for k in KEYS:
        if k not in found:
            problems[k] = "missing"
            config[k] = default[k]
            continue
        v, problem = _check_value(k, found[k])
        if problem:
            problems[k] = problem
            config[k] = default[k]
        else:
            config[k] = v
    status = "ok" if not problems else ("failed" if len(problems) == len(KEYS) else "partial")
    return ParseResult(config=config, status=status, problems=problems, text=line)


class ParseStats:
    """Counts of parse outcomes (the parse-failure rate is a reported metric)."""

    def __init__(self):
        self.status = Counter()
        self.problems = Counter()   # "key:problem" -> count

    def update(self, result: ParseResult) -> ParseResult:
        self.status[result.status] += 1
        for k, p in result.problems.items():
            self.problems[f"{k}:{p}"] += 1
        return result

    @property
    def total(self) -> int:
        return sum(self.status.values())

    @property
    def failure_rate(self) -> float | None:
        """Share of configs that were not fully valid (status partial or failed); None before any parse."""
        return (self.total - self.status["ok"]) / self.total if self.total else None

    def to_dict(self) -> dict:
        return {"total": self.total, "ok": self.status["ok"], "partial": self.status["partial"],
                "failed": self.status["failed"], "failure_rate": self.failure_rate,
                "problems": dict(sorted(self.problems.items()))}


def build_config_prompt(prompt: str, mode: str = "trained", template: str | None = None) -> str:
    """The stage-1 user message: the HAG instruction around the task prompt (the chat template is applied later)."""
    if template is None:
        if mode not in ("trained", "untrained"):
            raise ValueError(f"HAG prompt mode must be 'trained' or 'untrained', got {mode!r}")
        template = TRAINED_TEMPLATE if mode == "trained" else UNTRAINED_TEMPLATE
    if "{prompt}" not in template:
        raise ValueError("a HAG prompt template needs a {prompt} placeholder")
    return template.replace("{prompt}", prompt)


def sft_example(prompt: str, config: dict, template: str | None = None, **meta) -> dict:
    """One SFT record in TRL's conversational prompt-completion format (the loss covers the config line only)."""
    return {"prompt": [{"role": "user", "content": build_config_prompt(prompt, "trained", template)}],
            "completion": [{"role": "assistant", "content": format_config(config)}], **meta}


def _config_line_done(text: str) -> bool:
    """The config line is done once a newline follows some non-space text."""
    return text.lstrip().find("\n") > 0


def load_config_model(model_path: str, base_model: str | None = None, dtype=torch.float32, device=None):
    """A HAG config model saved by training/train_hag.py: a merged model directory, or a PEFT LoRA adapter
    directory (adapter_config.json), which is loaded onto `base_model` (default: the base recorded by the
    recipe in hag_training.json, with the revision and trust_remote_code it trained on, else the adapter's own
    base_model_name_or_path) and merged. The base loads unquantized even when the adapter trained on a 4/8-bit
    one (QLoRA): the merge needs float weights."""
    import json

    from ..modeling.models import load_base_model, prepare_tokenizer

    path = Path(model_path)
    if not path.exists():
        raise FileNotFoundError(f"HAG model {path} does not exist (a directory saved by training/train_hag.py)")
    if not (path / "adapter_config.json").exists():
        return load_base_model(str(path), dtype=dtype, device=device)
    from peft import PeftModel

    load = {}
    if base_model is None:
        meta = path / "hag_training.json"
        if meta.exists():
            meta = json.loads(meta.read_text())
            base_model, args = meta.get("base_model"), meta.get("args") or {}
            load = {"revision": args.get("model_revision"), "trust_remote_code": bool(args.get("trust_remote_code"))}
        if base_model is None:
            base_model = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base_model:
        raise ValueError(f"{path} is a LoRA adapter but its base model is unknown: pass base_model=")
    model, tok = load_base_model(base_model, dtype=dtype, device=device, **load)
    model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    model.eval().requires_grad_(False)
    if (path / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        tok = prepare_tokenizer(AutoTokenizer.from_pretrained(str(path)), model)
    return model, tok


class HAGPolicy(DecodingPolicy):
    """Two-stage HAG decoding: greedy config line from the config model, then the answer with that config.

    model_path: a HAG model saved by training/train_hag.py (merged dir or LoRA adapter); or pass `model=`
    (and `tokenizer=`) directly. untrained=True: the evaluated base model itself writes the config, prompted
    with UNTRAINED_TEMPLATE. default: the config used for keys that fail to parse (counted in `stats`).
    """

    role = "hag"

    def __init__(self, model_path: str | None = None, untrained: bool = False, model=None, tokenizer=None,
                 base_model: str | None = None, default: dict | None = None, template: str | None = None,
                 max_config_tokens: int = 48, name: str | None = None):
        if untrained and (model_path is not None or model is not None):
            raise ValueError("untrained HAG uses the evaluated model itself; do not pass model_path= or model=")
        if not untrained and (model_path is None) == (model is None):
            raise ValueError("HAG needs exactly one of model_path= (a directory saved by training/train_hag.py) or "
                             "model=; or untrained=True to prompt the base model")
        if max_config_tokens < 1:
            raise ValueError(f"max_config_tokens must be >= 1, got {max_config_tokens}")
        self.untrained, self.model_path, self.base_model = untrained, model_path, base_model
        self.default = validate_config(dict(DEFAULT_CONFIG if default is None else default), "HAG default config")
        self.mode = "untrained" if untrained else "trained"
        self.template = template
        build_config_prompt("x", self.mode, template)  # fail fast on a bad template
        self.max_config_tokens = int(max_config_tokens)
        self.name = name or ("hag_untrained" if untrained else "hag")
        self._model, self._tokenizer = model, tokenizer
        if model is not None and tokenizer is None:
            raise ValueError("HAGPolicy(model=...) also needs tokenizer=")
        self.stats = ParseStats()

    def _config_adm(self, adm):
        from ..modeling.generation import AdaptiveDecodingModel

        if self.untrained:  # the config line is greedy: the HF model writes it whatever backend samples the answers
            return AdaptiveDecodingModel(adm.model, adm.tokenizer)
        if self._model is None:
            device = next(adm.model.parameters()).device
            self._model, self._tokenizer = load_config_model(self.model_path, self.base_model, device=device)
        return AdaptiveDecodingModel(self._model, self._tokenizer)

    def propose(self, adm, prompts: list, chat: bool | None = None) -> list:
        """Stage 1 for a batch: (config line text, ParseResult) per prompt. Greedy, so no RNG matters."""
        cadm = self._config_adm(adm)
        queries = [build_config_prompt(p, self.mode, self.template) for p in prompts]
        from ..modeling.models import encode_prompts, model_max_length

        limit = model_max_length(cadm.model, cadm.tokenizer)
        enc = encode_prompts(cadm.tokenizer, queries, chat=chat,
                             max_length=None if limit is None else limit - self.max_config_tokens)
        enc = enc.to(next(cadm.model.parameters()).device)
        out = cadm.generate(enc["input_ids"], enc["attention_mask"], max_new_tokens=self.max_config_tokens,
                            force={"temperature": 0.0}, stop_when=_config_line_done)
        texts = out.texts if out.texts is not None else cadm.tokenizer.batch_decode(out.completion_ids,
                                                                                    skip_special_tokens=True)
        return [(t, self.stats.update(parse_config(t, self.default))) for t in texts]

    def generate(self, adm, prompts, *, num_samples, max_new_tokens, seed, chat=None, stop_when=None):
        proposals = self.propose(adm, list(prompts), chat=chat)
        configs = [r.config for _, r in proposals]
        extra = [{"config_text": t, "parse_failed": r.failed, "parse_status": r.status, "parse_problems": r.problems,
                  "config": r.config} for t, r in proposals]
        return forced_generate(adm, prompts, configs, num_samples=num_samples, max_new_tokens=max_new_tokens,
                               seed=seed, chat=chat, extra=extra, stop_when=stop_when)

    def describe(self):
        return {**super().describe(), "mode": self.mode, "model_path": self.model_path, "default": self.default,
                "max_config_tokens": self.max_config_tokens, "parse_stats": self.stats.to_dict()}


@register_policy("hag", policy=HAGPolicy)
def _hag(**options) -> list:
    return [HAGPolicy(**options)]


@register_policy("hag_untrained", policy=HAGPolicy)
def _hag_untrained(**options) -> list:
    return [HAGPolicy(untrained=True, **options)]
