"""HAG training data by search: the best decoding config per prompt, scored with task rewards.

For each prompt, candidate configs are scored by the mean task reward of `samples_per_config` samples:

1. prune, one hyperparameter at a time: starting from `SearchSpace.base`, sweep each hyperparameter over its
   grid with the others held at the base value; per hyperparameter keep the `keep_per_key` best values, and
   drop any value whose mean is more than `prune_margin` below that hyperparameter's best (clearly bad regions);
2. greedy coordinate search over the kept values: start from the best config seen so far; for each
   hyperparameter in turn, try its kept values with the others fixed at the current config and move when the
   mean reward improves by more than `min_improvement`; repeat until a round changes nothing or `max_rounds`.
The best config seen (ties: the one evaluated first, i.e. the base sweep order) is kept.

Prompts are searched in lockstep chunks (`adaptive_decoder.scoring`'s batches): every step's candidates of all
prompts of a chunk go into batched `adm.generate(force=per-row lists, row_seeds=)` calls (the same sampling code
path and noise as evaluation: a config's j-th sample of a prompt is evaluation's j-th sample at that config).
Temperature 0 configs are greedy, so they take one sample (scored once, counted once) and top_p/top_k are
irrelevant for them (canonicalised to 1.0 / 0). `budget_samples` caps the samples spent per prompt.

A reward that compares the samples of a prompt with each other (novelty; `scorer.needs_group`) is scored within
each config's own samples, as evaluation scores a fixed config's k samples: the samples of one (prompt, config)
are one group. A greedy config's one sample is scored beside an identical copy of itself, which is what k
greedy samples are at evaluation (novelty 0), so greedy is not rewarded for being alone.

`run_search` appends one JSON record per finished prompt to `<out_dir>/search.jsonl` (flushed and fsync'ed per
chunk) and skips finished prompts on restart; `sft_records` turns the records into the SFT dataset.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..modeling.noise import NOISE_VERSION, prompt_seed, row_seeds
from ..scoring import ScoredSampling
from .policy import KEYS, sft_example, validate_config
from ..storage import AppendLog, RecordKind, RunRecord
from ..tasks.identity import changes_by_task, unrecorded_contents

logger = logging.getLogger(__name__)


@dataclass
class SearchSpace:
    """Candidate values per hyperparameter and the base config of the pruning sweep."""

    temperature: list = field(default_factory=lambda: [0.0, 0.3, 0.6, 0.9, 1.2],
                              metadata={"help": "Temperature grid (0 = greedy)."})
    top_p: list = field(default_factory=lambda: [1.0, 0.9, 0.7], metadata={"help": "top_p grid (1.0 = off)."})
    top_k: list = field(default_factory=lambda: [0, 40, 10], metadata={"help": "top_k grid (0 = off)."})
    repetition_penalty: list = field(default_factory=lambda: [1.0, 1.1, 1.3],
                                     metadata={"help": "repetition_penalty grid (1.0 = off)."})
    base: dict = field(default_factory=lambda: {"temperature": 0.6, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0},
                       metadata={"help": "Config the one-at-a-time sweep starts from (temperature > 0)."})

    def __post_init__(self):
        for k in KEYS:
            vals = list(getattr(self, k))
            if not vals:
                raise ValueError(f"search space: the {k} grid is empty")
            for v in vals:
                validate_config({**self.base_or_default(), k: v}, f"search space {k} grid")
            if len(set(vals)) != len(vals):
                raise ValueError(f"search space: the {k} grid has duplicates: {vals}")
            setattr(self, k, [int(v) if k == "top_k" else float(v) for v in vals])
        self.base = validate_config(dict(self.base), "search space base")
        if self.base["temperature"] == 0:
            raise ValueError("search space base temperature must be > 0: top_p/top_k/sweeps do nothing when greedy")

    def base_or_default(self) -> dict:
        from .policy import DEFAULT_CONFIG

        return {**DEFAULT_CONFIG, **{k: v for k, v in dict(self.base).items() if k in KEYS}}

    def grid(self, key: str) -> list:
        return list(getattr(self, key))


@dataclass
class SearchSettings:
    samples_per_config: int = field(default=4, metadata={"help": "Samples per candidate config (greedy configs take 1)."})
    max_new_tokens: int = field(default=128, metadata={
        "help": "Answer length cap while scoring configs (an example's own 'max_new_tokens', its task's, wins)."})
    keep_per_key: int = field(default=2, metadata={"help": "Prune: values kept per hyperparameter after the sweep."})
    prune_margin: float = field(default=0.25, metadata={
        "help": "Prune: drop values whose mean reward is this far below the best of their sweep."})
    max_rounds: int = field(default=2, metadata={"help": "Greedy coordinate search: rounds over all hyperparameters."})
    min_improvement: float = field(default=0.0, metadata={"help": "Greedy: a move needs mean reward > current + this."})
    budget_samples: int | None = field(default=None, metadata={"help": "Max samples generated per prompt (None = no cap)."})
    prompts_per_chunk: int = field(default=4, metadata={"help": "Prompts searched in lockstep (one resume unit)."})
    max_rows: int = field(default=64, metadata={"help": "Max rows per generate call."})
    chat: bool | None = field(default=None, metadata={
        "help": "Chat template for the answers (default: when the tokenizer has one)."})
    stop_when_scored: bool = field(default=False, metadata={
        "help": "Stop each sample once its task's scored text is final (the scorer's `stop_predicates`, as "
                "task_scorer gives them): the rewards are unchanged and the unscored rest is not decoded, as in "
                "evaluation's stop_when_scored (a base model that never ends a copy line otherwise decodes "
                "max_new_tokens for every sample)."})
    seed: int = field(default=0, metadata={
        "help": "Sampling seed: a config's j-th sample for a prompt draws from the row seed of (seed, task, prompt id, j)."})

    def __post_init__(self):
        for name in ("samples_per_config", "max_new_tokens", "keep_per_key", "max_rounds", "prompts_per_chunk", "max_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.budget_samples is not None and self.budget_samples < 1:
            raise ValueError(f"budget_samples must be >= 1 or None, got {self.budget_samples}")
        if self.prune_margin < 0 or self.min_improvement < 0:
            raise ValueError("prune_margin and min_improvement must be >= 0")


def canonical(config: dict) -> tuple:
    """Hashable key of a config; greedy configs ignore top_p / top_k, so those are normalised away."""
    c = dict(config)
    if c["temperature"] == 0:
        c["top_p"], c["top_k"] = 1.0, 0
    return tuple(c[k] for k in KEYS)


class _PromptState:
    def __init__(self, example: dict):
        self.example = example
        self.results: dict = {}   # canonical key -> {"config", "mean", "rewards", "order"}
        self.samples = 0
        self.kept: dict = {}
        self.current: tuple | None = None

    def best(self) -> dict:
        # highest mean; ties -> evaluated first
        return max(self.results.values(), key=lambda r: (r["mean"], -r["order"]))


class ConfigSearch:
    """Prune-then-greedy search over `SearchSpace` for chunks of prompts (see the module docstring)."""

    def __init__(self, adm, scorer, space: SearchSpace | None = None, settings: SearchSettings | None = None):
        self.adm, self.scorer = adm, scorer
        self.space, self.settings = space or SearchSpace(), settings or SearchSettings()
        if getattr(scorer, "needs_group", False) and self.settings.samples_per_config < 2:
            raise ValueError("a reward that compares a prompt's samples (e.g. novelty) needs samples_per_config >= 2")
        self.stops = getattr(scorer, "stop_predicates", None) if self.settings.stop_when_scored else {}
        if self.stops is None:
            raise ValueError("stop_when_scored needs a scorer that says where each task's scored text ends "
                             "(`stop_predicates`, as task_scorer gives them)")

    # --- evaluation ---------------------------------------------------------------------------------------
    def _cost(self, config: dict) -> int:
        return 1 if config["temperature"] == 0 else self.settings.samples_per_config

    def _evaluate(self, states: list, requests: list, seeds: list):
        """requests: (state index, config). Generates, scores and records every affordable, new request; the j-th
        sample of a config for prompt i draws from row j of prompt seed seeds[i] (`noise.row_seeds`), as that
        prompt's j-th sample does in evaluation and collection."""
        s, budget = self.settings, self.settings.budget_samples
        todo, seen = [], set()
        for i, cfg in requests:
            st, key = states[i], canonical(cfg)
            if key in st.results or (i, key) in seen:
                continue
            cost = self._cost(cfg)
            if budget is not None and st.samples + cost > budget:
                continue
            seen.add((i, key))
            st.samples += cost
            todo.append((i, dict(zip(KEYS, key)), cost))
        rows = [(i, cfg) for i, cfg, cost in todo for _ in range(cost)]
        noise = [r for i, cfg, cost in todo for r in row_seeds([seeds[i]], cost)]
        grouped = getattr(self.scorer, "needs_group", False)
        # a task's own answer length (example["max_new_tokens"], as evaluation uses it), else the setting's; with
        # stop_when_scored one generate call per (length, task): a call stops its rows with one task's predicate
        groups = [(states[i].example.get("max_new_tokens") or s.max_new_tokens,
                   states[i].example.get("task") if self.stops else None) for i, _ in rows]
        texts = [None] * len(rows)
        for length, task in dict.fromkeys(groups):
            idx = [n for n, x in enumerate(groups) if x == (length, task)]
            stop = self.stops.get(task)
            for start in range(0, len(idx), s.max_rows):
                part = idx[start:start + s.max_rows]
                force = {k: [rows[n][1][k] for n in part] for k in KEYS}
                out = self.adm.generate_text([states[rows[n][0]].example["prompt"] for n in part], chat=s.chat,
                                             max_new_tokens=int(length), force=force, row_seeds=[noise[n] for n in part],
                                             **({"stop_when": stop} if stop else {}))
                for n, t in zip(part, out.texts):
                    texts[n] = t
        if grouped:  # one group per (prompt, config); a lone greedy sample is scored beside its own copy
            keyed = [{**states[i].example, "id": f"{states[i].example['id']}|{canonical(cfg)}"} for i, cfg in rows]
            lone = [n for n, (i, cfg) in enumerate(rows) if self._cost(cfg) == 1]
            rewards = self.scorer(texts + [texts[n] for n in lone], keyed + [keyed[n] for n in lone])[:len(texts)] \
                if rows else []
        else:
            rewards = self.scorer(texts, [states[i].example for i, _ in rows]) if rows else []
        pos = 0
        for i, cfg, cost in todo:
            r = [float(x) for x in rewards[pos:pos + cost]]
            pos += cost
            r = [x if math.isfinite(x) else float("-inf") for x in r]
            st = states[i]
            st.results[canonical(cfg)] = {"config": cfg, "mean": sum(r) / len(r), "rewards": r, "order": len(st.results),
                                          "texts": texts[pos - cost:pos]}

    # --- search -------------------------------------------------------------------------------------------
    def search(self, examples: list, seeds: list | None = None) -> list:
        """Search a chunk of examples (dicts with "id", "prompt" and the reward fields); returns one record each.
        `seeds`: the examples' prompt seeds (default: `noise.prompt_seed(settings.seed, task, id)`, the engine's)."""
        s, sp = self.settings, self.space
        t0 = time.time()
        if seeds is None:
            seeds = [prompt_seed(s.seed, e.get("task"), e["id"]) for e in examples]
        states = [_PromptState(e) for e in examples]
        # 1. prune: one hyperparameter at a time around the base config
        sweeps = {k: [{**sp.base, k: v} for v in sp.grid(k)] for k in KEYS}
        self._evaluate(states, [(i, cfg) for i in range(len(states)) for k in KEYS for cfg in sweeps[k]],
                       seeds)
        for st in states:
            for k in KEYS:
                scored = [(st.results[canonical(c)]["mean"], -n, c[k]) for n, c in enumerate(sweeps[k])
                          if canonical(c) in st.results]
                if not scored:
                    st.kept[k] = [sp.base[k]]
                    continue
                top = max(m for m, _, _ in scored)
                ok = sorted((x for x in scored if x[0] >= top - s.prune_margin), reverse=True)[: s.keep_per_key]
                st.kept[k] = [v for _, _, v in ok]
            st.current = canonical(st.best()["config"])
        # 2. greedy coordinate search over the kept values
        for rnd in range(s.max_rounds):
            moved = [False] * len(states)
            for k in KEYS:
                reqs = []
                for i, st in enumerate(states):
                    cur = dict(zip(KEYS, st.current))
                    reqs += [(i, {**cur, k: v}) for v in st.kept[k]]
                self._evaluate(states, reqs, seeds)
                for i, st in enumerate(states):
                    cur = dict(zip(KEYS, st.current))
                    cands = [st.results[canonical({**cur, k: v})] for v in st.kept[k] if canonical({**cur, k: v}) in st.results]
                    if not cands:
                        continue
                    top = max(cands, key=lambda r: (r["mean"], -r["order"]))
                    if top["mean"] > st.results[st.current]["mean"] + s.min_improvement:
                        st.current, moved[i] = canonical(top["config"]), True
            if not any(moved):
                break
        seconds = (time.time() - t0) / max(len(states), 1)
        return [self._record(st, seconds) for st in states]

    def _record(self, st: _PromptState, seconds: float) -> dict:
        best = st.best()
        means = [r["mean"] for r in st.results.values()]
        base = st.results.get(canonical(self.space.base))
        ex = st.example
        return {"prompt_id": ex["id"], "task": ex.get("task"), "prompt": ex["prompt"],
                "best_config": best["config"], "best_reward": best["mean"],
                "base_reward": base["mean"] if base else None,
                "all_tied": max(means) == min(means), "num_configs": len(st.results), "samples": st.samples,
                "seconds": round(seconds, 3), "kept": st.kept, "best_texts": best["texts"],
                "evaluated": [{"config": r["config"], "mean": r["mean"], "rewards": r["rewards"]}
                              for r in sorted(st.results.values(), key=lambda r: r["order"])]}


