"""Build HAG SFT data: the best decoding config per training prompt, found by prune-then-greedy search.

    python training/build_hag_data.py --config configs/hag/build_smollm2.yaml [--budget_samples 60 ...]

Writes to output_dir:
    search.jsonl        one record per prompt (every config tried, its rewards, the best one); the resume log:
                        re-running skips finished prompts; a directory made with other settings is refused
    sft.jsonl           the SFT dataset for training/train_hag.py (conversational prompt -> config line)
    summary.json        cost (samples generated, wall clock, configs evaluated) and outcome per task
    best_configs.png    distribution of the chosen temperature / top_p / top_k / repetition_penalty per task
See adaptive_decoder/hag/search.py for the search itself.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from adaptive_decoder.configs import parse_recipe_config, run_recipe  # noqa: E402
from adaptive_decoder.modeling.generation import AdaptiveDecodingModel  # noqa: E402
from adaptive_decoder.hag.policy import KEYS  # noqa: E402
from adaptive_decoder.hag.search import SearchSettings, SearchSpace, read_records, run_search, sft_records, task_scorer  # noqa: E402
from adaptive_decoder.modeling.model_args import ModelArguments  # noqa: E402
from adaptive_decoder.tasks.identity import task_digest  # noqa: E402
from adaptive_decoder.tasks.recipe import build_task, check_entries, task_entries  # noqa: E402
from adaptive_decoder.plotting import pyplot, save_figure  # noqa: E402
from adaptive_decoder.storage import atomic_write_bytes  # noqa: E402

logger = logging.getLogger("build_hag_data")
_TASK_KEYS = ("num_prompts", "seed")  # everything else in a task entry goes to the task (tasks.recipe)


@dataclass
class BuildHAGConfig(SearchSettings, ModelArguments):
    output_dir: str = field(default=None, metadata={"help": "Output directory (created, or resumed if it exists)."})
    tasks: dict = field(default_factory=dict, metadata={
        "help": "task name -> options: num_prompts, seed (of the subset) and the task's options (`task:`, path, "
                "reward, num_fewshot, template, ...; adaptive_decoder.tasks.recipe)."})
    experiment_config: str | None = field(default=None, metadata={
        "help": "An experiment config (experiments/run.py): search the first num_prompts of each task's TRAIN split "
                "there (its task options and split_seed), so HAG is trained on the prompts the head was, and never on "
                "the experiment's dev or test prompts. `tasks` then holds only {task: {num_prompts}}."})
    space: dict = field(default_factory=dict, metadata={
        "help": "SearchSpace grids: temperature/top_p/top_k/repetition_penalty lists and base."})
    drop_all_tied: bool = field(default=True, metadata={"help": "Leave prompts where every config tied out of sft.jsonl."})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bar."})
    plot: bool = field(default=True, metadata={"help": "Write best_configs.png."})

    def __post_init__(self):
        SearchSettings.__post_init__(self)
        ModelArguments.__post_init__(self)  # 'auto' resolved once: the resume fingerprint records the resolved dtype
        if not self.output_dir:
            raise ValueError("output_dir is required")
        self.tasks = task_entries(self.tasks)
        if not self.tasks:
            raise ValueError("tasks is empty: configure at least one task (see configs/hag/build_tiny.yaml)")
        if self.experiment_config:
            self._experiment_tasks()
        for name, spec in self.tasks.items():
            if "num_prompts" not in spec:
                raise ValueError(f"task {name!r}: needs num_prompts (beside the task's options), got {spec!r}")
        if not self.experiment_config:
            check_entries(self.tasks)
        unknown = sorted(set(self.space) - {f.name for f in fields(SearchSpace)})
        if unknown:
            raise ValueError(f"unknown space key(s) {unknown}; valid: {[f.name for f in fields(SearchSpace)]}")


    def _experiment_tasks(self):
        from adaptive_decoder.configs import load_config

        exp = load_config(self.experiment_config)
        bad = sorted(set(self.tasks) - set(exp.get("tasks") or {}))
        if bad:
            raise ValueError(f"tasks {bad} are not tasks of {self.experiment_config} ({sorted(exp.get('tasks') or {})})")
        for name, spec in self.tasks.items():
            extra = sorted(set(spec or {}) - {"num_prompts"})
            if extra:
                raise ValueError(f"task {name!r}: with experiment_config the task options come from the experiment; "
                                 f"remove {extra}")


def experiment_train_prompts(path: str, num_prompts: dict) -> dict:
    """{task: (Task, the first num_prompts[task] examples of its train split)} of the experiment config at `path`."""
    from adaptive_decoder.configs import parse_recipe_config
    from adaptive_decoder.experiment.config import SPLIT_KEYS, ExperimentConfig
    from adaptive_decoder.experiment.splits import make_splits

    (ecfg,) = parse_recipe_config((ExperimentConfig,), ["--config", path])
    splits = make_splits(ecfg)
    out = {}
    for name, n in num_prompts.items():
        train = splits[name]["train"]
        if n > len(train):
            raise ValueError(f"task {name!r}: num_prompts {n} > the {len(train)} train prompts of {path}")
        out[name] = (build_task(name, ecfg.tasks[name], SPLIT_KEYS), train[:n])
    return out


def load_examples(tasks_cfg: dict, experiment_config: str | None = None) -> tuple[dict, list]:
    """({name: Task}, examples): num_prompts per task, ids "<task>/<id>": a deterministic subset (seeded shuffle),
    or with `experiment_config` the first num_prompts of that experiment's train split."""
    if experiment_config:
        chosen = experiment_train_prompts(experiment_config, {n: int(s["num_prompts"]) for n, s in tasks_cfg.items()})
    tasks, per_task = {}, []
    for name, spec in tasks_cfg.items():
        if experiment_config:
            task, subset = chosen[name]
        else:
            task = build_task(name, spec, _TASK_KEYS)
            subset, _ = task.split(int(spec["num_prompts"]), 0, int(spec.get("seed", 0)))
        tasks[name] = task
        own = {"max_new_tokens": task.max_new_tokens} if task.max_new_tokens else {}  # as evaluation generates it
        per_task.append([{**e, "id": f"{name}/{e['id']}", "task": name, **own} for e in subset])
    # round robin over tasks, so a run stopped early still covers every task family
    examples = [lst[i] for i in range(max(map(len, per_task))) for lst in per_task if i < len(lst)]
    return tasks, examples


