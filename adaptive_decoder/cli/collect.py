"""Collect reward-scored samples for LPO (thin recipe over adaptive_decoder.lpo.collection).

    adaptive-decoder collect --config configs/lpo/collect_smollm2_mix.yaml [--num_samples 4 ...]
    python training/collect.py --config configs/lpo/collect_smollm2_mix.yaml     # the same, from a clone

Re-running with the same output_dir resumes: prompts already in its manifest are skipped; a directory made with a
different base model / head / settings is refused. A shard file that no longer matches the manifest (e.g. a torn
last line) is dropped with a warning and its prompts are collected again. At the end it writes best-vs-worst pair
statistics (pair_stats.json + pair_stats.png) next to the samples.

`--backend vllm` draws the samples in a vLLM engine (run it in the venv of `make setup-vllm`; see README "Sample
with vLLM"); the manifest records the backend, so a collection is resumed only under the backend that began it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, fields

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from adaptive_decoder.cli import CONFIG_DIR  # noqa: E402
from adaptive_decoder.configs import parse_recipe_config, run_recipe  # noqa: E402
from adaptive_decoder import AdaptiveDecoderHead  # noqa: E402
from adaptive_decoder.lpo.store import CollectionSettings  # noqa: E402
from adaptive_decoder.lpo.collection import collect, sampling_model  # noqa: E402
from adaptive_decoder.modeling.head import build_head  # noqa: E402
from adaptive_decoder.modeling.model_args import ModelArguments  # noqa: E402
from adaptive_decoder.paths import missing_local_dir  # noqa: E402
from adaptive_decoder.lpo.pairs import collection_pair_report  # noqa: E402
from adaptive_decoder.lpo.shards import shard_prompts  # noqa: E402
from adaptive_decoder.tasks.base import TaskReward  # noqa: E402
from adaptive_decoder.tasks.recipe import COLLECT_KEYS, build_task, task_entries, task_prompts  # noqa: E402

logger = logging.getLogger("collect")


@dataclass
class CollectConfig(CollectionSettings, ModelArguments):
    output_dir: str = field(default=None, metadata={"help": "Collection directory (created, or resumed if it exists)."})
    head_path: str | None = field(default=None, metadata={
        "help": "Saved head to collect with (e.g. a previous round); None = fresh head."})
    head: dict = field(default_factory=dict, metadata={
        "help": "AdaptiveDecoderConfig options of a fresh head (bins, factors, level, ...)."})
    head_init_seed: int = field(default=0, metadata={"help": "Seed of a fresh head's initialisation."})
    tasks: dict = field(default_factory=dict, metadata={
        "help": "task name -> options: a task (its name, or `task:`) with its options (path, template, reward, "
                "max_new_tokens, ...) and num_prompts / offset (adaptive_decoder.tasks.recipe)."})
    progress: bool = field(default=True, metadata={"help": "Show a tqdm progress bar."})
    report: bool = field(default=True, metadata={"help": "Write best-vs-worst pair statistics (JSON + PNG) at the end."})

    def __post_init__(self):
        CollectionSettings.__post_init__(self)
        ModelArguments.__post_init__(self)  # 'auto' resolved once; the manifest records the model's dtype
        if not self.output_dir:
            raise ValueError("output_dir is required")
        self.tasks = task_entries(self.tasks)
        if not self.tasks:
            raise ValueError("tasks is empty: configure at least one task (see configs/lpo/collect_tiny.yaml)")
        missing = missing_local_dir(self.head_path) if self.head_path else None
        if missing is not None:  # here, not after the model load
            raise missing


def collecting_head(cfg: CollectConfig, model) -> AdaptiveDecoderHead:
    """The head that explores: the saved one at head_path, else a fresh one with cfg.head's options (sampling)."""
    if cfg.head_path and cfg.head:
        raise ValueError("give either head_path (a saved head) or head (options of a fresh head), not both")
    return build_head({"selection": "sample", **cfg.head}, cfg.head_init_seed, model=model, head_path=cfg.head_path)


def collect_prompts(entries: dict) -> tuple[dict, list[dict]]:
    """({name: Task}, prompt records) of a collect config's `tasks`: each task's first num_prompts examples after
    offset, rendered by the task as the evaluation renders them."""
    tasks = {name: build_task(name, opts, COLLECT_KEYS) for name, opts in entries.items()}
    prompts = [p for name, task in tasks.items()
               for p in task_prompts(name, task, entries[name].get("num_prompts"), entries[name].get("offset", 0))]
    return tasks, prompts


def collection_specs(entries: dict, tasks: dict) -> dict:
    """What the manifest records of each task (the experiment's collect stage records the same keys): its reward,
    its task options, its generation length and which of its prompts."""
    out = {}
    for name, task in tasks.items():
        opts = entries[name]
        spec = {"reward": task.reward_spec, "task_options": {k: v for k, v in opts.items() if k not in COLLECT_KEYS}}
        if task.max_new_tokens:
            spec["max_new_tokens"] = task.max_new_tokens
        spec.update({k: opts[k] for k in COLLECT_KEYS if k in opts})
        out[name] = spec
    return out


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (cfg,) = parse_recipe_config((CollectConfig,), argv, __doc__, config_dir=CONFIG_DIR / "collect")
    cfg.set_threads()
    tasks, prompts = collect_prompts(cfg.tasks)
    prompts = shard_prompts(prompts, cfg.shard)  # a Slurm array task's part (adaptive_decoder.lpo.shards)
    model, tok = cfg.load()
    head = collecting_head(cfg, model)
    rewards = {name: TaskReward(task, model, tok) for name, task in tasks.items()}
    settings = CollectionSettings(**{f.name: getattr(cfg, f.name) for f in fields(CollectionSettings)})
    t0 = time.time()
    with sampling_model(model, tok, head, settings) as adm:  # backend 'vllm': one engine, closed at the end
        summary = collect(adm, prompts, rewards, cfg.output_dir, settings, task_specs=collection_specs(cfg.tasks, tasks),
                          progress=cfg.progress)
    summary["wall_s"] = round(time.time() - t0, 1)
    if cfg.report:
        summary["pairs"] = collection_pair_report(cfg.output_dir)
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    run_recipe(main)
