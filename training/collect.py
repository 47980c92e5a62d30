"""Collect reward-scored samples for LPO.

The recipe is adaptive_decoder/cli/collect.py; `adaptive-decoder collect` runs the same `main`.

    python training/collect.py --config FILE [--OPTION VALUE ...]
"""

from adaptive_decoder.cli.collect import CollectConfig, collecting_head, main  # noqa: F401
from adaptive_decoder.configs import run_recipe

if __name__ == "__main__":
    run_recipe(main)