# ------------------------------------------------------------------------------------------------------------
def search_log(path) -> AppendLog:
    """The search.jsonl log of a search directory (`storage.AppendLog`: a torn last line is searched again)."""
    return AppendLog(path, redo="its prompt is searched again")


def read_records(path) -> list:
    """Records of a search.jsonl (`search_log`)."""
    return search_log(path).read()


def _search_config_v0(rec: dict) -> dict:
    # format 0 recorded stop_when_scored only when on
    return {"settings.stop_when_scored": False, **rec}


# search_config.json: the space, the settings and the caller's identity, flat ("settings.samples_per_config") so
# that a refusal names exactly what changed. Format 1 lacks the caller's `task_contents`: None, accepted with a warning
SEARCH_CONFIG = RecordKind("search_config.json", "search directory", version=2,
                           migrations={0: _search_config_v0, 1: unrecorded_contents})


def run_search(adm, examples: list, scorer, out_dir, space: SearchSpace | None = None,
               settings: SearchSettings | None = None, progress: bool = True, fingerprint: dict | None = None) -> dict:
    """Search every example not yet in `<out_dir>/search.jsonl`; returns the cost summary of the whole directory.

    `fingerprint`: extra identity (model, task sources, ...) checked with the space/settings on resume, so a
    directory is never continued under a different configuration (`task_contents`: compared by task, by name).
    """
    space, settings = space or SearchSpace(), settings or SearchSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # flat keys ("settings.samples_per_config") so a refusal names exactly what changed
    fp = {**{f"space.{k}": v for k, v in asdict(space).items()},
          **{f"settings.{k}": v for k, v in asdict(settings).items()}, **(fingerprint or {}),
          "noise_scheme": NOISE_VERSION}  # another draw scheme draws other samples for the same seeds
    record = RunRecord(out, SEARCH_CONFIG)
    with record.lock():  # one search per directory: a second would search and append every prompt again
        return _run_search(adm, examples, scorer, record, fp, space, settings, progress)


