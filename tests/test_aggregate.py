"""The one aggregator (`adaptive_decoder.evaluation.aggregate`) the suite uses for one seed and the experiment for
many: the comparison set, per-prompt rewards averaged over seeds, alignment on the prompts every method has, pooling,
and independence of the order units arrive in; checked against hand-computed numbers."""

import random

import pytest

from adaptive_decoder.evaluation.aggregate import aggregate_units, comparison_set, learned_heads

FIX0 = {"type": "FixedPolicy", "role": "fixed", "temperature": 0.0, "top_p": 1.0, "top_k": 0}
FIX1 = {"type": "FixedPolicy", "role": "fixed", "temperature": 1.0, "top_p": 1.0, "top_k": 0}
METHODS = {"T=0.0": FIX0, "T=1.0": FIX1, "greedy": {"type": "GreedyPolicy", "role": "greedy", "temperature": 0.0},
           "random": {"type": "RandomPolicy", "role": "random"}, "oracle": {"type": "OraclePolicy", "role": "oracle"},
           "adseq": {"type": "AdaptivePolicy", "role": "adaptive"}}


def test_comparison_set_pairs_every_method_with_the_grid_and_a_head_also_with_the_controls():
    # the controls come in the methods' order
    assert comparison_set(METHODS) == {"greedy": ["T=0.0", "T=1.0"], "random": ["T=0.0", "T=1.0"],
                                       "oracle": ["T=0.0", "T=1.0"], "adseq": ["T=0.0", "T=1.0", "random", "oracle"]}
    # a description written without a role is read through its type; controls that did not run are not paired
    old = {"T=0.0": {"type": "FixedPolicy"}, "adtok": {"type": "AdaptivePolicy"}}
    assert comparison_set(old) == {"adtok": ["T=0.0"]} and learned_heads(old) == ["adtok"]


def _units(rewards: dict) -> list:
    """Test units from {(seed, task, method): {prompt_id: reward}}."""
    return [{"split": "test", "task": t, "method": m, "prompt_id": p, "reward": r, "seed": s}
            for (s, t, m), by_p in rewards.items() for p, r in by_p.items()]


# two seeds; task b's adseq has a prompt the others lack (left out of every statistic of b)
REWARDS = {
    (0, "a", "T=0.0"): {"p0": 0.0, "p1": 1.0, "p2": 0.5}, (1, "a", "T=0.0"): {"p0": 0.2, "p1": 0.8, "p2": 0.5},
    (0, "a", "T=1.0"): {"p0": 0.4, "p1": 0.4, "p2": 0.4}, (1, "a", "T=1.0"): {"p0": 0.4, "p1": 0.4, "p2": 0.4},
    (0, "a", "adseq"): {"p0": 1.0, "p1": 1.0, "p2": 0.0}, (1, "a", "adseq"): {"p0": 0.6, "p1": 1.0, "p2": 0.2},
    (0, "b", "T=0.0"): {"q0": 0.0, "q1": 0.0}, (1, "b", "T=0.0"): {"q0": 0.0, "q1": 0.0},
    (0, "b", "T=1.0"): {"q0": 1.0, "q1": 1.0}, (1, "b", "T=1.0"): {"q0": 1.0, "q1": 1.0},
    (0, "b", "adseq"): {"q0": 1.0, "q1": 0.0, "q2": 9.0}, (1, "b", "adseq"): {"q0": 1.0, "q1": 0.0, "q2": 9.0},
}
SMALL = {m: METHODS[m] for m in ("T=0.0", "T=1.0", "adseq")}


def test_rewards_are_per_prompt_means_over_seeds_on_the_common_prompts():
    out = aggregate_units(_units(REWARDS), SMALL, ["a", "b", "c"], n_boot=200, seed=0)
    assert list(out["tasks"]) == ["a", "b"]  # c has no units
    a, b = out["tasks"]["a"], out["tasks"]["b"]
    assert (a["num_test"], b["num_test"], out["overall"]["num_test"]) == (3, 2, 5)
    # adseq on a: prompts (1.0+0.6)/2, 1.0, (0.0+0.2)/2 -> 0.8, 1.0, 0.1
    assert a["rewards"]["adseq"]["mean"] == pytest.approx(1.9 / 3)
    assert b["rewards"]["adseq"]["mean"] == pytest.approx(0.5)  # q2 left out
    assert out["overall"]["rewards"]["adseq"]["mean"] == pytest.approx(2.9 / 5)  # the pooled prompts of a and b
    c = {(c["task"], c["method"], c["baseline"]): c for c in out["comparisons"]}
    assert set(c) == {(t, "adseq", f) for t in ("a", "b", "overall") for f in ("T=0.0", "T=1.0")}
    # adseq - T=0.0 on a: 0.8 - 0.1, 1.0 - 0.9, 0.1 - 0.5
    assert c["a", "adseq", "T=0.0"]["mean_diff"] == pytest.approx(0.4 / 3)
    assert (c["a", "adseq", "T=0.0"]["win"], c["a", "adseq", "T=0.0"]["loss"]) == pytest.approx((2 / 3, 1 / 3))
    assert c["b", "adseq", "T=1.0"]["mean_diff"] == pytest.approx(-0.5)
    assert set(out["bars"]) == {"adseq"} and out["scale_free"]["fixed"] == ["T=0.0", "T=1.0"]


