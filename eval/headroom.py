"""Headroom: reward vs temperature per task and the per-task oracle's gain.

The recipe is adaptive_decoder/cli/headroom.py; `adaptive-decoder headroom` runs the same `main`.

    python eval/headroom.py --config FILE [--OPTION VALUE ...]
"""

from adaptive_decoder.cli.headroom import main  # noqa: F401
from adaptive_decoder.configs import run_recipe

if __name__ == "__main__":
    run_recipe(main)
