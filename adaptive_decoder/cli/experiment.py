"""Run (or resume) the reproduction experiment: collect -> LPO-train ADseq/ADtok -> evaluate -> aggregate over seeds.

    adaptive-decoder experiment --config control                                  # a packaged config, by name
    python experiments/run.py --config configs/experiments/demo_quick.yaml           # < 10 min on 2 CPU cores
    python experiments/run.py --config configs/experiments/demo.yaml                 # what `make demo` runs
    python experiments/run.py --config configs/experiments/smollm2_mix.yaml --run_dir runs/smollm2_mix

Every `adaptive_decoder.experiment.config.ExperimentConfig` field can be set in the YAML or overridden on the command line
(nested option dicts as JSON, e.g. --lpo '{"beta": 0.2}'); an unknown key is an error naming it. Rerunning with the
same run_dir resumes: finished stages are skipped. Results: <run_dir>/summary.md (+ summary.json and PNG plots); the
terminal gets a short verdict ending with a `BAR MET: ...` or `BAR NOT MET: ...` line. With `push_to_hub: true` and
`hub_model_id: user/name` the first seed's head of each level goes to the Hub with a model card
(`adaptive_decoder.experiment.model_card`).
"""

import logging
import os
import time

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


from adaptive_decoder.cli import CONFIG_DIR  # noqa: E402
from adaptive_decoder.configs import parse_recipe_config, run_recipe  # noqa: E402
from adaptive_decoder.evaluation.report import verdict_block  # noqa: E402
from adaptive_decoder.experiment.config import ExperimentConfig  # noqa: E402
from adaptive_decoder.experiment.pipeline import run_experiment  # noqa: E402
from adaptive_decoder.experiment.model_card import publish_run  # noqa: E402


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (cfg,) = parse_recipe_config((ExperimentConfig,), argv, __doc__, config_dir=CONFIG_DIR / "experiment")
    cfg.set_threads()
    t0 = time.time()
    summary = run_experiment(cfg)
    if cfg.push_to_hub:  # once the run is summarised: the model card carries its results table
        summary["hub_commits"] = publish_run(cfg.run_dir, cfg.hub_model_id, cfg.levels, cfg.seeds[0],
                                             private=cfg.hub_private_repo)
        for level, url in summary["hub_commits"].items():
            print(f"pushed the {level} head and its model card: {url}")
    print(f"wrote {os.path.join(cfg.run_dir, 'summary.md')} (every table), summary.json and plots; wall clock "
          f"{time.time() - t0:.1f} s (stages run: {len(summary['stages_run'])}, skipped: {len(summary['stages_skipped'])})")
    print()
    print("\n".join(verdict_block(summary)))  # the BAR line last: what a log tail or a grep finds
    return summary


if __name__ == "__main__":
    run_recipe(main)
