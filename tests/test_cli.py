"""The `adaptive-decoder` command (adaptive_decoder.cli): its subcommands, the repository scripts as wrappers of
the same `main`, and `--config NAME` finding a packaged config."""

import importlib
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from adaptive_decoder import cli
from adaptive_decoder.configs import ConfigError, named_config, parse_recipe_config
from adaptive_decoder.experiment.config import ExperimentConfig

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"collect": "training/collect.py", "train": "training/train_lpo.py", "evaluate": "eval/run_suite.py",
           "experiment": "experiments/run.py", "headroom": "eval/headroom.py"}


def test_help_lists_every_subcommand_with_a_line(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ["collect", "train", "evaluate", "experiment", "headroom", "export", "serve", "lmeval"]:
        assert name in out and cli.COMMANDS[name][1] in " ".join(out.split())
    assert cli.main([]) == 2


def test_unknown_subcommand_is_one_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["colect"])
    assert e.value.code == 2 and "invalid choice: 'colect'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_repository_scripts_run_the_subcommands_main(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / SCRIPTS[name])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main is importlib.import_module(cli.COMMANDS[name][0]).main


def test_config_name_finds_the_packaged_config_and_a_file_path_wins(tmp_path, monkeypatch):
    d = cli.CONFIG_DIR / "experiment"
    assert named_config("control", d) == str(d / "control.yaml")
    assert {"control", "control_quick"} <= set(cli.packaged_configs("experiment"))
    monkeypatch.chdir(tmp_path)
    Path("control").write_text("run_dir: x\n")
    assert named_config("control", d) == "control"  # an existing file is what the user meant
    assert named_config("my/control.yaml", d) == "my/control.yaml"  # a path is left to load_config
    with pytest.raises(ConfigError, match=r"config file not found: contrl \(a file path, or one of the packaged "
                                          r"configs \['control', 'control_quick'\]\)"):
        named_config("contrl", d)


def test_packaged_control_config_parses_the_same_as_the_repository_one(tmp_path):
    run = ["--run_dir", str(tmp_path / "r")]
    (packaged,) = parse_recipe_config((ExperimentConfig,), ["--config", "control", *run],
                                      config_dir=cli.CONFIG_DIR / "experiment")
    (repo,) = parse_recipe_config((ExperimentConfig,), ["--config", str(REPO / "configs/experiments/control.yaml"), *run])
    assert packaged == repo and list(packaged.tasks) == ["control_qa", "control_numbers"]


def test_subcommand_config_mistake_is_one_line_naming_the_command(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["adaptive-decoder"])
    with pytest.raises(SystemExit) as e:
        cli.main(["experiment", "--config", "nope"])
    assert e.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err[-1].startswith("adaptive-decoder experiment: error: config file not found: nope")


def test_plain_subcommands_pass_their_arguments_on(capsys):
    """serve and export parse their own arguments; serve refuses a directory that is not an export in one line."""
    with pytest.raises(SystemExit) as e:
        cli.main(["serve", str(REPO)])
    assert "not an exported adaptive-decoder directory" in str(e.value) and "\n" not in str(e.value)
    cli.main(["serve", "--help"])
    assert "adaptive-decoder serve MODEL_DIR" in capsys.readouterr().out


def test_collect_then_train_subcommands_on_the_tiny_model(tiny_model_dir, tmp_path):
    """`adaptive-decoder collect` then `adaptive-decoder train` on its collection, as the README shows them (here
    with the tiny configs and model): samples and pairs on disk, then a trained head."""
    from adaptive_decoder import AdaptiveDecoderHead

    col, out = tmp_path / "collect", tmp_path / "train"
    assert cli.main(["collect", "--config", str(REPO / "configs" / "lpo" / "collect_tiny.yaml"),
                     "--base_model", str(tiny_model_dir), "--output_dir", str(col)]) == 0
    assert (col / "manifest.json").exists() and list((col / "shards").glob("*.jsonl"))
    head = yaml.safe_load((REPO / "configs" / "lpo" / "collect_tiny.yaml").read_text())["head"]  # the collection's
    assert cli.main(["train", "--config", str(REPO / "configs" / "lpo" / "train_tiny.yaml"), "--collection_dir", str(col),
                     "--synthetic_pairs", "0", "--head", json.dumps(head), "--output_dir", str(out)]) == 0
    AdaptiveDecoderHead.from_pretrained(out / "head")
