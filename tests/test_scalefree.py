"""Normalized rewards, paper win rates and the bar, checked against hand-computed numbers on tiny results."""

import pytest

from adaptive_decoder.evaluation.report import bar_line, markdown_sections, rival_line
from adaptive_decoder.evaluation.scalefree import (check_bar, rewards_by_prompt, scale_free_report, strongest_rival,
                                                   task_normalization, win_scores)

FIXED = ["T=0.0", "T=1.0"]


def _by_prompt(rows: dict) -> dict:
    """{method: [reward per prompt]} -> {method: {prompt_id: reward}}."""
    return {m: {f"p{i}": r for i, r in enumerate(rs)} for m, rs in rows.items()}


# Two tasks x three test prompts on very different scales; dev has the fixed grid only (two prompts each).
#   math (0-1 scale):   dev means T=0.0 0.3, T=1.0 0.7   -> zero 0.3, scale 0.4
#   story (0-100):      dev means T=0.0 20,  T=1.0 40    -> zero 20,  scale 20
TEST = {
    "math": _by_prompt({"T=0.0": [0.3, 0.5, 0.7], "T=1.0": [0.7, 0.7, 0.9], "ad": [0.7, 1.1, 0.3]}),
    "story": _by_prompt({"T=0.0": [20, 40, 60], "T=1.0": [40, 40, 40], "ad": [60, 40, 20]}),
}
DEV = {
    "math": _by_prompt({"T=0.0": [0.2, 0.4], "T=1.0": [0.6, 0.8]}),
    "story": _by_prompt({"T=0.0": [10, 30], "T=1.0": [50, 30]}),
}


@pytest.fixture(scope="module")
def report():
    return scale_free_report(TEST, DEV, FIXED, n_boot=2000, seed=0)


def test_normalization_uses_the_dev_means_of_the_fixed_grid(report):
    n = report["tasks"]["math"]["normalization"]
    assert n["source"] == "dev" and (n["worst"], n["best"]) == ("T=0.0", "T=1.0")
    assert (n["zero"], n["scale"]) == pytest.approx((0.3, 0.4))
    assert report["tasks"]["story"]["normalization"]["zero"] == pytest.approx(20)
    assert report["tasks"]["story"]["normalization"]["scale"] == pytest.approx(20)
    nz = report["normalized"]
    # math: T=0.0 [0, .5, 1] -> 0.5 (it would be 0 were the TEST means the reference); T=1.0 [1, 1, 1.5] -> 7/6;
    # ad [1, 2, 0] -> 1.  story: T=0.0 [0, 1, 2] -> 1; T=1.0 [1, 1, 1] -> 1; ad [2, 1, 0] -> 1
    assert nz["T=0.0"]["tasks"]["math"]["mean"] == pytest.approx(0.5)
    assert nz["T=1.0"]["tasks"]["math"]["mean"] == pytest.approx(7 / 6)
    assert nz["ad"]["tasks"]["math"]["mean"] == pytest.approx(1.0)
    assert [nz[m]["tasks"]["story"]["mean"] for m in ("T=0.0", "T=1.0", "ad")] == pytest.approx([1, 1, 1])
    # overall: the mean of the two task means (raw pooling would be all story)
    assert nz["T=0.0"]["overall"]["mean"] == pytest.approx(0.75)
    assert nz["T=1.0"]["overall"]["mean"] == pytest.approx(13 / 12)
    assert nz["ad"]["overall"]["mean"] == pytest.approx(1.0)
    for m in nz:
        for iv in [nz[m]["overall"], *nz[m]["tasks"].values()]:
            assert iv["lo"] <= iv["mean"] + 1e-12 and iv["mean"] <= iv["hi"] + 1e-12


