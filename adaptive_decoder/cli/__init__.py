"""The `adaptive-decoder` command: one subcommand per recipe.

    adaptive-decoder experiment --config control          # collect -> train -> evaluate, a packaged config by name
    adaptive-decoder collect --config my_collect.yaml
    adaptive-decoder <subcommand> --help

Each subcommand runs the same `main(argv)` as the repository script it names (training/collect.py, ...), so a
config, its flags and its outputs are the same either way. `--config NAME` (no path, no .yaml) names a config
shipped in the package (`adaptive_decoder/cli/configs/<subcommand>/NAME.yaml`) when no file NAME exists; a task
named in a config is found in ./configs/tasks/, then among the packaged task files, then on
$ADAPTIVE_DECODER_TASK_PATH. A recipe's module is imported only once its subcommand is chosen.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# subcommand -> (module, one-line description, repository script that runs the same main)
COMMANDS = {
    "collect": ("adaptive_decoder.cli.collect", "sample responses with a head and score them (LPO data)",
                "training/collect.py"),
    "train": ("adaptive_decoder.cli.train", "train a head with LPO on a collection", "training/train_lpo.py"),
    "evaluate": ("adaptive_decoder.cli.evaluate", "evaluate decoding methods and heads on tasks", "eval/run_suite.py"),
    "experiment": ("adaptive_decoder.cli.experiment", "collect -> train -> evaluate over seeds (resumable)",
                   "experiments/run.py"),
    "headroom": ("adaptive_decoder.cli.headroom", "reward vs temperature per task, before an experiment",
                 "eval/headroom.py"),
    "merge": ("adaptive_decoder.cli.merge", "merge the shards of a collection (collect --shard INDEX/COUNT) into one",
              "python -m adaptive_decoder.cli merge"),
    "compare": ("adaptive_decoder.cli.compare", "one run's trained head minus another's on the same test prompts",
                "python -m adaptive_decoder.cli compare"),
    "export": ("adaptive_decoder.integrations.vllm.export", "write a model directory vLLM serves with a head",
               "python -m adaptive_decoder.integrations.vllm.export"),
    "serve": ("adaptive_decoder.integrations.vllm.serve", "serve an exported head with vLLM's OpenAI server",
              "python -m adaptive_decoder.integrations.vllm.serve"),
    "lmeval": ("adaptive_decoder.integrations.lmeval.__main__",
               "lm-evaluation-harness's command line with the adaptive-decoder model registered",
               "python -m adaptive_decoder.integrations.lmeval"),
}
# subcommands that are not YAML recipes: their own argument parsers take the rest of the command line
PLAIN = ("export", "serve", "lmeval", "merge", "compare")


def packaged_configs(command: str) -> list[str]:
    """The names `--config NAME` accepts for `command` (the YAML files shipped for it)."""
    d = CONFIG_DIR / command
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def parser() -> argparse.ArgumentParser:
    clone = "; ".join(f"{name}: {script}" for name, (_, _, script) in COMMANDS.items())
    ap = argparse.ArgumentParser(prog="adaptive-decoder", description=__doc__,
                                 epilog=textwrap.fill(f"The same recipes in a clone of the repository: {clone}.", 110),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="SUBCOMMAND", title="subcommands")
    for name, (_, text, _) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return ap


def main(argv=None) -> int:
    """Run `adaptive-decoder SUBCOMMAND [OPTIONS]`; returns the exit status (0 on success)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        ap = parser()
        if not argv:
            ap.print_help()
            return 2
        ap.parse_args(argv[:1])  # --help, or an unknown subcommand: argparse prints and exits
        return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    # usage lines and one-line errors then read "adaptive-decoder collect: ...", the command the user typed
    sys.argv = [f"adaptive-decoder {name}", *rest]
    if name in PLAIN:
        module.main(rest)
    else:
        from ..configs import run_recipe

        run_recipe(module.main, rest)
    return 0


__all__ = ["COMMANDS", "CONFIG_DIR", "main", "packaged_configs"]
