"""Run (or resume) an experiment: collect -> train -> evaluate -> aggregate.

The recipe is adaptive_decoder/cli/experiment.py; `adaptive-decoder experiment` runs the same `main`.

    python experiments/run.py --config FILE [--OPTION VALUE ...]
"""

from adaptive_decoder.cli.experiment import main  # noqa: F401
from adaptive_decoder.configs import run_recipe

if __name__ == "__main__":
    run_recipe(main)