def _run_search(adm, examples, scorer, record: RunRecord, fp: dict, space, settings, progress) -> dict:
    out = record.root
    diff = changes_by_task(record, fp, record.read())
    if diff:
        raise ValueError(f"{out} holds a search with a different configuration ({', '.join(diff)} differ); "
                         "use another output directory or delete this one")
    record.write(fp)  # the same identity, in the current format
    log = search_log(out / "search.jsonl")
    done = {r["prompt_id"] for r in log.read()}
    todo = [e for e in examples if e["id"] not in done]
    search = ConfigSearch(adm, scorer, space, settings)
    t0, new_samples = time.time(), 0
    from tqdm.auto import tqdm

    bar = tqdm(total=len(examples), initial=len(examples) - len(todo), desc="HAG search", unit="prompt",
               disable=not progress)
    engine = ScoredSampling(settings.seed, settings.prompts_per_chunk, group_tasks=False)  # _evaluate splits tasks

    def append(chunk, recs):
        nonlocal new_samples
        log.append(recs)
        new_samples += sum(r["samples"] for r in recs)
        bar.update(len(recs))
        bar.set_postfix(samples=new_samples)

    try:
        engine.run(examples, draw=search.search, append=append, done=done)  # refuses duplicate ids
    finally:
        bar.close()
    return summarize(log.read(), run_seconds=time.time() - t0, run_samples=new_samples)


