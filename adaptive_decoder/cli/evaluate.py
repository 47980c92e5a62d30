"""Evaluate decoding methods (greedy, fixed temperatures, random, oracle, AD heads, HAG) on the task suite.

    adaptive-decoder evaluate --config configs/eval/quick.yaml
    python eval/run_suite.py --config configs/eval/quick.yaml     # the same, from a clone
    python eval/run_suite.py --config configs/eval/full.yaml --output_dir runs/eval_full --num_prompts 500

Every EvalConfig field can be set in the YAML or overridden on the command line; an unknown key is an error
naming it. Re-running with the same output_dir resumes: finished (method, task, prompt) units are skipped, and
adding methods or tasks computes only the new units. Changing anything that alters samples (model, seed, lengths,
subsets, a head's weights, ...) is refused for an existing output_dir.
A second run on an output_dir that a running one is writing to is refused, naming that process.
"""

import logging
import os

os.environ.setdefault("WANDB_MODE", "offline")


from adaptive_decoder.cli import CONFIG_DIR  # noqa: E402
from adaptive_decoder.configs import parse_recipe_config, run_recipe  # noqa: E402
from adaptive_decoder.evaluation.config import EvalConfig  # noqa: E402
from adaptive_decoder.evaluation.harness import run_evaluation  # noqa: E402


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (cfg,) = parse_recipe_config((EvalConfig,), argv, __doc__, config_dir=CONFIG_DIR / "evaluate")
    results = run_evaluation(cfg)
    print((open(os.path.join(cfg.output_dir, "results.md")).read()))
    print(f"wrote {cfg.output_dir}/results.json, results.md and plots; wall clock {results['wall_seconds']:.1f} s")
    if results.get("skipped_heads"):  # said last: a run that evaluated no head must not look like one that did
        print(f"WARNING: no head at {', '.join(results['skipped_heads'])}: method 'adaptive' was not evaluated "
              "(train one with `make demo`, or pass --head_paths)")


if __name__ == "__main__":
    run_recipe(main)