def test_win_rates_count_ties_one_half(report):
    w = report["win_rates"]["ad"]
    # math vs T=0.0: win, win, loss -> 2/3; vs T=1.0: tie, win, loss -> 1/2
    # story vs T=0.0: win, tie, loss -> 1/2; vs T=1.0: win, tie, loss -> 1/2
    assert w["T=0.0"]["tasks"]["math"]["mean"] == pytest.approx(2 / 3)
    assert w["T=1.0"]["tasks"]["math"]["mean"] == pytest.approx(0.5)
    assert w["T=0.0"]["tasks"]["story"]["mean"] == pytest.approx(0.5)
    assert w["T=1.0"]["tasks"]["story"]["mean"] == pytest.approx(0.5)
    assert w["T=0.0"]["overall"]["mean"] == pytest.approx(7 / 12)
    assert w["T=1.0"]["overall"]["mean"] == pytest.approx(0.5)
    assert set(report["win_rates"]) == {"ad"}  # fixed temperatures are the baselines, not compared themselves
    assert list(win_scores([1, 1, 1], [0, 1, 2])) == [1.0, 0.5, 0.0]


def test_tasks_weigh_equally_whatever_their_prompt_counts():
    # task a: 1 prompt, ad normalized 1; task b: 3 prompts, ad normalized 0 -> overall 0.5 (pooled prompts: 0.25)
    test = {"a": _by_prompt({"T=0.0": [0.0], "T=1.0": [1.0], "ad": [1.0]}),
            "b": _by_prompt({"T=0.0": [0.0, 0.0, 0.0], "T=1.0": [1.0, 1.0, 1.0], "ad": [0.0, 0.0, 0.0]})}
    r = scale_free_report(test, None, FIXED, n_boot=500)
    assert r["normalized"]["ad"]["overall"]["mean"] == pytest.approx(0.5)
    # ad vs T=0.0: win on a (1), ties on b (1/2) -> (1 + 1/2) / 2
    assert r["win_rates"]["ad"]["T=0.0"]["overall"]["mean"] == pytest.approx(0.75)


def test_head_to_head_against_the_tuned_baselines_with_the_hand_numbers():
    # TEST plus a tuned baseline "minp" and a second head "ad2" (normalized: math zero 0.3 / scale 0.4, story 20 / 20)
    #   minp: math [0.7]*3 -> [1, 1, 1]; story [60]*3 -> [2, 2, 2]; overall 1.5
    #   ad - minp: math [0, 1, -1] -> 0, story [0, -1, -2] -> -1; overall -0.5
    #   ad's win rate vs minp: math tie, win, loss -> 1/2; story tie, loss, loss -> 1/6; overall 1/3
    #   ad2: math [1.1]*3 -> 2, story [100]*3 -> 4; overall 3, above minp, but a learned head is not a baseline
    test = {"math": {**TEST["math"], "minp": {f"p{i}": 0.7 for i in range(3)}, "ad2": {f"p{i}": 1.1 for i in range(3)}},
            "story": {**TEST["story"], "minp": {f"p{i}": 60 for i in range(3)}, "ad2": {f"p{i}": 100 for i in range(3)}}}
    r = scale_free_report(test, DEV, FIXED, n_boot=2000, seed=0, head_to_head=["ad", "ad2"])
    h = r["head_to_head"]["ad"]
    assert set(h) == {"minp", "ad2"}  # every non-fixed method, the fixed grid being the bar's own comparison
    assert h["minp"]["difference"]["tasks"]["math"]["mean"] == pytest.approx(0.0)
    assert h["minp"]["difference"]["tasks"]["story"]["mean"] == pytest.approx(-1.0)
    assert h["minp"]["difference"]["overall"]["mean"] == pytest.approx(-0.5)
    assert h["minp"]["win_rate"]["tasks"]["story"]["mean"] == pytest.approx(1 / 6)
    assert h["minp"]["win_rate"]["overall"]["mean"] == pytest.approx(1 / 3)
    assert r["head_to_head"]["ad2"]["ad"]["difference"]["overall"]["mean"] == pytest.approx(3.0 - 1.0)
    # consistent with the bar's own differences: ad - minp = (ad - T=1.0) - (minp - T=1.0)
    d = {m: r["differences"][m]["T=1.0"]["overall"]["mean"] for m in ("ad", "minp")}
    assert d["ad"] - d["minp"] == pytest.approx(h["minp"]["difference"]["overall"]["mean"])
    best = strongest_rival(r, "ad")
    assert best["name"] == "minp" and best["normalized"] == pytest.approx(1.5)
    assert strongest_rival(r, "ad", skip={"minp"}) is None
    assert rival_line(r, "ad").startswith("ad vs the strongest other method, minp (normalized 1.500): difference -0.500 "
                                          "[95% CI ")
    md = "\n".join(markdown_sections(r))
    assert "## ad against the other methods (95% CI)" in md
    assert "| minp | 1.500 | 0.000 [" in md and "| -0.500 [" in md and "| 33% [" in md
    # every prompt of every resample agrees -> the verdict word is certain
    sure = {"a": _by_prompt({"T=0.0": [0.0, 0.0], "T=1.0": [1.0, 1.0], "ad": [0.5, 0.6], "minp": [0.9, 1.0]})}
    line = rival_line(scale_free_report(sure, None, FIXED, n_boot=200, head_to_head=["ad"]), "ad")
    assert ", behind; win rate 0% [0, 0]" in line
    with pytest.raises(ValueError, match=r"head_to_head: \['T=0.0'\] are not among the reported non-fixed methods"):
        scale_free_report(test, DEV, FIXED, head_to_head=["T=0.0"])
    assert scale_free_report(TEST, DEV, FIXED, n_boot=10)["head_to_head"] == {}  # none asked, none computed


