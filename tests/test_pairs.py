"""Preference pairs: modes, ties, non-finite rewards, statistics (Fig. 7), PairDataset cache vs recompute."""

import json
import math

import pytest
import torch

from adaptive_decoder.lpo.store import CollectionMismatchError, CollectionSettings, read_collection
from adaptive_decoder.lpo.collection import collect
from adaptive_decoder.lpo.pairs import (ModelNeededError, PairDataset, bin_rewards, build_pairs, collection_pair_report,
                                        pair_statistics, preference_mean_disagreements)
from adaptive_decoder.plotting import plot_pair_statistics
from adaptive_decoder.rewards import CompositeReward, Repetition
from test_collection import make_adm, prompts, run


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


# ------------------------------------------------------------------------------------------- PairDataset
@pytest.mark.parametrize("level", ["sequence", "token"])
def test_pair_dataset_cache_and_recompute_give_the_same_tensors_and_loss(tmp_path, level):
    adm = make_adm(level)
    run(adm, tmp_path, prompts(6), max_new_tokens=8, cache_which="all")
    cached = PairDataset(tmp_path)
    assert cached.stats["samples_recomputed"] == 0 and len(cached) > 0
    recomputed = PairDataset(tmp_path, model=adm.model, use_cache=False)
    assert recomputed.stats["samples_cached"] == 0 and len(recomputed) == len(cached)
    head = adm.head
    for a, b in zip(cached, recomputed):
        assert a["prompt_id"] == b["prompt_id"] and a["reward_chosen"] > a["reward_rejected"]
        for side in ("chosen", "rejected"):
            x, y = a[f"{side}_inputs"], b[f"{side}_inputs"]
            assert x.dtype == y.dtype == torch.float16 and x.shape == y.shape
            assert x.shape == ((32,) if level == "sequence" else (len(a[f"{side}_choices"]["temperature"]), 32))
            torch.testing.assert_close(x.float(), y.float(), atol=2e-3, rtol=2e-3)
            for f in head.factors:
                assert a[f"{side}_choices"][f].dtype == torch.long
                assert torch.equal(a[f"{side}_choices"][f], b[f"{side}_choices"][f])
        # the quantity LPO is built from: log-prob margin of chosen over rejected latents, summed over steps
        margin = lambda d: (head.log_prob(d["chosen_inputs"].float(), d["chosen_choices"]).sum()  # noqa: E731
                            - head.log_prob(d["rejected_inputs"].float(), d["rejected_choices"]).sum())
        assert margin(a).item() == pytest.approx(margin(b).item(), abs=1e-3)
    _, recs = read_collection(tmp_path)
    assert {k for k in ("chosen_inputs", "chosen_choices", "rejected_inputs", "rejected_choices", "reward_chosen",
                        "reward_rejected", "task", "prompt_id")} == set(cached[0])
    assert len(recs) == 24


def test_pair_dataset_mixes_cache_and_recompute_within_budget(tmp_path):
    adm = make_adm()
    run(adm, tmp_path, prompts(6), cache_budget_mb=4 * 32 * 2 / 2**20)  # room for four vectors
    with pytest.raises(ModelNeededError, match="have no cached head inputs .* pass model="):
        PairDataset(tmp_path)
    ds = PairDataset(tmp_path, model=adm.model)
    assert ds.stats["samples_cached"] >= 1 and ds.stats["samples_recomputed"] >= 1
    full = PairDataset(tmp_path, model=adm.model, use_cache=False)
    for a, b in zip(ds, full):
        torch.testing.assert_close(a["chosen_inputs"].float(), b["chosen_inputs"].float(), atol=2e-3, rtol=2e-3)


def test_pair_dataset_refuses_other_base_model_and_head_config(tmp_path):
    adm = make_adm()
    run(adm, tmp_path, prompts(3))
    with pytest.raises(CollectionMismatchError, match="different base model"):
        PairDataset(tmp_path, model=make_adm(model_seed=1).model)
    with pytest.raises(CollectionMismatchError, match=r"temperature_bins: stored \[0.0, 0.5, 1.0, 1.5\], now \[0.0, 1.0\]"):
        PairDataset(tmp_path, head_config=make_adm(bins=(0.0, 1.0)).head.config)
    other_arch = adm.head.config.to_dict() | {"num_layers": 3, "intermediate_size": 64}  # architecture may differ
    assert len(PairDataset(tmp_path, head_config=other_arch)) == PairDataset(tmp_path).stats["pairs"]
    with pytest.raises(ValueError, match=r"tasks \['nope'\] have no samples"):
        PairDataset(tmp_path, tasks=["nope"])