def summarize(records: list, run_seconds: float | None = None, run_samples: int | None = None) -> dict:
    """Cost and outcome of a search directory (all runs) and of this run."""
    tasks = sorted({r.get("task") or "" for r in records})
    per_task = {}
    for t in tasks:
        rs = [r for r in records if (r.get("task") or "") == t]
        per_task[t] = {"prompts": len(rs), "all_tied": sum(r["all_tied"] for r in rs),
                       "mean_best_reward": sum(r["best_reward"] for r in rs) / len(rs),
                       "mean_base_reward": _mean([r["base_reward"] for r in rs]),
                       "best_temperature": _hist([r["best_config"]["temperature"] for r in rs])}
    return {"prompts": len(records), "samples_generated": sum(r["samples"] for r in records),
            "search_seconds": round(sum(r["seconds"] for r in records), 1),
            "configs_evaluated": sum(r["num_configs"] for r in records),
            "this_run": {"seconds": None if run_seconds is None else round(run_seconds, 1), "samples": run_samples},
            "per_task": per_task}


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _hist(xs):
    out = {}
    for x in xs:
        out[str(x)] = out.get(str(x), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: float(kv[0])))


def sft_records(records: list, drop_all_tied: bool = True, template: str | None = None) -> list:
    """SFT examples (TRL conversational prompt-completion) from search records: prompt -> best config line.

    drop_all_tied: a prompt where every config scored the same (e.g. a GSM8K problem no config solves) carries
    no signal about which config is better, so it is left out by default."""
    return [sft_example(r["prompt"], r["best_config"], template, prompt_id=r["prompt_id"], task=r.get("task"),
                        task_prompt=r["prompt"], reward=r["best_reward"])
            for r in records if not (drop_all_tied and r["all_tied"])]


