"""Headroom first: reward vs temperature per task, and the dev-picked per-task oracle minus the best single fixed
temperature (normalized, with its paired 95% CI) on the test prompts. Fixed configurations only (greedy, the
temperature grid, the oracle that picks one of them per task on dev): run it before spending an experiment.

    adaptive-decoder headroom --config configs/eval/headroom_control.yaml
    python eval/headroom.py --config configs/eval/headroom_control.yaml     # the same, from a clone

Takes every EvalConfig option (YAML or command line); `methods` is replaced by greedy + fixed + oracle and the
label-free single settings it names (`min_p_mix`, `best_joint_mix`, ...: the headline is then the oracle minus the
best of them, chosen on dev). Writes
headroom.json / headroom.md (and the suite's results.*) in output_dir; re-running resumes. For a task whose reward
compares a prompt's samples (novelty, distinct_valid) it also rescores them in smaller groups, the size an LPO
collection scores them in (1 + collect.twins), and says when that ranks the temperatures otherwise.
"""

import logging
import os

os.environ.setdefault("WANDB_MODE", "offline")

from adaptive_decoder.cli import CONFIG_DIR  # noqa: E402
from adaptive_decoder.configs import parse_recipe_config, run_recipe  # noqa: E402
from adaptive_decoder.evaluation.config import EvalConfig  # noqa: E402
from adaptive_decoder.evaluation.headroom import headroom_line, headroom_markdown, run_headroom  # noqa: E402


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (cfg,) = parse_recipe_config((EvalConfig,), argv, __doc__, config_dir=CONFIG_DIR / "headroom")
    rep = run_headroom(cfg)
    print(headroom_markdown(rep))
    print(f"wrote {cfg.output_dir}/headroom.json and headroom.md; wall clock {rep['wall_seconds']:.1f} s")
    print(headroom_line(rep))
    return rep


if __name__ == "__main__":
    run_recipe(main)