class _NanEveryOther:
    """A reward that fails (NaN) on every other sample, like a flaky reward model."""

    name = "flaky"
    allow_nonfinite = True  # as RewardModelScorer declares: store NaN, drop it when pairing

    def score(self, completions, examples):
        return [float("nan") if i % 2 else float(len(c)) for i, c in enumerate(completions)]


def test_nan_rewards_from_a_collection_are_dropped_and_counted(tmp_path):
    adm = make_adm()
    ps = prompts(3)
    reward = CompositeReward({"flaky": (_NanEveryOther(), 1.0), "repetition": (Repetition(), 0.0)})
    summary = collect(adm, ps, {"arith": reward}, tmp_path, CollectionSettings(num_samples=4, max_new_tokens=6), progress=False)
    assert summary["nonfinite_rewards"] == 6
    _, recs = read_collection(tmp_path)
    assert sum(math.isnan(r["rewards"]["total"]) for r in recs) == 6  # stored as-is, never silently replaced
    counts = collection_pair_report(tmp_path)
    assert counts["nonfinite_dropped"] == 6 and counts["samples"] == 12
    ds = PairDataset(tmp_path, model=adm.model)
    assert all(math.isfinite(x["reward_chosen"]) and math.isfinite(x["reward_rejected"]) for x in ds)
    assert all(x["chosen_choices"]["temperature"].ndim == 0 for x in ds)
    assert (tmp_path / "pair_stats.png").exists() and (tmp_path / "pair_stats.json").exists()
    by_bin = json.loads((tmp_path / "pair_stats.json").read_text())["bin_rewards"]["all"]["temperature"]
    assert sum(by_bin["n"]) == 6  # the finite samples, each counted at the bin it was decoded with


def test_pair_dataset_works_with_a_dataloader(tmp_path):
    adm = make_adm()
    run(adm, tmp_path, prompts(4))
    ds = PairDataset(tmp_path)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds))))  # sequence level: default collate stacks
    assert batch["chosen_inputs"].shape == (len(ds), 32) and batch["chosen_choices"]["temperature"].shape == (len(ds),)
    st = ds.statistics()
    assert sum(st["tasks"]["all"]["temperature"]["chosen"]) == len(ds)


@pytest.mark.parametrize("level", ["sequence", "token"])
def test_collection_token_logps_with_a_min_p_factor_feed_joint_and_latent_losses(tmp_path, level):
    """A head with all four factors (min-p included): the stored [T, K] tables equal a one-row recompute, the
    stored response sum reads the table at the chosen temperatures, and both new losses run on the batch."""
    from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, AdaptiveDecodingModel
    from adaptive_decoder.lpo.losses import collate_pairs, compute_loss

    base = make_adm(level)
    torch.manual_seed(0)
    cfg = AdaptiveDecoderConfig(**{**base.head.config.to_dict(), "factors": ["temperature", "top_p", "top_k", "min_p"],
                                   "min_p_bins": [0.0, 0.1]})
    adm = AdaptiveDecodingModel(base.model, base.tokenizer, AdaptiveDecoderHead(cfg))
    run(adm, tmp_path, prompts(4), max_new_tokens=6)
    ds = PairDataset(tmp_path, response_logps=True, model=adm.model)
    assert len(ds) > 0 and ds.stats["samples_recomputed"] == 0
    for key in list(ds._tables)[:4]:
        stored, rec = ds.token_logps(key), ds.records[key]
        assert stored["token_logps"].shape == (len(rec["completion_ids"]), 4)
        assert set(rec["choices"]) == {"temperature", "top_p", "top_k", "min_p"}
        t = torch.as_tensor(rec["choices"]["temperature"]).expand(len(rec["completion_ids"]))
        at_chosen = stored["token_logps"].gather(1, t[:, None]).sum().item()
        assert stored["response_logp"] == pytest.approx(at_chosen, abs=0.02)  # the table is fp16
        table = ds._tables.pop(key)
        again = ds.token_logps(key)  # recomputed: one teacher-forced pass over this sample alone
        torch.testing.assert_close(again["token_logps"], table, atol=0.02, rtol=0.01)
        assert again["lm_logp"] == pytest.approx(stored["lm_logp"], abs=1e-3)
        ds._tables[key] = table
    batch = collate_pairs([ds[i] for i in range(len(ds))])
    for lt in ("joint", "latent"):
        loss, _ = compute_loss(adm.head, batch, loss_type=lt, ref_head=adm.head)
        assert torch.isfinite(loss)
    # with the collecting head as its own reference the latent margin is 0: loss log 2
    assert compute_loss(adm.head, batch, loss_type="latent", ref_head=adm.head)[0].item() == pytest.approx(math.log(2))