def task_scorer(tasks: dict, model=None, tokenizer=None):
    """A scorer(texts, examples) for `ConfigSearch` from eval tasks {name: Task}: each example's "task" picks the
    task, whose reward (`adaptive_decoder.tasks.base.TaskReward`: its reward spec on the post-processed text) scores it."""
    from ..rewards import group_components
    from ..tasks.base import TaskReward

    rewards = {name: TaskReward(t, model=model, tokenizer=tokenizer) for name, t in tasks.items()}
    grouped = any(group_components(r) for r in rewards.values())  # ConfigSearch then groups by (prompt, config)

    def score(texts, examples):
        out = [0.0] * len(texts)
        for name in tasks:
            idx = [i for i, e in enumerate(examples) if e.get("task") == name]
            if idx:
                vals = rewards[name].score([texts[i] for i in idx], [examples[i] for i in idx])
                for i, v in zip(idx, vals):
                    out[i] = float(v)
        unknown = sorted({str(e.get("task")) for e in examples} - set(tasks))
        if unknown:
            raise ValueError(f"examples of task(s) {unknown} but the scorer knows only {sorted(tasks)}")
        return out

    score.needs_group = grouped
    score.stop_predicates = {name: t.stop_predicate() for name, t in tasks.items()}  # for stop_when_scored
    return score
