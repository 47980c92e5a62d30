"""examples/custom_task end to end, as docs/guide.md runs it from the repository root with
`PYTHONPATH=examples/custom_task` (here: the working directory and sys.path set the same way), on a tiny random
Llama and smaller splits: headroom first, then the experiment, whose results are keyed by the task's name (not
its file's path) and whose collection, evaluation and model card carry the example's own rewards."""

import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from adaptive_decoder import cli

REPO = Path(__file__).resolve().parents[1]

EXAMPLE = REPO / "examples" / "custom_task"
TASK = "letter_words"  # my_task.yaml's `task:` key
OWN = ("my_rewards:letter_answer", "my_rewards:OneWord")  # the example's rewards, by import path
GUIDE = REPO / "docs" / "guide.md"
# the commands docs/guide.md and the example's README.md give; the test runs each with the model and the sizes
# replaced (a random model and a few prompts, so it runs in seconds)
COMMANDS = {
    "headroom": "PYTHONPATH=examples/custom_task adaptive-decoder headroom --config examples/custom_task/headroom.yaml",
    "experiment": "PYTHONPATH=examples/custom_task adaptive-decoder experiment --config "
                  "examples/custom_task/experiment.yaml",
}
SMALL = ["--torch_threads", "1", "--n_bootstrap", "50", "--report_to", "none"]


def _argv(command: str) -> list[str]:
    """The `adaptive-decoder` arguments of a documented command (its PYTHONPATH is the example_env fixture's)."""
    env, prog, *args = shlex.split(COMMANDS[command])
    assert env == "PYTHONPATH=examples/custom_task" and prog == "adaptive-decoder"
    return args


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), re.S)


@pytest.fixture
def example_env(monkeypatch):
    """The guide's working directory and PYTHONPATH; my_rewards imported afresh."""
    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)


def test_the_example_files_agree(example_env):
    """The task file reads its JSONL relative to itself; both configs use it by path, on one grid."""
    from adaptive_decoder.tasks import task_name

    exp = yaml.safe_load((EXAMPLE / "experiment.yaml").read_text())
    head = yaml.safe_load((EXAMPLE / "headroom.yaml").read_text())
    spec = yaml.safe_load((EXAMPLE / "my_task.yaml").read_text())
    assert list(exp["tasks"]) == list(head["tasks"]) == ["examples/custom_task/my_task.yaml"]
    assert task_name(str(EXAMPLE / "my_task.yaml")) == TASK and set(OWN) <= set(spec["reward"])
    assert head["temperatures"] == exp["temperatures"] == exp["head"]["temperature_bins"]
    assert head["num_samples"] == exp["eval"]["num_samples"] == exp["collect"]["twins"] + 1
    n = len((EXAMPLE / spec["dataset"]["path"]).read_text().splitlines())
    assert n >= exp["num_train"] + exp["num_dev"] + exp["num_test"]


def test_without_pythonpath_the_reward_import_fails_in_one_line_naming_the_fix(monkeypatch):
    from adaptive_decoder.tasks import TaskFileError, get_task

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(EXAMPLE))])
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)
    with pytest.raises(TaskFileError, match=r"cannot import 'my_rewards' .*add its directory to PYTHONPATH") as e:
        get_task("examples/custom_task/my_task.yaml")
    assert "\n" not in str(e.value)


def test_the_rewards_score_as_documented(example_env):
    import my_rewards

    got = my_rewards.letter_answer(["Banana.", "A banana", "bagel", "Cherry", ""], letter=["B"] * 5,
                                   answers=[["banana"]] * 5, prompts=["p"] * 5)
    assert got == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert my_rewards.OneWord().score(["Banana", "a ripe banana", ""], [{}] * 3) == [1.0, pytest.approx(1 / 3), 0.0]


