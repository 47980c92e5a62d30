"""best_joint_mix: ONE joint (temperature, top-p, top-k, min-p) config for the whole mix, chosen on the pooled,
per-task-normalized dev reward at the tuned baselines' budget; a label-free method the harness runs by its traits,
and that the headroom report compares the per-task oracle with."""

import json

import pytest

from adaptive_decoder.evaluation.harness import mix_normalizer, run_evaluation
from adaptive_decoder.evaluation.headroom import headroom_config, label_free_settings, run_headroom
from adaptive_decoder.evaluation.scalefree import rewards_by_prompt
from adaptive_decoder.methods.base import build_policies, controls, method_traits
from adaptive_decoder.methods.fitted import OraclePolicy
from adaptive_decoder.methods.joint import JOINT_GRID, joint_grid

from eval_support import save_tiny, tiny_cfg, units_by
from test_methods import dev_results

TASKS = ["gsm8k", "translation"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


def test_its_traits_make_it_a_label_free_pooled_fit_not_a_control():
    t = method_traits("best_joint_mix")
    assert (t.needs_dev, t.pooled, t.is_control, t.takes_heads, t.uses_head_bins) == (True, True, False, False, False)
    assert t.run_options == ("temperatures", "top_p", "top_k", "budget")  # the anchors' grid, and its budget
    assert controls(["oracle", "best_joint_mix", "min_p_mix"]) == ["oracle"]
    assert label_free_settings(["greedy", "fixed", "oracle", "best_joint", "min_p", "min_p_mix", "meanshift",
                                "random", "best_joint_mix"]) == ["min_p_mix", "best_joint_mix"]


def test_the_default_grid_has_the_oracles_budget():
    assert len(JOINT_GRID) == 6 and joint_grid(6) == JOINT_GRID  # as many as the default temperature grid
    assert joint_grid(4) == [JOINT_GRID[i] for i in (0, 2, 3, 5)]  # round(i * 5 / 3)
    assert joint_grid(1) == [JOINT_GRID[3]]
    [p] = build_policies("best_joint_mix", budget=4, temperatures=[0.0, 0.4, 0.8, 1.2])
    assert [c.name for c in p.candidates] == ["T=0.0", "T=0.7,p=0.95,k=50,min_p=0.1", "T=1.0,p=0.9,min_p=0.2",
                                              "T=1.2,min_p=0.1"]
    assert p.candidates[1].config == {"temperature": 0.7, "top_p": 0.95, "top_k": 50, "min_p": 0.1}
    assert [a.name for a in p.anchors] == ["T=0.0", "T=0.4", "T=0.8", "T=1.2"]
    d = p.describe()
    assert d["pooled"] is True and d["role"] == "sampler" and len(d["grid"]) == 4
    with pytest.raises(ValueError, match="configs= has 1 entries but the fixed-temperature grid has 2"):
        build_policies("best_joint_mix", budget=2, configs=[{"temperature": 0.5}])
    with pytest.raises(ValueError, match="give configs= with 7 joint configs"):
        build_policies("best_joint_mix", budget=7)
    with pytest.raises(ValueError, match="every config needs a temperature"):
        build_policies("best_joint_mix", budget=1, configs=[{"top_p": 0.9}])
    with pytest.raises(ValueError, match="min_p"):  # a bad value fails when the method is built
        build_policies("best_joint_mix", budget=1, configs=[{"temperature": 1.0, "min_p": 1.5}])


def test_the_pooled_normalized_dev_mean_picks_a_config_no_single_tasks_best_would():
    """Hand numbers. Grid anchors: task a T=0 0.0, T=1 1.0; task b T=0 0.0, T=1 10.0 (10x the scale).
    Normalized dev means: X = (1.0, 0.0), Y = (0.7, 0.7), Z = (0.0, 1.0); pooled over tasks X 0.5, Y 0.7, Z 0.5,
    so Y wins, though task a's best is X and task b's is Z (the per-task best_joint picks those), and the raw pooled
    mean (X 0.5, Y 3.85, Z 5.0) would pick Z."""
    configs = [{"temperature": 0.3, "top_k": 20}, {"temperature": 0.7, "top_p": 0.9, "min_p": 0.1},
               {"temperature": 1.2, "min_p": 0.05}]
    [p] = build_policies("best_joint_mix", budget=3, temperatures=[0.0, 1.0], configs=configs)
    x, y, z = (c.name for c in p.candidates)
    assert [q.name for q in p.dev_policies()] == [x, y, z, "T=0.0", "T=1.0"]
    dev = {"a": {"T=0.0": {"1": 0.0, "2": 0.0}, "T=1.0": {"1": 1.0, "2": 1.0},
                 x: {"1": 1.0, "2": 1.0}, y: {"1": 0.6, "2": 0.8}, z: {"1": 0.0, "2": 0.0}},
           "b": {"T=0.0": {"1": 0.0, "2": 0.0}, "T=1.0": {"1": 10.0, "2": 10.0},
                 x: {"1": 0.0, "2": 0.0}, y: {"1": 7.0, "2": 7.0}, z: {"1": 9.0, "2": 11.0}}}
    for task in ("a", "b"):  # pooled: the task being decoded does not change the fit
        assert p.fit(dev_results(dev, task, mix_normalizer)).name == y
        assert p.dev_scores == pytest.approx({x: 0.5, y: 0.7, z: 0.5})
    assert p.fixed_config() == {"temperature": 0.7, "top_p": 0.9, "top_k": 0, "min_p": 0.1}
    assert p.fit_summary() == {"chosen": y, "dev_scores": p.dev_scores, "pooled": True}
    per_task = OraclePolicy(p.candidates, name="best_joint")
    assert [per_task.fit(dev_results(dev, t)).name for t in ("a", "b")] == [x, z]
    with pytest.raises(ValueError, match="best_joint_mix: its fit needs dev.normalizer"):
        p.fit(dev_results(dev))


def test_the_harness_runs_it_by_its_traits_and_decodes_every_task_with_one_config(tiny_dir, tmp_path):
    # sampled configs only, so the chosen one decodes with its min-p (the default grid's greedy entry often wins
    # on a random model); three of them: the budget is the grid's size, and any other count is refused
    configs = [{"temperature": 0.5, "top_k": 20, "min_p": 0.1}, {"temperature": 1.0, "top_p": 0.9, "min_p": 0.2},
               {"temperature": 1.2, "min_p": 0.05}]
    cfg = tiny_cfg(tiny_dir, tmp_path / "out", tasks={t: {} for t in TASKS}, methods=["fixed", "best_joint_mix"],
                   temperatures=[0.0, 0.5, 1.0], num_prompts=2, method_options={"best_joint_mix": {"configs": configs}})
    res = run_evaluation(cfg)
    d = res["methods"]["best_joint_mix"]
    cands = d["candidates"]
    assert d["grid"] == [{"top_p": 1.0, "top_k": 0, **c} for c in configs]
    # the harness ran the candidates and the grid on every task's dev prompts; the test recomputes the fit from them
    dev = rewards_by_prompt(res["units"], "dev")
    grid = ["T=0.0", "T=0.5", "T=1.0"]
    scores = {c: 0.0 for c in cands}
    for t in TASKS:
        assert all(len(dev[t][c]) == 2 for c in [*cands, *grid])
        means = {n: sum(r.values()) / len(r) for n, r in dev[t].items()}
        lo, hi = min(means[g] for g in grid), max(means[g] for g in grid)
        for c in cands:
            scores[c] += ((means[c] - lo) / (hi - lo) if hi > lo else means[c]) / len(TASKS)
    want = max(cands, key=lambda c: (scores[c], -cands.index(c)))
    config = d["grid"][cands.index(want)]
    for t in TASKS:
        fit = res["tasks"][t]["oracle"]["best_joint_mix"]
        assert fit["chosen"] == want and fit["pooled"] is True and fit["dev_scores"] == pytest.approx(scores)
        test = units_by(res, "best_joint_mix", t)
        assert len(test) == 2
        for u in test.values():  # every sample decoded with the one chosen config
            assert u["extra"]["oracle_choice"] == want
            assert all({k: s["values"][k] for k in ("temperature", "top_p", "top_k", "min_p")}
                       == {"min_p": 0.0, **config} for s in u["samples"])
    assert "| best_joint_mix |" in (tmp_path / "out" / "results.md").read_text()


def test_headroom_reports_the_oracle_minus_the_best_label_free_single_setting(tiny_dir, tmp_path):
    cfg = tiny_cfg(tiny_dir, tmp_path / "hr", tasks={t: {} for t in TASKS}, temperatures=[0.0, 1.0], num_prompts=3,
                   methods=["greedy", "random", "min_p_mix", "best_joint_mix", "min_p"])
    assert headroom_config(cfg).methods == ["greedy", "fixed", "oracle", "min_p_mix", "best_joint_mix"]
    rep = run_headroom(cfg)
    res = json.loads((tmp_path / "hr" / "results.json").read_text())
    sf, lf = res["scale_free"], rep["label_free"]
    assert set(res["methods"]) == {"greedy", "T=0.0", "T=1.0", "oracle", "min_p_mix", "best_joint_mix"}
    best_fixed = sf["best_fixed"]["name"]
    assert list(lf["settings"]) == [best_fixed, "min_p_mix", "best_joint_mix"] and lf["chosen_on"] == "dev"
    fits = res["tasks"][TASKS[0]]["oracle"]
    want = {best_fixed: sf["best_fixed"]["scores"][best_fixed],
            **{m: fits[m]["dev_scores"][fits[m]["chosen"]] for m in ("min_p_mix", "best_joint_mix")}}
    assert {n: s["score"] for n, s in lf["settings"].items()} == pytest.approx(want)
    assert lf["best"] == max(want, key=lambda n: (want[n], -list(want).index(n)))
    # the gain is a paired difference: its mean is the oracle's normalized mean minus the best setting's
    g = lf["gain"]
    oracle = sf["normalized"]["oracle"]["overall"]["mean"]
    assert g["mean"] == pytest.approx(oracle - sf["normalized"][lf["best"]]["overall"]["mean"])
    assert g["lo"] <= g["mean"] <= g["hi"]
    assert g["mean"] == pytest.approx(sum(iv["mean"] for iv in lf["per_task_gain"].values()) / len(TASKS))
    # the fixed-temperature headroom is still reported beside it
    assert rep["gain"] == sf["differences"]["oracle"][best_fixed]["overall"]
    md = (tmp_path / "hr" / "headroom.md").read_text()
    assert f"HEADROOM: oracle - best label-free single setting ({lf['best']})" in md
    assert f"HEADROOM: oracle - {best_fixed} =" in md
