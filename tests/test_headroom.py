"""eval/headroom.py on a tiny random Llama: fixed configurations only, per-task reward vs temperature, and the
dev-picked oracle minus the best single temperature (normalized) with its paired CI."""

import importlib.util
import json
from pathlib import Path

import pytest

from adaptive_decoder.evaluation.headroom import (group_reward, group_size_markdown, group_size_report, headroom_markdown,
                                                  regrouped_rewards)
from adaptive_decoder.tasks import get_task
from eval_support import save_tiny

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


def _hand_results(mix_dev_score: float) -> dict:
    """Two tasks, two test prompts each, grid T=0.0 / T=1.0 (dev means a: 0 / 1, b: 0 / 2, so T=1.0 is the best
    single temperature with dev score 1.0), a per-task oracle that picks T=1.0's rewards, and one pooled fit,
    min_p_mix, whose chosen setting has `mix_dev_score`. Test rewards, normalized by the dev grid:
    a: T=1.0 1, 1; min_p_mix 1.5, 0.5 (raw 1.5, 0.5)    b: T=1.0 1, 1; min_p_mix 1.5, 1.5 (raw 3, 3)."""
    from adaptive_decoder.evaluation.scalefree import units_report

    raw = {("a", "test"): {"T=0.0": [0, 0], "T=1.0": [1, 1], "oracle": [1, 1], "min_p_mix": [1.5, 0.5]},
           ("b", "test"): {"T=0.0": [0, 0], "T=1.0": [2, 2], "oracle": [2, 2], "min_p_mix": [3, 3]},
           ("a", "dev"): {"T=0.0": [0, 0], "T=1.0": [1, 1]}, ("b", "dev"): {"T=0.0": [0, 0], "T=1.0": [2, 2]}}
    units = [{"method": m, "task": t, "split": s, "prompt_id": str(i), "reward": float(r)}
             for (t, s), by_m in raw.items() for m, rs in by_m.items() for i, r in enumerate(rs)]
    methods = ["T=0.0", "T=1.0", "oracle", "min_p_mix"]
    fits = {"oracle": {"chosen": "T=1.0", "dev_scores": {"T=0.0": 0.0, "T=1.0": 1.0}},
            "min_p_mix": {"chosen": "T=1.0,min_p=0.1", "dev_scores": {"T=1.0,min_p=0.1": mix_dev_score}, "pooled": True}}
    sf = units_report(units, ["a", "b"], ["T=0.0", "T=1.0"], methods, n_boot=200, seed=0)
    return {"tasks": {t: {"oracle": fits} for t in ("a", "b")}, "scale_free": sf, "units": units}


def test_label_free_headroom_by_hand():
    """min_p_mix scores 1.25 on dev against T=1.0's 1.0, so it is the best label-free single setting. The oracle
    minus it, normalized: task a (1 + 1) / 2 - (1.5 + 0.5) / 2 = 0, task b 1 - 1.5 = -0.5 on both prompts (so its
    interval is the point), overall -0.25. At a tie on dev the fixed temperature (the simpler setting) is kept."""
    from adaptive_decoder.evaluation.headroom import headroom_line, label_free_headroom, label_free_markdown

    lf = label_free_headroom(_hand_results(1.25))
    assert lf["best"] == "min_p_mix" and lf["chosen_on"] == "dev"
    assert {n: (s["chosen"], s["score"]) for n, s in lf["settings"].items()} == {
        "T=1.0": ("T=1.0", 1.0), "min_p_mix": ("T=1.0,min_p=0.1", 1.25)}
    assert lf["normalized"]["mean"] == pytest.approx(1.25)
    assert lf["gain"]["mean"] == pytest.approx(-0.25) and lf["gain"]["lo"] <= -0.25 <= lf["gain"]["hi"]
    assert lf["per_task_gain"]["a"]["mean"] == pytest.approx(0.0)
    assert [lf["per_task_gain"]["b"][k] for k in ("mean", "lo", "hi")] == pytest.approx([-0.5, -0.5, -0.5])
    assert "HEADROOM: oracle - best label-free single setting (min_p_mix) = -0.250 [" in "\n".join(label_free_markdown(lf))
    assert headroom_line({"label_free": lf}).startswith("HEADROOM: oracle - best label-free single setting (min_p_mix)")

    tie = label_free_headroom(_hand_results(1.0))
    assert tie["best"] == "T=1.0" and tie["gain"]["mean"] == pytest.approx(0.0)  # oracle == T=1.0 on both tasks
    no_fit = _hand_results(1.0)
    # a fit that is not pooled (tuned per task, with labels) is no label-free setting (one dict serves both tasks)
    no_fit["tasks"]["a"]["oracle"]["min_p_mix"]["pooled"] = False
    assert label_free_headroom(no_fit) is None