def test_the_order_of_the_units_changes_nothing():
    units = _units(REWARDS)
    want = aggregate_units(units, SMALL, ["a", "b"], n_boot=200, seed=3)
    random.Random(0).shuffle(units)
    assert aggregate_units(units, SMALL, ["a", "b"], n_boot=200, seed=3) == want


def test_without_a_fixed_setting_there_is_no_scale_free_report():
    rewards = {k: v for k, v in REWARDS.items() if k[2] == "adseq"}
    out = aggregate_units(_units(rewards), {"adseq": METHODS["adseq"]}, ["a", "b"], n_boot=50, seed=0)
    assert "scale_free" not in out and "bars" not in out and out["comparisons"] == []
    assert out["tasks"]["b"]["num_test"] == 3  # alone, adseq keeps every prompt it has


def test_each_methods_comparisons_on_a_task_are_holm_adjusted_as_one_family():
    out = aggregate_units(_units(REWARDS), SMALL, ["a", "b"], n_boot=400, seed=0)
    for task in ("a", "b", "overall"):
        fam = sorted((c for c in out["comparisons"] if (c["task"], c["method"]) == (task, "adseq")),
                     key=lambda c: c["p_value"])
        # two tests, p1 <= p2: Holm gives min(1, 2 p1), then max(that, p2)
        p1, p2 = fam[0]["p_value"], fam[1]["p_value"]
        assert fam[0]["p_holm"] == pytest.approx(min(1.0, 2 * p1))
        assert fam[1]["p_holm"] == pytest.approx(max(min(1.0, 2 * p1), p2))
    # adseq - T=1.0 on b: -0.5 on every prompt, so its raw p is small and doubling it is visible
    c = {(c["task"], c["baseline"]): c for c in out["comparisons"] if c["method"] == "adseq"}
    assert c["b", "T=1.0"]["p_holm"] >= c["b", "T=1.0"]["p_value"]


def test_a_record_written_without_the_holm_column_renders_a_dash():
    from adaptive_decoder.evaluation.report.markdown import _comparison_table

    rec = {"method": "adseq", "baseline": "T=0.0", "win": 0.5, "win_lo": 0.4, "win_hi": 0.6, "tie": 0.0, "loss": 0.5,
           "mean_diff": 0.0, "diff_lo": -0.1, "diff_hi": 0.1, "p_value": 0.9}
    assert _comparison_table([rec], signed=False)[-1].endswith("| 0.9 | — |")
    assert _comparison_table([{**rec, "p_holm": 1.0}], signed=False)[-1].endswith("| 0.9 | 1 |")


def test_a_seed_that_flips_the_bar_widens_its_interval():
    from adaptive_decoder.evaluation.aggregate import with_seed_uncertainty
    from adaptive_decoder.evaluation.report.scalefree import bar_numbers

    # no dev units: task a is normalized on test, T=0.0 (0) -> 0 and T=1.0 (1) -> 1, scale 1. The head scores 2 on
    # every prompt with seed 0 and 0 with seed 1: seed-averaged it ties T=1.0 on every prompt (prompt-level CI
    # [0, 0]), while the seeds' own differences are +1 and -1
    prompts = [f"p{i}" for i in range(4)]
    rewards = {(s, "a", m): {p: v for p in prompts}
               for s, m, v in [(0, "T=0.0", 0.0), (1, "T=0.0", 0.0), (0, "T=1.0", 1.0), (1, "T=1.0", 1.0),
                               (0, "adseq", 2.0), (1, "adseq", 0.0)]}
    units = _units(rewards)
    out = aggregate_units(units, SMALL, ["a"], n_boot=400, seed=0)
    bar = out["bars"]["adseq"]
    assert bar["baseline"] == "T=1.0" and bar["diff"] == pytest.approx(0.0) and bar["diff_ci"] == pytest.approx([0, 0])
    by_seed = {s: [u for u in units if u["seed"] == s] for s in (0, 1)}
    two = with_seed_uncertainty(bar, by_seed, out["scale_free"], n_boot=400)
    assert two["per_seed"] == {"0": pytest.approx(1.0), "1": pytest.approx(-1.0)}
    assert two["diff_ci"] == pytest.approx([-1.0, 1.0]) and two["diff_ci_prompts"] == bar["diff_ci"]
    assert not two["met"] and "over 2 training seeds and their prompts (seed 0 +1.000, seed 1 -1.000)" in bar_numbers(two)
    assert with_seed_uncertainty(bar, {0: by_seed[0]}, out["scale_free"], n_boot=400) is bar  # one seed: unchanged
