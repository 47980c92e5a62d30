"""PairDataset (adaptive_decoder.lpo.pairs.dataset): cached vs recomputed tensors, the report of what only the LM can
recompute (MissingSamples) and when the LM is loaded, the refusals, non-finite rewards of a real collection, and
MemoizedDataset (adaptive_decoder.lpo.data)."""

import json
import math

import pytest
import torch

from adaptive_decoder.lpo.collection import collect
from adaptive_decoder.lpo.data import MemoizedDataset
from adaptive_decoder.lpo.pairs import MissingSamples, ModelNeededError, PairDataset, collection_pair_report
from adaptive_decoder.lpo.store import CollectionMismatchError, CollectionSettings, read_collection
from adaptive_decoder.rewards import CompositeReward, Repetition
from test_collection import make_adm, prompts, run


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


# ------------------------------------------------------------------------------------------- what needs the LM
def test_missing_report_names_the_uncached_samples_and_the_lm_is_loaded_once_for_them(tmp_path):
    adm = make_adm()
    run(adm, tmp_path, prompts(6), cache_budget_mb=4 * 32 * 2 / 2**20)  # room for four vectors of 32 fp16 values
    calls = []
    ds = PairDataset(tmp_path, load_model=lambda missing: calls.append(missing) or adm.model)
    in_pairs = sorted({(p.prompt_id, i) for p in ds.pairs for i in (p.chosen, p.rejected)})
    uncached = tuple(k for k in in_pairs if not ds.records[k].get("cached"))
    assert 0 < len(uncached) < len(in_pairs)
    assert calls == [MissingSamples(len(in_pairs), uncached, ())] and ds.missing == calls[0] and ds.model is adm.model
    assert ds.stats["samples_recomputed"] == len(uncached)
    assert ds.missing.describe() == (f"of the {len(in_pairs)} samples in pairs, {len(uncached)} have no cached head "
                                     "inputs (cache budget or use_cache=False)")
    with pytest.raises(ModelNeededError, match=rf"^of the {len(in_pairs)} samples in pairs, {len(uncached)} have no "
                                               r"cached head inputs \(cache budget or use_cache=False\): pass model="):
        PairDataset(tmp_path)
    with pytest.raises(CollectionMismatchError, match="different base model"):  # a loaded LM is checked too
        PairDataset(tmp_path, load_model=lambda missing: make_adm(model_seed=1).model)
    with pytest.raises(ValueError, match="model= or load_model=, not both"):
        PairDataset(tmp_path, model=adm.model, load_model=lambda missing: adm.model)


def test_a_fully_cached_collection_never_loads_the_lm(tmp_path):
    adm = make_adm()
    run(adm, tmp_path, prompts(3), cache_which="all")
    ds = PairDataset(tmp_path, load_model=lambda missing: pytest.fail(f"the LM must not be loaded: {missing}"))
    assert not ds.missing and ds.missing.head_inputs == ds.missing.token_logps == () and ds.model is None
    assert ds.missing.in_pairs == ds.stats["samples_in_pairs"] > 0 and len(list(ds)) == len(ds)


def test_missing_samples_describe_both_kinds_in_one_line():
    m = MissingSamples(10, (("p", 0), ("p", 1)), (("q", 3),))
    assert bool(m) and not MissingSamples(10)
    assert m.describe() == ("of the 10 samples in pairs, 2 have no cached head inputs (cache budget or use_cache=False) "
                            "and 1 have no stored token log-probs (collected before they were recorded)")


def test_memoized_dataset_builds_each_item_once_across_epochs():
    class Counting(torch.utils.data.Dataset):
        stats = {"pairs": 3}

        def __init__(self):
            self.built = []

        def __len__(self):
            return 3

        def __getitem__(self, i):
            self.built.append(i)
            return {"i": i}

    inner = Counting()
    ds = MemoizedDataset(inner)
    for _ in range(2):  # two epochs, the second in another order
        assert [ds[i]["i"] for i in (0, 1, 2)] == [0, 1, 2] and [ds[i]["i"] for i in (2, 0)] == [2, 0]
    assert inner.built == [0, 1, 2] and len(ds) == 3 and ds.stats is inner.stats
