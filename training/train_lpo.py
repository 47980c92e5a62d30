"""Train a head with LPO on a sample collection.

The recipe is adaptive_decoder/cli/train.py; `adaptive-decoder train` runs the same `main`.

    python training/train_lpo.py --config FILE [--OPTION VALUE ...]
"""

from adaptive_decoder.cli.train import main  # noqa: F401
from adaptive_decoder.configs import run_recipe

if __name__ == "__main__":
    run_recipe(main)