def plot_best_configs(records: list, path: Path) -> Path | None:
    if not records:
        return None
    plt = pyplot()

    tasks = sorted({r["task"] for r in records})
    fig, axes = plt.subplots(1, len(KEYS), figsize=(3.6 * len(KEYS), 3.2), squeeze=False)
    width = 0.8 / len(tasks)
    for ax, k in zip(axes[0], KEYS):
        vals = sorted({r["best_config"][k] for r in records})
        for i, t in enumerate(tasks):
            rs = [r for r in records if r["task"] == t]
            ax.bar([j + i * width for j in range(len(vals))],
                   [sum(r["best_config"][k] == v for r in rs) / len(rs) for v in vals], width, label=t)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(vals))], [f"{v:g}" for v in vals], fontsize=8)
        ax.set_title(k, fontsize=9)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("share of prompts")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("HAG search: best config per prompt", fontsize=10)
    return save_figure(fig, path, dpi=110)


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (cfg,) = parse_recipe_config((BuildHAGConfig,), argv, __doc__)
    cfg.set_threads()
    space = SearchSpace(**cfg.space)
    settings = SearchSettings(**{f.name: getattr(cfg, f.name) for f in fields(SearchSettings)})
    tasks, examples = load_examples(cfg.tasks, cfg.experiment_config)  # before the model: bad options fail fast
    model, tok = cfg.load()
    adm = AdaptiveDecodingModel(model, tok)
    scorer = task_scorer(tasks, model=model, tokenizer=tok)
    # num_prompts is left out: a seeded subset of n+m prompts extends the one of n, so a finished directory can
    # be grown by raising num_prompts (the prompts already searched are kept)
    fingerprint = {"base_model": cfg.model,
                   "tasks": {n: {k: v for k, v in s.items() if k != "num_prompts"} for n, s in cfg.tasks.items()},
                   "task_contents": {n: task_digest(t) for n, t in tasks.items()}}  # task file, defaults, data file
    if cfg.experiment_config:  # the experiment's task options and split settings decide which prompts these are
        from adaptive_decoder.configs import load_config

        exp = load_config(cfg.experiment_config)
        fingerprint["experiment_split"] = {k: exp.get(k) for k in ("tasks", "split_seed", "num_test", "num_dev", "num_train")}
    # the RESOLVED dtype ('auto' may resolve differently on another machine, and changes the scores); float32
    # is left out so a directory searched before the dtype was fingerprinted (in the float32 default) resumes
    if cfg.dtype != "float32":
        fingerprint["dtype"] = cfg.dtype
    if cfg.load_identity():  # the same way: revision, attention kernel, quantization, remote code when set
        fingerprint["load"] = cfg.load_identity()
    t0 = time.time()
    summary = run_search(adm, examples, scorer, cfg.output_dir, space, settings, progress=cfg.progress,
                         fingerprint=fingerprint)
    out = Path(cfg.output_dir)
    records = read_records(out / "search.jsonl")
    wanted = {e["id"] for e in examples}
    records = [r for r in records if r["prompt_id"] in wanted]
    sft = sft_records(records, drop_all_tied=cfg.drop_all_tied)
    atomic_write_bytes(out / "sft.jsonl", "".join(json.dumps(r) + "\n" for r in sft).encode())
    summary.update(sft_examples=len(sft), dropped_all_tied=len(records) - len(sft), wall_seconds=round(time.time() - t0, 1),
                   config=asdict(cfg))
    if cfg.plot:
        p = plot_best_configs(records, out / "best_configs.png")
        summary["plot"] = str(p) if p else None
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("HAG data: %d prompts (%d SFT examples, %d all-tied dropped); %d samples generated in total, "
                "this run %.0fs / %s samples -> %s", summary["prompts"], len(sft), summary["dropped_all_tied"],
                summary["samples_generated"], summary["this_run"]["seconds"], summary["this_run"]["samples"], out)
    return summary


if __name__ == "__main__":
    run_recipe(main)