def test_normalization_fallbacks():
    # no dev results -> the grid's test means (math: 0.5 and 0.7667); all equal -> raw with scale 1
    n = task_normalization(None, TEST["math"], FIXED)
    assert n["source"] == "test" and n["zero"] == pytest.approx(0.5) and n["scale"] == pytest.approx(0.7667 - 0.5, abs=1e-4)
    flat = _by_prompt({"T=0.0": [0.5, 0.5], "T=1.0": [0.5, 0.5]})
    assert task_normalization(flat, TEST["math"], FIXED)["source"] == "test"  # dev degenerate, test is not
    assert task_normalization(flat, flat, FIXED) == {"source": "raw", "zero": 0.0, "scale": 1.0, "worst": None, "best": None}
    r = scale_free_report({"math": TEST["math"]}, None, FIXED, n_boot=200)
    assert r["best_fixed"]["chosen_on"] == "test"
    md = "\n".join(markdown_sections(scale_free_report({"t": {**flat, "ad": {"p0": 1.0, "p1": 0.0}}}, None, FIXED, n_boot=50)))
    assert "stay raw (scale 1)" in md


def test_bar_not_met_with_the_hand_numbers(report):
    # best single fixed temperature on dev: T=1.0 (normalized dev 1 on both tasks vs 0 for T=0.0)
    assert report["best_fixed"] == {"name": "T=1.0", "chosen_on": "dev", "scores": {"T=0.0": 0.0, "T=1.0": 1.0}}
    b = check_bar(report, "ad")
    assert b["baseline"] == "T=1.0" and b["baseline_chosen_on"] == "dev"
    assert b["diff"] == pytest.approx(1.0 - 13 / 12)
    assert b["diff_ci"][0] <= b["diff"] <= b["diff_ci"][1]
    assert b["win_rates"]["T=0.0"]["mean"] == pytest.approx(7 / 12) and b["win_rates"]["T=1.0"]["mean"] == pytest.approx(0.5)
    assert not b["beats_best_fixed"] and not b["wins_vs_every_fixed"] and not b["met"]
    line = bar_line(b)
    assert line.startswith("BAR NOT MET: ad normalized reward 1.000 vs best fixed T=1.0 (chosen on dev) 1.083: "
                           "difference -0.083 [95% CI ")
    assert "win rate vs T=0.0 58% [" in line and "does not lie above 0" in line
    assert check_bar(report, "adtok") == {"method": "adtok", "evaluated": False, "met": False}
    assert bar_line(check_bar(report, "adtok")) == "BAR NOT MET: adtok was not evaluated"


