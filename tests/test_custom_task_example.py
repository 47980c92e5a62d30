"""examples/custom_task end to end, as docs/guide.md runs it from the repository root with
`PYTHONPATH=examples/custom_task` (here: the working directory and sys.path set the same way), on a tiny random
Llama and smaller splits: headroom first, then the experiment, whose results are keyed by the task's name (not
its file's path) and whose collection, evaluation and model card carry the example's own rewards."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from adaptive_decoder import cli

REPO = Path(__file__).resolve().parents[1]

EXAMPLE = REPO / "examples" / "custom_task"
TASK = "letter_words"  # my_task.yaml's `task:` key
OWN = ("my_rewards:letter_answer", "my_rewards:OneWord")  # the example's rewards, by import path
# the guide's commands with the model and the sizes replaced: a random model and a few prompts, so it runs in seconds
SMALL = ["--torch_threads", "1", "--n_bootstrap", "50", "--report_to", "none"]


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

    got = my_rewards.letter_answer(["Banana.", "bagel", "Cherry", ""], letter=["B"] * 4, answers=[["banana"]] * 4,
                                   prompts=["p"] * 4)
    assert got == [1.0, 0.5, 0.0, 0.0]
    assert my_rewards.OneWord().score(["Banana", "a ripe banana", ""], [{}] * 3) == [1.0, pytest.approx(1 / 3), 0.0]


def test_headroom_then_experiment_on_a_tiny_model(example_env, tiny_model_dir, tmp_path):
    head_dir = tmp_path / "headroom"
    assert cli.main(["headroom", "--config", "examples/custom_task/headroom.yaml", "--model", str(tiny_model_dir),
                     "--output_dir", str(head_dir), "--num_prompts", "3", "--num_dev_prompts", "2", *SMALL]) == 0
    rep = json.loads((head_dir / "headroom.json").read_text())
    assert TASK in json.dumps(rep) and "my_task.yaml" not in json.dumps(rep)

    run_dir = tmp_path / "run"
    argv = ["experiment", "--config", "examples/custom_task/experiment.yaml", "--model", str(tiny_model_dir),
            "--run_dir", str(run_dir), "--num_train", "4", "--num_dev", "2", "--num_test", "3", "--plots", "false",
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
