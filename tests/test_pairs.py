"""Preference pairs (adaptive_decoder.lpo.pairs.rules and .diagnostics): modes, ties, non-finite rewards, the
statistics of Fig. 7 and the bin rewards, all on hand-made records with hand-computed answers."""

import random

import pytest

from adaptive_decoder.lpo.pairs import bin_rewards, build_pairs, pair_statistics, preference_mean_disagreements
from adaptive_decoder.plotting import plot_pair_statistics


def rec(pid, j, total, task="t", choices=None):
    return {"prompt_id": pid, "task": task, "sample_index": j, "rewards": {"total": total},
            "choices": choices if choices is not None else {"temperature": j % 3}}


def test_best_vs_worst_default():
    recs = ([rec("a", j, r) for j, r in enumerate([0.2, 0.9, 0.1, 0.9])]
            + [rec("b", j, r, task="u") for j, r in enumerate([1.0, 3.0])])
    pairs, st = build_pairs(recs)
    assert [(p.prompt_id, p.chosen, p.rejected, p.reward_chosen, p.reward_rejected) for p in pairs] == [
        ("a", 1, 2, 0.9, 0.1), ("b", 1, 0, 3.0, 1.0)]  # tie for best (j=1, j=3) broken by sample index
    assert st["pairs"] == 2 and st["pairs_per_task"] == {"t": 1, "u": 1} and st["ties_skipped"] == 0


def test_top_k_vs_bottom_k_and_all_pairs_with_ties():
    recs = [rec("a", j, r) for j, r in enumerate([5.0, 1.0, 3.0, 1.0, 4.0])]
    pairs, st = build_pairs(recs, mode="top_k_vs_bottom_k", k=2)
    # ranked: j0 5.0, j4 4.0, j2 3.0, j1 1.0, j3 1.0 -> top {0, 4} x bottom {1, 3}
    assert sorted((p.chosen, p.rejected) for p in pairs) == [(0, 1), (0, 3), (4, 1), (4, 3)]
    pairs, st = build_pairs(recs, mode="top_k_vs_bottom_k", k=10)  # k capped at group size // 2 = 2
    assert len(pairs) == 4
    pairs, st = build_pairs(recs, mode="all_pairs")
    assert len(pairs) == 9 and st["ties_skipped"] == 1  # 10 pairs, (1, 3) is a tie
    assert all(p.reward_chosen > p.reward_rejected for p in pairs)
    pairs, st = build_pairs(recs, mode="all_pairs", eps=1.0)  # |diff| <= 1 is a tie: (5,4), (4,3), (1,1)
    assert len(pairs) == 7 and st["ties_skipped"] == 3


def test_a_small_group_caps_top_k_and_pairs_do_not_depend_on_record_order():
    # a: j0 2.0, j1 7.0, j2 7.0 -> ranked j1, j2 (tie broken by index), j0; three samples cap k=2 at 3 // 2 = 1.
    # b: ranked j1 4, j3 4, j4 3, j5 2, j0 1, j2 0 -> top {j1, j3} x bottom {j0, j2}, best first, then by index.
    recs = ([rec("a", j, r) for j, r in enumerate([2.0, 7.0, 7.0])]
            + [rec("b", j, r, task="u") for j, r in enumerate([1.0, 4.0, 0.0, 4.0, 3.0, 2.0])])
    expected = {"best_vs_worst": [("a", 1, 0), ("b", 1, 2)],
                "top_k_vs_bottom_k": [("a", 1, 0), ("b", 1, 0), ("b", 1, 2), ("b", 3, 0), ("b", 3, 2)],
                "all_pairs": [("a", 1, 0), ("a", 2, 0)]}  # all_pairs: only prompt a checked here
    shuffled = recs[:]
    random.Random(0).shuffle(shuffled)
    for mode, want in expected.items():
        for order in (recs, shuffled):
            pairs, st = build_pairs(order, mode=mode, k=2, prompt_ids=["a", "b"])
            got = [(p.prompt_id, p.chosen, p.rejected) for p in pairs]
            assert (got if mode != "all_pairs" else got[:2]) == want, (mode, order is recs)
    _, st = build_pairs(shuffled, mode="all_pairs", prompt_ids=["a", "b"])
    assert st["ties_skipped"] == 1 + 1 and st["pairs"] == (3 - 1) + (15 - 1)  # a: (j1, j2) tied; b: (j1, j3) tied