def test_bar_met_and_each_condition_alone():
    # ad beats both fixed temperatures on every prompt of both tasks: every resample agrees -> met
    test = {"a": _by_prompt({"T=0.0": [0.1, 0.2, 0.3], "T=1.0": [0.2, 0.3, 0.4], "ad": [0.5, 0.6, 0.7]}),
            "b": _by_prompt({"T=0.0": [1, 2, 3], "T=1.0": [3, 2, 4], "ad": [5, 6, 7]})}
    b = check_bar(scale_free_report(test, None, FIXED, n_boot=500), "ad")
    assert b["met"] and b["diff_ci"][0] > 0
    assert all(w["mean"] == 1.0 and w["ci"] == [1.0, 1.0] for w in b["win_rates"].values())
    assert bar_line(b).startswith("BAR MET: ad normalized reward")
    # ad beats the best fixed (T=1.0) on every prompt, but T=0.0, worse on average, beats ad on 2 of 3 prompts:
    # the difference passes, the win rate vs T=0.0 (1/3) does not
    test = {"a": _by_prompt({"T=0.0": [1.0, 1.0, -10.0], "T=1.0": [0.0, 0.0, 0.0], "ad": [0.5, 0.5, 0.5]})}
    b = check_bar(scale_free_report(test, None, FIXED, n_boot=500), "ad")
    assert b["baseline"] == "T=1.0" and b["beats_best_fixed"] and not b["wins_vs_every_fixed"] and not b["met"]
    assert b["win_rates"]["T=0.0"]["mean"] == pytest.approx(1 / 3)
    assert "win-rate CI vs T=0.0 does not lie above 50%" in bar_line(b)


def test_intervals_are_deterministic_and_paired(report):
    again = scale_free_report(TEST, DEV, FIXED, n_boot=2000, seed=0)
    assert again == report
    # paired: story's ad - T=1.0 differences are [1, 0, -1] (normalized); a shift of every ad reward by +2 raw
    # (+0.1 normalized) shifts the difference interval by exactly 0.1
    shifted = {**TEST, "story": {**TEST["story"], "ad": {p: r + 2 for p, r in TEST["story"]["ad"].items()}}}
    s = scale_free_report(shifted, DEV, FIXED, n_boot=2000, seed=0)
    d0, d1 = report["differences"]["ad"]["T=1.0"]["tasks"]["story"], s["differences"]["ad"]["T=1.0"]["tasks"]["story"]
    assert (d1["lo"] - d0["lo"], d1["hi"] - d0["hi"]) == pytest.approx((0.1, 0.1))


def test_rewards_by_prompt_averages_seeds_per_split():
    units = [{"task": "t", "method": "m", "split": "test", "prompt_id": 1, "reward": 0.2},
             {"task": "t", "method": "m", "split": "test", "prompt_id": 1, "reward": 0.6},
             {"task": "t", "method": "m", "split": "dev", "prompt_id": 2, "reward": 1.0}]
    assert rewards_by_prompt(units, "test") == {"t": {"m": {"1": pytest.approx(0.4)}}}
    assert rewards_by_prompt(units, "dev") == {"t": {"m": {"2": 1.0}}}


def test_missing_method_or_grid_is_an_error():
    with pytest.raises(ValueError, match="no test results for method"):
        scale_free_report({"a": TEST["math"], "b": {"T=0.0": {"p0": 1}}}, None, FIXED, methods=["T=0.0", "ad"])
    with pytest.raises(ValueError, match="at least one fixed"):
        scale_free_report({"a": {"ad": {"p0": 1.0}}}, None, FIXED)
