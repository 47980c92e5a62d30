"""Evaluate decoding methods on the task suite.

The recipe is adaptive_decoder/cli/evaluate.py; `adaptive-decoder evaluate` runs the same `main`.

    python eval/run_suite.py --config FILE [--OPTION VALUE ...]
"""

from adaptive_decoder.cli.evaluate import main  # noqa: F401
from adaptive_decoder.configs import run_recipe

if __name__ == "__main__":
    run_recipe(main)
