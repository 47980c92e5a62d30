"""Statistics checked against hand-computed values: means, win/tie/loss, paired differences, p-value extremes."""

import numpy as np
import pytest

from adaptive_decoder.stats import bootstrap_mean_ci, finite_mean, format_ci, paired_comparison


def test_bootstrap_mean_ci_hand_example():
    # mean of [0, 1, 1, 0, 1, 1, 1, 0] = 5/8; the CI must contain it and lie inside [0, 1]
    x = [0, 1, 1, 0, 1, 1, 1, 0]
    r = bootstrap_mean_ci(x, n_boot=4000, seed=1)
    assert r["mean"] == pytest.approx(0.625) and r["n"] == 8
    assert 0.0 <= r["lo"] < 0.625 < r["hi"] <= 1.0
    # normal approximation: se = sqrt(p(1-p)/n) = 0.171; the 95% percentile CI half-width is about 1.96 se
    assert (r["hi"] - r["lo"]) / 2 == pytest.approx(1.96 * np.sqrt(0.625 * 0.375 / 8), rel=0.25)
    # same seed -> same interval; a constant sample has a zero-width interval
    assert bootstrap_mean_ci(x, n_boot=4000, seed=1) == r
    c = bootstrap_mean_ci([0.3] * 5, n_boot=100)
    assert c["lo"] == pytest.approx(0.3) and c["hi"] == pytest.approx(0.3)


def test_paired_comparison_hand_example():
    # per-prompt rewards of method A and fixed temperature B on 6 prompts:
    # diffs = [+1, +0.5, 0, 0, -0.5, +1]: 3 wins, 2 ties, 1 loss; mean diff = 2/6
    a = [1.0, 0.5, 0.2, 0.7, 0.0, 1.0]
    b = [0.0, 0.0, 0.2, 0.7, 0.5, 0.0]
    r = paired_comparison(a, b, n_boot=5000, seed=0)
    assert r["n"] == 6
    assert (r["win"], r["tie"], r["loss"]) == pytest.approx((3 / 6, 2 / 6, 1 / 6))
    assert r["mean_diff"] == pytest.approx(2 / 6)
    assert r["diff_lo"] <= 2 / 6 <= r["diff_hi"]
    assert r["win_lo"] <= 0.5 <= r["win_hi"]
    # the smallest/largest possible bootstrap mean difference bound the CI
    assert -0.5 <= r["diff_lo"] and r["diff_hi"] <= 1.0
    # swapping sides mirrors everything
    s = paired_comparison(b, a, n_boot=5000, seed=0)
    assert (s["win"], s["loss"]) == pytest.approx((r["loss"], r["win"]))
    assert s["mean_diff"] == pytest.approx(-r["mean_diff"])
    assert s["p_value"] == pytest.approx(r["p_value"])