def test_all_tie_groups_nonfinite_rewards_and_empty_prompts_are_counted():
    recs = ([rec("tied", j, 0.5) for j in range(4)]
            + [rec("almost", 0, 0.5), rec("almost", 1, 0.5 + 1e-9)]
            + [rec("nan", 0, float("nan")), rec("nan", 1, 1.0), rec("nan", 2, float("inf")), rec("nan", 3, 0.0)]
            + [rec("lonely", 0, float("-inf")), rec("lonely", 1, 2.0)]
            + [rec("none", 0, None), {**rec("none", 1, 0.0), "rewards": {}}])
    pairs, st = build_pairs(recs, prompt_ids=["tied", "almost", "nan", "lonely", "none", "never_sampled"])
    assert [(p.prompt_id, p.chosen, p.rejected) for p in pairs] == [("nan", 1, 3)]  # NaN / inf never used
    assert st["prompts"] == 6 and st["prompts_no_samples"] == 1
    assert st["prompts_all_tied"] == 2 and st["ties_skipped"] == 2
    assert st["nonfinite_dropped"] == 2 + 1 + 2 and st["prompts_too_few_valid"] == 2
    with pytest.raises(ValueError, match="unknown pair mode 'best'"):
        build_pairs(recs, mode="best")
    with pytest.raises(ValueError, match="integer k >= 1"):
        build_pairs(recs, mode="top_k_vs_bottom_k", k=0)


def test_pair_statistics_counts_by_task_and_factor(tmp_path):
    cfg = {"hidden_size": 8, "factors": ["temperature", "top_k"], "temperature_bins": [0.0, 0.5, 1.0],
           "top_k_bins": [0, 20], "level": "token"}
    recs = [rec("a", 0, 1.0, "math", {"temperature": [0, 0, 1], "top_k": [1, 1, 1]}),
            rec("a", 1, 0.0, "math", {"temperature": [2, 2], "top_k": [0, 1]}),
            rec("b", 0, 0.0, "story", {"temperature": [2], "top_k": [0]}),
            rec("b", 1, 2.0, "story", {"temperature": [1, 2, 2, 2], "top_k": [0, 0, 0, 0]})]
    pairs, _ = build_pairs(recs)
    st = pair_statistics(pairs, recs, cfg)
    assert st["tasks"]["math"]["temperature"] == {"chosen": [2, 1, 0], "rejected": [0, 0, 2]}
    assert st["tasks"]["math"]["top_k"] == {"chosen": [0, 3], "rejected": [1, 1]}
    assert st["tasks"]["story"]["temperature"] == {"chosen": [0, 1, 3], "rejected": [0, 0, 1]}
    assert st["tasks"]["all"]["temperature"] == {"chosen": [2, 2, 3], "rejected": [0, 0, 3]}
    assert st["bins"] == {"temperature": [0.0, 0.5, 1.0], "top_k": [0, 20]} and st["num_pairs"] == 2
    png = plot_pair_statistics(st, tmp_path / "fig7.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_bin_rewards_separate_head_to_head_wins_from_the_mean_by_hand():
    # bin 2 (T=0.8) vs bin 3 (T=1.2) on three prompts: 1.0 vs 1.1, 1.0 vs 1.1, 2.0 vs 0.5. Bin 3 wins 2 of 3
    # head-to-heads, yet bin 2 is ahead on the mean within-prompt difference: (-0.1 - 0.1 + 1.5) / 3 = 0.4333.
    # Prompt d ties bins 0 and 1 (no win either way, a 0 difference); a sample without a choice (-1) is left out.
    cfg = {"hidden_size": 8, "factors": ["temperature"], "temperature_bins": [0.0, 0.4, 0.8, 1.2], "level": "sequence"}
    t = lambda b: {"temperature": b}  # noqa: E731
    recs = [rec("a", 0, 1.0, "w", t(2)), rec("a", 1, 1.1, "w", t(3)),
            rec("b", 0, 1.0, "w", t(2)), rec("b", 1, 1.1, "w", t(3)),
            rec("c", 0, 2.0, "w", t(2)), rec("c", 1, 0.5, "w", t(3)), rec("c", 2, 9.0, "w", t(-1)),
            rec("d", 0, 1.0, "v", t(0)), rec("d", 1, 1.0, "v", t(1))]
    r = bin_rewards(recs, cfg)
    w = r["w"]["temperature"]
    assert w["n"] == [0, 0, 3, 3]
    assert w["mean"][:2] == [None, None] and w["mean"][2] == pytest.approx(4 / 3) and w["mean"][3] == pytest.approx(0.9)
    assert w["wins"][3][2] == 2 and w["wins"][2][3] == 1 and sum(map(sum, w["wins"])) == 3
    assert w["diff"][2][3] == pytest.approx(1.3 / 3) and w["diff"][3][2] == pytest.approx(-1.3 / 3)
    assert w["diff"][0][1] is None
    v = r["v"]["temperature"]
    assert v["wins"][0][1] == v["wins"][1][0] == 0 and v["diff"][0][1] == 0.0
    assert r["all"]["temperature"]["n"] == [1, 1, 3, 3]
    assert preference_mean_disagreements(r, {"temperature": cfg["temperature_bins"]}) == [
        "w: temperature 1.2 beats 0.8 in 2 of 3 within-prompt pairs but is 0.433 below it in mean reward: "
        "preference pairs favour 1.2, the mean 0.8"]
    assert bin_rewards(recs, {**cfg, "level": "token"}) == {}
