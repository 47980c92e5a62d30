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