def test_headroom_then_experiment_on_a_tiny_model(example_env, tiny_model_dir, tmp_path):
    head_dir = tmp_path / "headroom"
    assert cli.main([*_argv("headroom"), "--model", str(tiny_model_dir), "--output_dir", str(head_dir),
                     "--num_prompts", "3", "--num_dev_prompts", "2", *SMALL]) == 0
    rep = json.loads((head_dir / "headroom.json").read_text())
    assert TASK in json.dumps(rep) and "my_task.yaml" not in json.dumps(rep)

    run_dir = tmp_path / "run"
    argv = [*_argv("experiment"), "--model", str(tiny_model_dir), "--run_dir", str(run_dir),
            "--num_train", "4", "--num_dev", "2", "--num_test", "3", "--plots", "false",
            "--lpo", json.dumps({**yaml.safe_load((EXAMPLE / "experiment.yaml").read_text())["lpo"],
                                 "num_train_epochs": 2}), *SMALL]
    assert cli.main(argv) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    md = (run_dir / "summary.md").read_text()
    assert [t for t in summary["tasks"] if t != "overall"] == [TASK] and "my_task.yaml" not in md
    assert "adseq" in summary["tasks"][TASK]["methods"]
    seed = run_dir / "seed-0"
    results = json.loads((seed / "eval" / "results.json").read_text())
    assert list(results["tasks"]) == [TASK]

    # the example's rewards scored every collected sample, under their import paths, beside the built-in novelty
    recs = [json.loads(ln) for f in sorted((seed / "collect-sequence" / "shards").glob("*.jsonl"))
            for ln in f.read_text().splitlines()]
    assert recs and {r["task"] for r in recs} == {TASK}
    assert all(set(OWN) | {"novelty", "total"} <= set(r["rewards"]) for r in recs)
    units = [json.loads(ln) for ln in (seed / "eval" / "units.jsonl").read_text().splitlines()]
    assert units and all(set(OWN) <= set(s["metrics"]) for u in units for s in u["samples"])

    # the model card `push_to_hub: true` uploads, rendered locally: it states the task's reward as the file gives it
    from adaptive_decoder.experiment.model_card import write_model_card
    from adaptive_decoder.modeling.model_card import read_card_metadata

    card = read_card_metadata(write_model_card(tmp_path / "card", run_dir=run_dir).read_text())
    assert set(OWN) <= set(card["adaptive_decoder"]["reward"][TASK])


# ------------------------------------------------------------------------------------------------ docs/guide.md
def test_every_command_in_the_guide_and_the_readme_is_one_the_test_runs():
    # the guide's other commands (its later sections) are mapped to their tests in tests/test_docs_commands.py
    lines = [ln.strip() for doc in (GUIDE, EXAMPLE / "README.md") for b in _blocks(doc, "bash")
             for ln in b.splitlines() if ln.strip() and not ln.startswith("#")
             and (doc != GUIDE or "examples/custom_task" in ln)]
    assert lines and set(lines) == set(COMMANDS.values())
    for cfg in ("experiment.yaml", "headroom.yaml"):  # the command in each config's header comment
        assert any(c in (EXAMPLE / cfg).read_text() for c in COMMANDS.values()), cfg


def test_the_guides_snippets_are_the_example_files_and_valid_options(example_env):
    """The task file and experiment shown in the guide are the example's (as far as shown); the other snippets use
    keys the recipes and rewards accept."""
    from adaptive_decoder.experiment.config import ExperimentConfig
    from adaptive_decoder.rewards import reward_options
    from adaptive_decoder.tasks.data_task import DATASET_KEYS

    snippets = [yaml.safe_load(b) for b in _blocks(GUIDE, "yaml")]
    task = yaml.safe_load((EXAMPLE / "my_task.yaml").read_text())
    exp = yaml.safe_load((EXAMPLE / "experiment.yaml").read_text())
    shown_task = next(s for s in snippets if s.get("task") == TASK)
    assert shown_task == {k: task[k] for k in shown_task}
    shown_exp = next(s for s in snippets if s.get("run_dir") == exp["run_dir"])
    for k, v in shown_exp.items():
        assert (v.items() <= exp[k].items()) if isinstance(v, dict) else v == exp[k], k
    (public,) = [s["dataset"] for s in snippets if "hf_id" in (s.get("dataset") or {})]
    assert set(public) <= set(DATASET_KEYS)
    fields = set(ExperimentConfig.__dataclass_fields__)
    model = next(s for s in snippets if "model_revision" in s)
    publish = next(s for s in snippets if "hub_model_id" in s)
    assert set(model) | set(publish) <= fields
    rewards = [s["reward"] for s in snippets if "reward" in s]
    (rm,) = [r["reward_model"] for r in rewards if "reward_model" in r]
    assert set(rm) - {"path"} <= set(reward_options("reward_model"))
    assert all(k in task["reward"] or ":" not in k for r in rewards for k in r)
    import tomllib

    (toml,) = _blocks(GUIDE, "toml")
    eps = tomllib.loads(toml)["project"]["entry-points"]["adaptive_decoder.rewards"]
    assert eps == {"letter_answer": "my_pkg.rewards:letter_answer"}
