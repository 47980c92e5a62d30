"""eval/headroom.py on a tiny random Llama: fixed configurations only, per-task reward vs temperature, and the
dev-picked oracle minus the best single temperature (normalized) with its paired CI."""

import importlib.util
import json
from pathlib import Path

import pytest

from adaptive_decoder.evaluation.headroom import (group_reward, group_size_markdown, group_size_report, headroom_markdown,
                                                  regrouped_rewards)
from adaptive_decoder.tasks import get_task
from test_eval_suite import save_tiny

REPO = Path(__file__).resolve().parents[1]


def test_headroom_command_on_tiny_model(tmp_path, capsys):
    model = save_tiny(tmp_path / "model")
    spec = importlib.util.spec_from_file_location("headroom_cli", REPO / "eval" / "headroom.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "out"
    rep = mod.main(["--config", str(REPO / "configs" / "eval" / "headroom_control.yaml"), "--model", str(model),
                    "--output_dir", str(out), "--num_prompts", "3", "--num_dev_prompts", "2", "--num_samples", "4",
                    "--max_new_tokens", "4", "--n_bootstrap", "100", "--progress", "false",
                    "--methods", "greedy", "random"])  # methods are replaced by greedy + fixed + oracle
    printed = capsys.readouterr().out
    assert "HEADROOM: oracle - best single fixed" in printed
    assert set(rep["tasks"]) == {"control_qa", "control_numbers"}
    for t in rep["tasks"].values():
        assert list(t["temperatures"]) == ["T=0.0,k=10", "T=0.4,k=10", "T=0.8,k=10", "T=1.2,k=10"]
        assert t["oracle_choice"] in t["temperatures"]
    g = rep["gain"]
    assert g["lo"] <= g["mean"] <= g["hi"]
    # the oracle picks per task among the grid on dev, so on dev it can never lose to the best single setting;
    # the reported gain is on test, the normalized difference of the suite's scale-free report
    res = json.loads((out / "results.json").read_text())
    assert g == res["scale_free"]["differences"]["oracle"][rep["best_single"]]["overall"]
    assert set(res["methods"]) == {"greedy", "T=0.0,k=10", "T=0.4,k=10", "T=0.8,k=10", "T=1.2,k=10", "oracle"}
    # control_numbers' distinct_valid compares a prompt's samples: its rewards are rescored in pairs too, and the
    # group of all 4 is the evaluation's own number
    gs = rep["group_sizes"]
    assert set(gs) == {"control_numbers"} and gs["control_numbers"]["group_sizes"] == [2, 4]
    for f, row in rep["tasks"]["control_numbers"]["temperatures"].items():
        assert gs["control_numbers"]["rewards"][f]["4"]["mean"] == pytest.approx(row["reward"]["mean"])
    assert "control_numbers: the group reward vs the group it is scored in" in printed
    assert (out / "headroom.md").read_text() == headroom_markdown(json.loads((out / "headroom.json").read_text()))


def _unit(method, pid, texts, rewards):
    return {"method": method, "task": "constrained_writing", "split": "test", "prompt_id": pid,
            "example": {"id": pid, "prompt": "p", "concepts": ["x"]},
            "samples": [{"text": t, "metrics": {"reward": r}} for t, r in zip(texts, rewards)]}


def test_group_size_report_rescores_novelty_in_smaller_groups_by_hand():
    # novelty (unigrams) = 1 - max Jaccard with the group's other samples. A: "a b", "c d", "a b", "e f".
    # Among all 4: samples 0 and 2 are copies -> 0, 0; samples 1 and 3 share nothing -> 1, 1; mean 0.5.
    # In groups of 2, (0, 1) and (2, 3) share nothing -> 1 each; mean 1.0. B: 4 disjoint texts -> 1.0 either way.
    # Each stored reward is novelty among 4 plus 0.25 from a component that is not rescored.
    task = get_task("constrained_writing", reward={"novelty": {"weight": 1.0, "n": 1}})
    a, b = ["a b", "c d", "a b", "e f"], ["a", "b", "c", "d"]
    grp = group_reward(task)
    assert regrouped_rewards(task, grp, a, {"id": "0"}, [0.25, 1.25, 0.25, 1.25], 2) == [1.25] * 4
    with pytest.raises(ValueError, match="group_size must be >= 2 and divide the 4 samples, got 3"):
        regrouped_rewards(task, grp, a, {"id": "0"}, [0.0] * 4, 3)
    units = [_unit("A", str(i), a, [0.25, 1.25, 0.25, 1.25]) for i in range(3)]
    units += [_unit("B", str(i), b, [1.25] * 4) for i in range(3)]
    rep = group_size_report(units, {"constrained_writing": task}, ["A", "B"], n_bootstrap=200)["constrained_writing"]
    assert rep["k"] == 4 and rep["n"] == 3 and rep["group_sizes"] == [2, 4]
    assert rep["rewards"]["A"]["4"]["mean"] == pytest.approx(0.75) and rep["rewards"]["A"]["2"]["mean"] == pytest.approx(1.25)
    assert rep["rewards"]["B"]["4"]["mean"] == pytest.approx(1.25) and rep["rewards"]["B"]["2"]["mean"] == pytest.approx(1.25)
    assert rep["best"]["4"] == "B"
    assert rep["margins"]["A"]["4"]["mean"] == pytest.approx(0.5) and rep["margins"]["A"]["2"]["mean"] == pytest.approx(0.0)
    # B's clear lead among 4 is gone among 2: a collection scoring pairs would not learn to prefer B
    assert rep["misleading_sizes"] == [2]
    md = "\n".join(group_size_markdown({"constrained_writing": rep}))
    assert "| B − A | +0.000 [+0.000, +0.000] | +0.500 [+0.500, +0.500] |" in md
    assert "Scored in groups of 2, this reward does not rank the settings" in md and "`twins: 3`" in md


def test_group_size_report_skips_tasks_without_a_group_reward():
    task = get_task("constrained_writing", reward={"concepts": {"weight": 1.0}})
    assert group_reward(task) is None
    units = [_unit("A", "0", ["a", "b", "c", "d"], [1.0] * 4)]
    assert group_size_report(units, {"constrained_writing": task}, ["A"]) == {}
