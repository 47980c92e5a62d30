"""A trained head's model card from the experiment run that made it, and publishing the head with it.

A run directory (`adaptive_decoder.experiment.pipeline`) holds, per seed and level, the collection the head was
trained on (`seed-<s>/collect-<level>/`: rewards, size) and the head (`seed-<s>/train-<level>/head/`), and at its
root the aggregated `summary.json` whose scale-free report (normalized reward per task and win rates, over every
seed) is the card's results table.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..evaluation.report import markdown_sections
from ..lpo.store import collection_card_facts
from ..modeling.head import AdaptiveDecoderHead


def _seed(run: Path, seed: int | None) -> int:
    if seed is not None:
        return seed
    seeds = sorted(int(p.name.split("-", 1)[1]) for p in run.glob("seed-*") if p.name.split("-", 1)[1].isdigit())
    if not seeds:
        raise FileNotFoundError(f"{run} has no seed-<s>/ directory: not an experiment run directory")
    return seeds[0]


def run_head_dir(run_dir, level: str = "sequence", seed: int | None = None) -> Path:
    """The trained head of `level` (and `seed`, default the lowest) in an experiment run directory."""
    run = Path(run_dir)
    head = run / f"seed-{_seed(run, seed)}" / f"train-{level}" / "head"
    if not head.is_dir():
        raise FileNotFoundError(f"no trained {level} head in {run}: {head} does not exist (has the run finished?)")
    return head


def run_card_facts(run_dir, level: str = "sequence", seed: int | None = None) -> dict:
    """The `model_card_kwargs` of a run's head: the reward per task and the size of its collection, the base
    model's revision (the collection's record, else the run's config), and the run's scale-free results table (from
    summary.json, when the run has written it)."""
    run = Path(run_dir)
    facts = collection_card_facts(run / f"seed-{_seed(run, seed)}" / f"collect-{level}")
    config = run / "experiment_config.json"
    if facts["base_model_revision"] is None and config.is_file():  # the revision the run asked for, if any
        cfg = json.loads(config.read_text())
        facts["base_model_revision"] = cfg.get("model_revision")
    summary = run / "summary.json"
    if summary.is_file():
        sf = json.loads(summary.read_text()).get("scale_free")
        if sf:
            facts["results_table"] = "\n".join(markdown_sections(sf))
    return facts


def write_model_card(out_dir, head: AdaptiveDecoderHead | None = None, run_dir=None, level: str = "sequence",
                     seed: int | None = None, repo_id: str | None = None, **facts) -> Path:
    """Render a head's model card into `out_dir`/README.md (created; replaced if present) and return its path.

    With `run_dir` the head (unless given) and the facts come from that experiment run (`run_card_facts`);
    `facts` (base_model_revision, reward, collection_size, results_table) add to or override them.
    """
    if head is None and run_dir is None:
        raise ValueError("write_model_card needs a head or a run_dir")
    if run_dir is not None:
        facts = {**run_card_facts(run_dir, level, seed), **facts}
        if head is None:
            head = AdaptiveDecoderHead.from_pretrained(run_head_dir(run_dir, level, seed))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "README.md"
    head.generate_model_card(repo_id=repo_id, **facts).save(path)
    return path


def publish_run(run_dir, hub_model_id: str, levels=("sequence",), seed: int | None = None, **push_kwargs) -> dict:
    """Upload each level's head of a finished run with its model card; returns {level: commit URL}. With one level
    the repo is `hub_model_id`, with several `hub_model_id-<level>`. `push_kwargs`: private, token, branch, ..."""
    urls = {}
    for level in levels:
        repo = hub_model_id if len(levels) == 1 else f"{hub_model_id}-{level}"
        head = AdaptiveDecoderHead.from_pretrained(run_head_dir(run_dir, level, seed))
        urls[level] = str(head.push_to_hub(repo, model_card_kwargs=run_card_facts(run_dir, level, seed),
                                           **push_kwargs))
    return urls


__all__ = ["publish_run", "run_card_facts", "run_head_dir", "write_model_card"]
