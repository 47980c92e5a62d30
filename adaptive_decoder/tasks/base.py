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
from .io import BUILTIN_DIR, download_file, load_hf_dataset, local_copy, public_dataset, read_jsonl

logger = logging.getLogger(__name__)


class Task:
    name: str = ""
    expected: str = ""           # the record format, for error messages
    builtin: str | None = None   # default file in adaptive_decoder/tasks/data/
    default_reward: dict = {}    # build_reward spec of the comparison reward
    metric_spec: dict = {}       # build_reward components always reported as per-sample metrics
    options: dict = {}           # task-specific options and their defaults
    diversity: bool = False      # report self-BLEU / distinct-n across the k samples of a prompt

    def __init__(self, path: str | None = None, hf_id: str | None = None, hf_split: str | None = None,
                 hf_config: str | None = None, hf_revision: str | None = None, data_files=None,
                 dataset: str | None = None, reward: dict | None = None, on_bad_line: str = "fail",
                 max_new_tokens: int | None = None, **options):
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = sorted(["path", "hf_id", "hf_split", "hf_config", "hf_revision", "data_files", "dataset", "reward",
                            "on_bad_line", "max_new_tokens", *self.options])
            raise ValueError(f"unknown option(s) {unknown} for task {self.name!r}; valid: {valid}")
        if sum(x is not None for x in (path, hf_id, dataset)) > 1:
            raise ValueError(f"task {self.name!r}: give one of path= / hf_id= / dataset=, not several")
        if dataset is not None and (hf_split or hf_config or data_files):
            raise ValueError(f"task {self.name!r}: dataset {dataset!r} names its own split and config (its local copy "
                             "is that split); name another dataset, or give hf_id= with hf_split= / hf_config=")
        # where the records come from: `path` (a local file), else `dataset` (a public dataset, read from its local
        # copy under $ADAPTIVE_DECODER_DATA when there is one), else `hf_id`, else the built-in set
        self.data = public_dataset(dataset) if dataset is not None else {}
        if hf_id is not None:
            self.data = {"hf_id": hf_id, "hf_config": hf_config, "hf_revision": hf_revision, "data_files": data_files}
        self.data.update({k: v for k, v in (("hf_split", hf_split), ("hf_config", hf_config),
                                            ("hf_revision", hf_revision), ("data_files", data_files)) if v is not None})
        self.dataset_name = dataset
        copy = local_copy(self.data.get("local")) if path is None else None
        if copy is not None:
            path, self.data = str(copy), {**self.data, "hf_id": None, "url": None}
        self.path, self.hf_id = path, self.data.get("hf_id") if path is None else None
        self.hf_split, self.hf_config = self.data.get("hf_split") or "test", self.data.get("hf_config")
        self.on_bad_line = on_bad_line
        if max_new_tokens is not None and int(max_new_tokens) < 1:
            raise ValueError(f"task {self.name!r}: max_new_tokens must be >= 1, got {max_new_tokens}")
        # generation length this task needs (e.g. GSM8K reasoning vs a one-line translation); None = the run's default
        self.max_new_tokens = None if max_new_tokens is None else int(max_new_tokens)
        self.opts = {**self.options, **options}
        self.reward_spec = dict(reward) if reward else self._default_reward()
        self._examples = None
        self._scorers = None  # (TaskReward or None, metric-only CompositeReward or None), by setup_scoring

    # --- data -------------------------------------------------------------------------------------------
    @property
    def source(self) -> str:
        if self.hf_id:
            return f"hf:{self.hf_id}" + (f"/{self.hf_config}" if self.hf_config else "") + f"[{self.hf_split}]"
        return str(self.path or BUILTIN_DIR / self.builtin)

    def data_file(self) -> str | None:
        """The local file the records come from (a public dataset given by url is fetched on first use)."""
        if self.path is None and self.data.get("url"):
            self.path = download_file(self.data["url"], task=self.name, local=self.data.get("local"))
        return self.path

    def _raw_records(self) -> list[tuple[int, dict]]:
        self.data_file()
        if self.hf_id:
            d = self.data
            rows = load_hf_dataset(self.hf_id, self.hf_split, self.hf_config, revision=d.get("hf_revision"),
                                   data_files=d.get("data_files"), task=self.name, local=d.get("local"),
                                   columns=d.get("columns"), constants=d.get("constants"), unique=d.get("unique"))
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
        random.Random(f"{type(self).name}:{seed}").shuffle(order)  # the task's own name, whatever entry built it
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

    def stop_predicate(self):
        """A function of a completion's text that is True once no continuation can change `postprocess(text)`
        (so generation may stop there, the reward unchanged), or None when the whole completion is scored."""
        return None

    def setup_scoring(self, model=None, tokenizer=None):
        """Build the scorers once: the reward (`TaskReward`) and the metric-only components of `metric_spec`.
        `model`/`tokenizer` are the scorer LM for fluency (the base model); without them fluency is left out of
        the metrics, and a reward that uses it is refused."""
        if model is None and "fluency" in self.reward_spec:
            raise ValueError(f"task {self.name!r}: the reward uses 'fluency', which needs the scorer model")
        # a component of both specs is scored once, by the reward, with the reward's options
        spec = {k: dict(v or {}) for k, v in self.metric_spec.items()
                if k not in self.reward_spec and (model is not None or k != "fluency")}
        for v in spec.values():
            v.pop("weight", None)
        self._scorers = (TaskReward(self, model, tokenizer) if self.reward_spec else None,
                         build_reward(spec, model=model, tokenizer=tokenizer) if spec else None)
        return self

    def extra_sample_metrics(self, text: str, example: dict) -> dict:
        return {}

    def score(self, texts: list[str], example: dict) -> tuple[list[dict], dict]:
        """Score the k samples of one prompt: (per-sample metric dicts, each with "reward"; per-prompt metrics)."""
        if self._scorers is None and self.reward_spec:
            self.setup_scoring()
        reward, metrics = self._scorers or (None, None)
        scored = [self.postprocess(t or "") for t in texts]
        examples = [example] * len(scored)
        comps = {k: v for k, v in (metrics.score_components(scored, examples) if metrics else {}).items() if k != "total"}
        totals = [0.0] * len(scored)
        if reward is not None:
            comps.update(reward.score_components(texts, examples))
            totals = comps.pop("total")
        samples = []
        for i, t in enumerate(scored):
            m = {k: float(v[i]) for k, v in comps.items()}
            m.update(self.extra_sample_metrics(t, example))
            m["reward"] = float(totals[i])
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


class TaskReward:
    """A task's comparison reward, the one way it is computed: the weighted sum of its reward spec
    (`adaptive_decoder.rewards.build_reward`) on the post-processed text (e.g. translation's first line).

    `Task.score` reports it as each sample's "reward"; the experiment's collection and the HAG search score with
    it as well, so LPO optimises, and the search picks configs by, exactly what the evaluation reports.
    `score_components` returns every component and "total" (the reward), as a `CompositeReward` does.
    """

    def __init__(self, task: Task, model=None, tokenizer=None):
        self.task = task
        self.reward = build_reward(task.reward_spec, model=model, tokenizer=tokenizer)

    def score_components(self, completions: list[str], examples: list[dict]) -> dict:
        return self.reward.score_components([self.task.postprocess(c or "") for c in completions], examples)

    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        return self.score_components(completions, examples)["total"]


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
