"""Task base class: where the prompts come from, how a prompt is built, and how samples are scored.

A task turns source records into *examples*: dicts with at least "id" (stable across runs: the source line / row
number), "prompt" (the user message; the chat template is applied later by `encode_prompts`) and the fields its
rewards read ("answer", "reference", "concepts"; see `adaptive_decoder.rewards`).

Scoring: every task has a scalar per-sample **reward** (what methods are compared on; the weighted sum of a
`build_reward` spec, overridable with `reward=`) plus per-sample metrics and per-prompt metrics (diversity over
the k samples of the prompt). `summarize` turns a list of scored units into task-level metrics.
"""

from __future__ import annotations

import logging
import math
import random

from ..rewards import build_reward
from .io import BUILTIN_DIR, load_hf_dataset, read_jsonl

logger = logging.getLogger(__name__)


class Task:
    name: str = ""
    expected: str = ""           # the record format, for error messages
    builtin: str | None = None   # default file in adaptive_decoder/tasks/data/
    default_reward: dict = {}    # build_reward spec of the comparison reward
    metric_spec: dict = {}       # build_reward components always reported as per-sample metrics
    options: dict = {}           # task-specific options and their defaults
    diversity: bool = False      # report self-BLEU / distinct-n across the k samples of a prompt

    def __init__(self, path: str | None = None, hf_id: str | None = None, hf_split: str = "test",
                 hf_config: str | None = None, reward: dict | None = None, on_bad_line: str = "fail",
                 max_new_tokens: int | None = None, **options):
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = sorted(["path", "hf_id", "hf_split", "hf_config", "reward", "on_bad_line", "max_new_tokens", *self.options])
            raise ValueError(f"unknown option(s) {unknown} for task {self.name!r}; valid: {valid}")
        if path is not None and hf_id is not None:
            raise ValueError(f"task {self.name!r}: give either path= or hf_id=, not both")
        self.path, self.hf_id, self.hf_split, self.hf_config = path, hf_id, hf_split, hf_config
        self.on_bad_line = on_bad_line
        if max_new_tokens is not None and int(max_new_tokens) < 1:
            raise ValueError(f"task {self.name!r}: max_new_tokens must be >= 1, got {max_new_tokens}")
        # generation length this task needs (e.g. GSM8K reasoning vs a one-line translation); None = the run's default
        self.max_new_tokens = None if max_new_tokens is None else int(max_new_tokens)
        self.opts = {**self.options, **options}
        self.reward_spec = dict(reward) if reward else self._default_reward()
        self._examples = None
        self._scorer = None

    # --- data -------------------------------------------------------------------------------------------
    @property
    def source(self) -> str:
        if self.hf_id:
            return f"hf:{self.hf_id}" + (f"/{self.hf_config}" if self.hf_config else "") + f"[{self.hf_split}]"
        return str(self.path or BUILTIN_DIR / self.builtin)

    def _raw_records(self) -> list[tuple[int, dict]]:
        if self.hf_id:
            rows = load_hf_dataset(self.hf_id, self.hf_split, self.hf_config)
            out = []
            for i, r in rows:
                try:
                    self.to_examples(r, i)
                except ValueError as e:
                    if self.on_bad_line == "fail":
                        raise ValueError(f"{self.source} row {i}: malformed record ({e}); expected {self.expected}") from None
                    logger.warning("skipping %s row %d: %s", self.source, i, e)
                    continue
                out.append((i, r))
            return out
        return read_jsonl(self.path or BUILTIN_DIR / self.builtin, expected=self.expected,
                          on_bad_line=self.on_bad_line, validate=lambda r: self.to_examples(r, 0))

    def to_examples(self, record: dict, index: int) -> list[dict]:
        """Examples made from one source record (usually one; EQ-Bench prompts expand into seed variants).
        Raise ValueError for a malformed record."""
        raise NotImplementedError

    def examples(self) -> list[dict]:
        if self._examples is None:
            self._examples = [ex for i, rec in self._raw_records() for ex in self.to_examples(rec, i)]
        return self._examples

    def split(self, n_test: int | None, n_dev: int = 0, seed: int = 0) -> tuple[list[dict], list[dict]]:
        """Deterministic disjoint (test, dev) subsets: shuffle with `seed`, test = first n_test, dev = next n_dev.
        n_test=None takes every example not used by dev."""
        exs = self.examples()
        order = list(range(len(exs)))
        random.Random(f"{self.name}:{seed}").shuffle(order)
        n_test = len(exs) - n_dev if n_test is None else n_test
        if n_test < 1 or n_dev < 0 or n_test + n_dev > len(exs):
            raise ValueError(f"task {self.name!r}: asked for {n_test} test + {n_dev} dev prompts but {self.source} "
                             f"has {len(exs)} examples")
        return [exs[i] for i in order[:n_test]], [exs[i] for i in order[n_test:n_test + n_dev]]

    # --- scoring ----------------------------------------------------------------------------------------
    def _default_reward(self) -> dict:
        return dict(self.default_reward)

    def postprocess(self, text: str) -> str:
        """The part of a completion that is scored (an explicit filter, lm-eval style); identity by default."""
        return text

    def setup_scoring(self, model=None, tokenizer=None):
        """Build the reward components once. `model`/`tokenizer` are the scorer LM for fluency (the base model)."""
        spec = {k: dict(v or {}) for k, v in self.metric_spec.items()}
        if model is None:
            spec.pop("fluency", None)
            if "fluency" in self.reward_spec:
                raise ValueError(f"task {self.name!r}: the reward uses 'fluency', which needs the scorer model")
        for k, v in self.reward_spec.items():
            spec[k] = dict(v or {})
        for v in spec.values():
            v.pop("weight", None)
        self._scorer = build_reward(spec, model=model, tokenizer=tokenizer) if spec else None
        self._weights = {k: float((v or {}).get("weight", 1.0)) for k, v in self.reward_spec.items()}
        return self

    def extra_sample_metrics(self, text: str, example: dict) -> dict:
        return {}

    def score(self, texts: list[str], example: dict) -> tuple[list[dict], dict]:
        """Score the k samples of one prompt: (per-sample metric dicts, each with "reward"; per-prompt metrics)."""
        if self._scorer is None and self.reward_spec:
            self.setup_scoring()
        scored = [self.postprocess(t or "") for t in texts]
        comps = self._scorer.score_components(scored, [example] * len(scored)) if self._scorer else {}
        comps.pop("total", None)
        samples = []
        for i, t in enumerate(scored):
            m = {k: float(v[i]) for k, v in comps.items()}
            m.update(self.extra_sample_metrics(t, example))
            m["reward"] = sum(w * m[k] for k, w in self._weights.items())
            samples.append(m)
        prompt_metrics = {}
        if self.diversity:
            from .metrics import diversity

            prompt_metrics.update(diversity(scored))
        return samples, prompt_metrics

    def summarize(self, units: list[dict]) -> dict:
        """Task-level metrics of one method: mean of every per-sample metric over all samples, mean of every
        per-prompt metric over prompts (None values, e.g. self-BLEU with k=1, are left out)."""
        out = {}
        sample_keys = sorted({k for u in units for s in u["samples"] for k in s["metrics"]})
        for k in sample_keys:
            vals = [s["metrics"][k] for u in units for s in u["samples"] if s["metrics"].get(k) is not None]
            out[k] = _mean(vals)
        for k in sorted({k for u in units for k in u.get("prompt_metrics", {})}):
            out[k] = _mean([u["prompt_metrics"][k] for u in units if u["prompt_metrics"].get(k) is not None])
        return out


def _mean(vals):
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def require(record: dict, key: str, kind=str):
    if key not in record:
        raise ValueError(f"missing field {key!r} (has {sorted(record)})")
    v = record[key]
    if not isinstance(v, kind) or (isinstance(v, str) and not v.strip()):
        raise ValueError(f"field {key!r} must be a non-empty {getattr(kind, '__name__', kind)}, got {v!r}")
    return v