def test_p_value_extremes():
    # identical methods: every difference is 0 -> no evidence at all, p = 1, win rate 0 with a [0, 0] interval
    x = np.linspace(0, 1, 20)
    same = paired_comparison(x, x, n_boot=2000)
    assert same["p_value"] == 1.0 and same["tie"] == 1.0 and (same["win_lo"], same["win_hi"]) == (0.0, 0.0)
    # A beats B on every one of 50 prompts by a clear margin: no bootstrap resample flips the sign,
    # so p hits its floor 2 / (B + 1)
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 0.5, 50)
    a = b + rng.uniform(0.2, 0.4, 50)
    strong = paired_comparison(a, b, n_boot=2000)
    assert strong["win"] == 1.0 and strong["p_value"] == pytest.approx(2 / 2001)
    assert strong["diff_lo"] > 0.2 and strong["diff_hi"] < 0.4
    # pure noise around 0: p is large (not significant)
    noise = paired_comparison(rng.normal(0, 1, 200), rng.normal(0, 1, 200), n_boot=2000, seed=3)
    assert noise["p_value"] > 0.05 or abs(noise["mean_diff"]) > 0.2


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="same prompts"):
        paired_comparison([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_mean_ci([])
    with pytest.raises(ValueError, match=r"non-finite values at positions \[1\]"):
        bootstrap_mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_mean_ci([1.0, 2.0], alpha=1.5)


def test_format_ci():
    assert format_ci(0.5, 0.25, 0.75, 2) == "0.50 [0.25, 0.75]"
    assert format_ci(None, None, None) == "n/a"


def test_finite_mean_leaves_out_missing_and_non_finite_values():
    # the harness averages token counts and timings, the experiment task metrics over seeds (a seed may lack one)
    assert finite_mean([1, 2.0, None, float("nan"), float("inf"), "n/a", 3]) == 2.0
    assert finite_mean([None, float("nan")]) is None and finite_mean([]) is None


# ---------------------------------------------------------------------------------------------------------------
# multiple testing: Holm and Benjamini-Hochberg on a family of four p-values, by hand
def test_holm_and_bh_by_hand():
    from adaptive_decoder.stats import adjust_pvalues

    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005 (test 3), 0.01 (0), 0.03 (2), 0.04 (1); Holm multiplies by 4, 3, 2, 1:
    # 0.02, 0.03, 0.06, 0.04, then the running max: 0.02, 0.03, 0.06, 0.06
    assert adjust_pvalues(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: m * p / rank = 0.02, 0.02, 0.04, 0.04, then the running min from the largest: unchanged
    assert adjust_pvalues(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # at alpha 0.05 Holm keeps two of the four raw "p < 0.05" verdicts, BH all four
    assert [q <= 0.05 for q in adjust_pvalues(p, "holm")] == [True, False, False, True]
    assert all(q <= 0.05 for q in adjust_pvalues(p, "bh"))
    # a dict family keeps its names; Holm caps at 1 and stays monotone in the raw order (0.5 * 2 = 1, 0.6 -> 1)
    assert adjust_pvalues({"vs T=0.2": 0.5, "vs T=0.8": 0.6}) == pytest.approx({"vs T=0.2": 1.0, "vs T=0.8": 1.0})
    assert adjust_pvalues([0.2], "holm") == [0.2]  # a family of one is not adjusted
    with pytest.raises(ValueError, match="must be one of"):
        adjust_pvalues(p, "bonferroni")
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        adjust_pvalues([0.1, 1.5])
    with pytest.raises(ValueError, match="non-empty"):
        adjust_pvalues([])


# ---------------------------------------------------------------------------------------------------------------
# two-level bootstrap: training seeds, then prompts within task within each seed
def test_two_level_bootstrap_point_estimate_by_hand():
    from adaptive_decoder.stats import two_level_bootstrap

    # seed 0: task a mean 0.5, task b mean 0.2 -> 0.35; seed 1: a 0.0, b 0.4 -> 0.2; over seeds: 0.275
    r = two_level_bootstrap({0: {"a": [1.0, 0.0], "b": [0.2]}, 1: {"a": [0.0, 0.0], "b": [0.4]}}, n_boot=500)
    assert r["mean"] == pytest.approx(0.275)
    assert r["per_seed"] == pytest.approx({0: 0.35, 1: 0.2})
    assert r["n_seeds"] == 2 and r["lo"] <= 0.275 <= r["hi"]
    assert two_level_bootstrap({0: {"a": [1.0, 0.0], "b": [0.2]}, 1: {"a": [0.0, 0.0], "b": [0.4]}}, n_boot=500) == r


def test_two_level_bootstrap_constant_prompts_is_the_seed_bootstrap():
    from adaptive_decoder.stats import two_level_bootstrap

    # every prompt of a seed has its seed's value, so only the seed draw varies: of two seeds (0.1, 0.3) a
    # resample's mean is 0.1, 0.2 or 0.3 with probability 1/4, 1/2, 1/4, and the 2.5% / 97.5% quantiles are
    # 0.1 and 0.3 (a prompt-only bootstrap would give the zero-width interval [0.2, 0.2])
    per_seed = {0: {"x": [0.1, 0.1], "y": [0.1] * 3}, 1: {"x": [0.3, 0.3], "y": [0.3] * 3}}
    r = two_level_bootstrap(per_seed, n_boot=4000, seed=3)
    assert r["mean"] == pytest.approx(0.2)
    assert (r["lo"], r["hi"]) == pytest.approx((0.1, 0.3))


def test_two_level_bootstrap_a_seed_that_flips_the_verdict_widens_the_interval():
    from adaptive_decoder.stats import two_level_bootstrap

    rng = np.random.default_rng(0)
    diffs = {t: rng.normal(0.1, 0.05, 30) for t in ("copy", "story")}  # head - baseline, per prompt
    agree = {s: {t: v + 0.002 * s for t, v in diffs.items()} for s in range(3)}
    flipped = {**agree, 2: {t: -v for t, v in diffs.items()}}  # seed 2's head loses by as much as the others win
    a, f = two_level_bootstrap(agree, seed=1), two_level_bootstrap(flipped, seed=1)
    assert a["lo"] > 0 and a["p_value"] < 0.01  # three seeds agree: the verdict holds
    # with seed 2 flipped the mean stays positive (about 0.1 / 3) but the interval covers 0: a resample of the
    # seeds that draws seed 2 three times (1/27 of them, above the 2.5% tail) lies near -0.1
    assert f["mean"] == pytest.approx(np.mean([agree[0]["copy"].mean() + agree[0]["story"].mean(),
                                               agree[1]["copy"].mean() + agree[1]["story"].mean(),
                                               -diffs["copy"].mean() - diffs["story"].mean()]) / 2)
    assert f["lo"] < 0 < f["hi"] and f["p_value"] > 0.05
    assert (f["hi"] - f["lo"]) > 5 * (a["hi"] - a["lo"])
    assert f["per_seed"][2] < 0 < f["per_seed"][0]  # the per-seed verdicts stay visible


def test_two_level_bootstrap_refuses_bad_input():
    from adaptive_decoder.stats import two_level_bootstrap

    with pytest.raises(ValueError, match="seed 1 has tasks"):
        two_level_bootstrap({0: {"a": [1.0]}, 1: {"b": [1.0]}})
    with pytest.raises(ValueError, match="at least one training seed"):
        two_level_bootstrap({})
    with pytest.raises(ValueError, match="non-finite"):
        two_level_bootstrap({0: {"a": [1.0, float("nan")]}})
