"""The expected-reward objective (adaptive_decoder.lpo.expected_reward) against hand-computed values, and the case it
exists for: a bin that wins most within-prompt pairs by a little but loses on the mean, where LPO and this
objective move the head towards different bins."""

import math

import pytest
import torch

from adaptive_decoder.lpo.expected_reward import (behaviour_log_probs, collate_groups, expected_reward_loss,
                                                  group_advantages, group_loss, kl_to_reference, regression_loss)
from adaptive_decoder.lpo.losses import compute_loss, lpo_loss
from adaptive_decoder.lpo.pairs import bin_rewards, build_pairs, preference_mean_disagreements
from adaptive_decoder.modeling.head import AdaptiveDecoderConfig, AdaptiveDecoderHead

torch.set_num_threads(1)


def bias_head(biases: dict, level="sequence", hidden=4) -> AdaptiveDecoderHead:
    """A head whose distributions ignore the input: zero weights, the given logits as biases."""
    cfg = AdaptiveDecoderConfig(hidden_size=hidden, num_layers=1, temperature_bins=[0.2, 1.2], top_p_bins=[1.0, 0.9],
                                factors=list(biases), level=level)
    head = AdaptiveDecoderHead(cfg)
    with torch.no_grad():
        for f, b in biases.items():
            head.outputs[f].weight.zero_()
            head.outputs[f].bias.copy_(torch.tensor(b))
    return head


# ---------------------------------------------------------------------------------------------------------------
def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.2, 0.4])
    group = torch.tensor([0, 0, 0, 0, 1, 1])
    # prompt 0: mean 0.5; prompt 1: mean 0.3
    assert group_advantages(rewards, group).tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, -0.1, 0.1])
    # population std: 0.5 and 0.1
    assert group_advantages(rewards, group, "std").tolist() == pytest.approx([1, -1, -1, 1, -1, 1], rel=1e-4)
    assert group_advantages(torch.tensor([0.3, 0.3]), torch.tensor([0, 0]), "std").tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="advantage_scale must be one of"):
        group_advantages(rewards, group, "rank")


def test_behaviour_log_probs_mix_in_the_collections_epsilon_by_hand():
    # temperature: softmax(log 3, 0) = (0.75, 0.25); with epsilon 0.2: 0.8 * p + 0.1 = (0.7, 0.3)
    # top_p: (0.5, 0.5) stays (0.5, 0.5); a choice's log mu is the sum over factors
    head = bias_head({"temperature": [math.log(3), 0.0], "top_p": [0.0, 0.0]})
    h = torch.randn(2, 4)
    got = behaviour_log_probs(head, h, {"temperature": torch.tensor([0, 1]), "top_p": torch.tensor([1, 1])}, 0.2)
    assert got.tolist() == pytest.approx([math.log(0.7 * 0.5), math.log(0.3 * 0.5)], rel=1e-6)
    assert behaviour_log_probs(head, h, {"temperature": torch.tensor([0, 1]), "top_p": torch.tensor([0, 0])},
                               0.0).tolist() == pytest.approx([math.log(0.375), math.log(0.125)], rel=1e-6)
    # token level: padding (-1) contributes nothing
    tok = behaviour_log_probs(head, torch.randn(1, 3, 4), {"temperature": torch.tensor([[0, 1, -1]]),
                                                           "top_p": torch.tensor([[0, 0, -1]])}, 0.2)
    assert tok[0].tolist() == pytest.approx([math.log(0.35), math.log(0.15), 0.0], rel=1e-6)


def test_truncated_importance_weights_and_gradient_by_hand():
    # pi = softmax(z) = (0.9, 0.1); the samples chose bin 0 (mu 0.05) and bin 1 (mu 0.95), rewards 1 and 0
    z = torch.tensor([math.log(9.0), 0.0], requires_grad=True)
    logps = z.log_softmax(-1)[torch.tensor([0, 1])]
    mu = torch.tensor([math.log(0.05), math.log(0.95)])
    adv = group_advantages(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]))  # (0.5, -0.5)
    loss, w = expected_reward_loss(logps, mu, adv, torch.tensor([0, 0]), clip=10.0)
    # w = (0.9 / 0.05, 0.1 / 0.95) = (18 -> truncated to 10, 0.105263)
    assert w.tolist() == pytest.approx([10.0, 0.1 / 0.95], rel=1e-5)
    # loss = -(1/2) [10 * 0.5 * log 0.9 + 0.105263 * (-0.5) * log 0.1]
    assert float(loss.detach()) == pytest.approx(-0.5 * (5 * math.log(0.9) - 0.5 * (0.1 / 0.95) * math.log(0.1)), rel=1e-5)
    loss.backward()
    # d log pi(0) / dz = (0.1, -0.1), d log pi(1) / dz = (-0.9, 0.9):
    # grad = -(1/2) [10 * 0.5 * (0.1, -0.1) + 0.105263 * (-0.5) * (-0.9, 0.9)] = (-0.273684, 0.273684)
    g0 = -0.5 * (5 * 0.1 + (0.1 / 0.95) * 0.5 * 0.9)
    assert z.grad.tolist() == pytest.approx([g0, -g0], rel=1e-5)
    with pytest.raises(ValueError, match="importance_clip must be > 0"):
        expected_reward_loss(logps, mu, adv, torch.tensor([0, 0]), clip=0.0)


def test_every_prompt_weighs_the_same_whatever_its_sample_count():
    # prompt 0 has 2 samples, prompt 1 has 4: each term is divided by its prompt's count, then by 2 prompts
    logps = torch.log(torch.full((6,), 0.5))
    adv = torch.tensor([1.0, -1.0, 2.0, 0.0, 0.0, -2.0])
    loss, _ = expected_reward_loss(logps, logps, adv, torch.tensor([0, 0, 1, 1, 1, 1]))
    # per-sample terms -1 * A * log 0.5 = A * log 2; sums per prompt are 0 and 0, so the loss is 0
    assert float(loss) == pytest.approx(0.0, abs=1e-7)
    loss, _ = expected_reward_loss(logps, logps, torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
                                   torch.tensor([0, 0, 1, 1, 1, 1]))
    assert float(loss) == pytest.approx(math.log(2), rel=1e-6)  # (2/2 + 4/4) / 2 * log 2


def test_kl_to_reference_by_hand():
    lp = {"temperature": torch.tensor([[0.75, 0.25]]).log()}
    ref = {"temperature": torch.tensor([[0.5, 0.5]]).log()}
    # 0.75 ln(1.5) + 0.25 ln(0.5)
    assert float(kl_to_reference(lp, ref)) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-6)
    assert float(kl_to_reference(ref, ref)) == pytest.approx(0.0, abs=1e-7)


# ---------------------------------------------------------------------------------------------------------------
# pairwise wins and the mean disagree
# one prompt, 8 samples: T=0.2 (bin A) scores 0.55, 0.55, 0.55, 0.0; T=1.2 (bin B) scores 0.5 four times.
# A beats B in 12 of the 16 cross pairs (by 0.05) and loses 4 (by 0.5): mean A 0.4125 < mean B 0.5.
A_REWARDS, B_REWARDS = [0.55, 0.55, 0.55, 0.0], [0.5, 0.5, 0.5, 0.5]


def disagreement_records():
    rewards = A_REWARDS + B_REWARDS
    return [{"prompt_id": "p", "task": "story", "sample_index": j, "rewards": {"total": r},
             "choices": {"temperature": 0 if j < 4 else 1}} for j, r in enumerate(rewards)]


def test_the_collection_diagnostic_names_the_disagreement():
    cfg = AdaptiveDecoderConfig(hidden_size=4, temperature_bins=[0.2, 1.2], factors=["temperature"], level="sequence")
    lines = preference_mean_disagreements(bin_rewards(disagreement_records(), cfg), {"temperature": [0.2, 1.2]})
    assert lines == ["story: temperature 0.2 beats 1.2 in 12 of 16 within-prompt pairs but is 0.087 below it in mean "
                     "reward: preference pairs favour 0.2, the mean 1.2"]


def test_lpo_gradient_favours_the_pairwise_winner_expected_reward_the_mean():
    records = disagreement_records()
    pairs, stats = build_pairs(records, "all_pairs")
    # all pairs: 16 cross-bin, 3 within A (0.55 vs 0.0); the 3 A-A ties and 6 B-B ties are skipped
    assert stats["pairs"] == 19 and stats["ties_skipped"] == 9
    bin_of = {r["sample_index"]: r["choices"]["temperature"] for r in records}

    # LPO (with reference = the initial head, margin 0): per pair grad = -(beta/2) d(log pi_c - log pi_r);
    # d(log pi_A - log pi_B)/dz = (1, -1); 12 pairs choose A, 4 choose B, 3 are A-A (no gradient):
    # mean grad = -(0.1/2) * (12 - 4) / 19 * (1, -1) -> descending raises z_A
    z = torch.zeros(2, requires_grad=True)
    lp = z.log_softmax(-1)
    c = torch.stack([lp[bin_of[p.chosen]] for p in pairs])
    r = torch.stack([lp[bin_of[p.rejected]] for p in pairs])
    losses, _, _ = lpo_loss(c, r, c.detach(), r.detach(), beta=0.1)
    losses.mean().backward()
    lpo_grad = -(0.1 / 2) * (12 - 4) / 19
    assert z.grad.tolist() == pytest.approx([lpo_grad, -lpo_grad], rel=1e-5)

    # expected reward, pi = mu = (1/2, 1/2), so w = 1: mean 0.45625; advantages A: 0.09375 x3, -0.45625;
    # B: 0.04375 x4. grad = -(1/8) [(3 * 0.09375 - 0.45625) (0.5, -0.5) + 4 * 0.04375 (-0.5, 0.5)]
    #                     = -(1/8) (-0.175, 0.175) = (0.021875, -0.021875) -> descending raises z_B
    z2 = torch.zeros(2, requires_grad=True)
    choices = torch.tensor([bin_of[j] for j in range(8)])
    logps = z2.log_softmax(-1)[choices]
    adv = group_advantages(torch.tensor(A_REWARDS + B_REWARDS), torch.zeros(8, dtype=torch.long))
    loss, _ = expected_reward_loss(logps, torch.full((8,), math.log(0.5)), adv, torch.zeros(8, dtype=torch.long))
    loss.backward()
    assert z2.grad.tolist() == pytest.approx([0.021875, -0.021875], rel=1e-5)
    assert z.grad[0] < 0 < z2.grad[0]  # opposite directions on the same samples


def _train(head, step_loss, steps=60):
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        step_loss(head).backward()
        opt.step()
    return head


def test_training_on_the_disagreement_moves_lpo_and_expected_reward_to_different_bins():
    torch.manual_seed(0)
    h = torch.randn(4)
    records = disagreement_records()
    pairs, _ = build_pairs(records, "all_pairs")
    bin_of = {r["sample_index"]: r["choices"]["temperature"] for r in records}
    one = lambda b: {"temperature": torch.tensor(b)}  # noqa: E731
    pair_batch = {"chosen_inputs": h.expand(len(pairs), 4), "rejected_inputs": h.expand(len(pairs), 4),
                  "chosen_choices": one([bin_of[p.chosen] for p in pairs]),
                  "rejected_choices": one([bin_of[p.rejected] for p in pairs])}
    group = collate_groups([{"task": "story", "prompt_id": "p", "samples": [
        {"inputs": h, "choices": {"temperature": torch.tensor(bin_of[j])}, "reward": rec["rewards"]["total"],
         "behaviour_logps": torch.tensor(math.log(0.5))} for j, rec in enumerate(records)]}])
    ref = bias_head({"temperature": [0.0, 0.0]})
    lpo = _train(bias_head({"temperature": [0.0, 0.0]}),
                 lambda hd: compute_loss(hd, pair_batch, loss_type="lpo", beta=0.1, ref_head=ref)[0])
    er = _train(bias_head({"temperature": [0.0, 0.0]}), lambda hd: group_loss(hd, group, beta=0.1, ref_head=ref)[0])
    p_lpo, p_er = lpo.probs(h[None])["temperature"][0], er.probs(h[None])["temperature"][0]
    assert p_lpo[0] > 0.6 and p_er[1] > 0.6  # LPO picks T=0.2 (the pairwise winner), expected reward T=1.2


def test_group_loss_metrics_and_the_kl_term():
    head = bias_head({"temperature": [math.log(3), 0.0]})  # pi = (0.75, 0.25)
    ref = bias_head({"temperature": [0.0, 0.0]})
    h = torch.zeros(4)
    batch = collate_groups([{"task": "t", "prompt_id": "p", "samples": [
        {"inputs": h, "choices": {"temperature": torch.tensor(b)}, "reward": r,
         "behaviour_logps": torch.tensor(math.log(0.5))} for b, r in ((0, 1.0), (1, 0.0))]}])
    no_kl, m0 = (v.detach() if torch.is_tensor(v) else v for v in group_loss(head, batch, ref_head=None))
    with_kl, m1 = (v.detach() if torch.is_tensor(v) else v for v in group_loss(head, batch, beta=0.5, ref_head=ref))
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert float(with_kl - no_kl) == pytest.approx(0.5 * kl, rel=1e-5) and float(m1["kl"]) == pytest.approx(kl, rel=1e-5)
    # w = (0.75 / 0.5, 0.25 / 0.5) = (1.5, 0.5): loss = -(1/2) [1.5 * 0.5 * log 0.75 + 0.5 * (-0.5) * log 0.25]
    assert float(no_kl) == pytest.approx(-0.5 * (0.75 * math.log(0.75) - 0.25 * math.log(0.25)), rel=1e-5)
    assert float(m0["weights/mean"]) == pytest.approx(1.0) and float(m0["weights/truncated"]) == 0.0
    assert float(m0["rewards/mean"]) == 0.5 and float(m0["advantages/abs_mean"]) == 0.5
    with pytest.raises(ValueError, match="trains on prompt groups, not pairs"):
        compute_loss(head, batch, loss_type="expected_reward")


def test_collate_groups_token_level_pads_and_indexes_groups():
    ex = [{"task": "a", "prompt_id": "p0", "samples": [
              {"inputs": torch.ones(2, 3), "choices": {"temperature": torch.tensor([0, 1])}, "reward": 1.0,
               "behaviour_logps": torch.tensor([-0.1, -0.2])}]},
          {"task": "b", "prompt_id": "p1", "samples": [
              {"inputs": torch.ones(1, 3), "choices": {"temperature": torch.tensor([1])}, "reward": 0.0,
               "behaviour_logps": torch.tensor([-0.3])},
              {"inputs": torch.ones(3, 3), "choices": {"temperature": torch.tensor([1, 1, 0])}, "reward": 0.5,
               "behaviour_logps": torch.tensor([-0.3, -0.4, -0.5])}]}]
    b = collate_groups(ex)
    assert b["level"] == "token" and b["inputs"].shape == (3, 3, 3)
    assert b["group"].tolist() == [0, 1, 1] and b["first"].tolist() == [0, 1]
    assert b["mask"].tolist() == [[True, True, False], [True, False, False], [True, True, True]]
    assert b["choices"]["temperature"].tolist() == [[0, 1, -1], [1, -1, -1], [1, 1, 0]]
    assert b["behaviour_logps"][1].tolist() == pytest.approx([-0.3, 0.0, 0.0])
    assert b["task"] == ["a", "b"] and b["rewards"].tolist() == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match=r"items \[0\] are not prompt groups"):
        collate_groups([{"chosen_inputs": torch.ones(3)}])
    # token level: per-step weights, each step carries its sample's advantage; sum over real steps
    head = bias_head({"temperature": [0.0, 0.0]}, level="token", hidden=3)
    loss, m = group_loss(head, b)
    assert torch.isfinite(loss) and float(m["entropy"]) == pytest.approx(math.log(2), rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# the regression estimator (REBEL): u_i = beta * (log pi - log pi_ref), loss = mean_prompts (1/N) sum ((u - mean u) - A)^2
def test_regression_loss_and_its_gradient_by_hand():
    # beta 0.5. prompt 0: log-ratios (1, -1) -> u (0.5, -0.5); rewards (1, 0) -> A (0.5, -0.5): residuals 0.
    # prompt 1: log-ratios (0, 0, 3) -> u (0, 0, 1.5), centred (-0.5, -0.5, 1.0); rewards (0, 0.3, 0.6) -> A (-0.3, 0, 0.3)
    # residuals (-0.2, -0.5, 0.7), mean square (0.04 + 0.25 + 0.49) / 3 = 0.26; loss (0 + 0.26) / 2 = 0.13
    logps = torch.tensor([1.0, -1.0, -1.0, -2.0, 1.5], requires_grad=True)
    ref = torch.tensor([0.0, 0.0, -1.0, -2.0, -1.5])
    group = torch.tensor([0, 0, 1, 1, 1])
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.3, 0.6]), group)
    loss = regression_loss(logps, ref, adv, group, beta=0.5)
    assert float(loss.detach()) == pytest.approx(0.13, rel=1e-5)
    loss.backward()
    # the residuals of a prompt sum to 0, so d/du_k of its (1/N) sum of squares is (2/N) r_k; times beta / 2 prompts
    assert logps.grad.tolist() == pytest.approx([0, 0, 0.5 / 2 * 2 / 3 * -0.2, 0.5 / 2 * 2 / 3 * -0.5,
                                                 0.5 / 2 * 2 / 3 * 0.7], abs=1e-6)
    # token level: the steps' log-ratios sum per sample (padding ignored, even where it holds garbage)
    step_logps = torch.tensor([[0.5, 0.5, 9.0], [-1.0, 0.0, 9.0], [-1.0, 0.0, 0.0], [-2.0, 9.0, 9.0], [0.5, 1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    step_ref = torch.tensor([[0.0, 0.0, 7.0], [0.0, 0.0, 7.0], [-1.0, 0.0, 0.0], [-2.0, 7.0, 7.0], [-1.5, 0.0, 0.0]])
    tok = regression_loss(step_logps, step_ref, adv, group, mask, beta=0.5)
    assert float(tok) == pytest.approx(0.13, rel=1e-5)


def test_group_centred_regression_equals_the_all_pairs_squared_loss():
    torch.manual_seed(0)
    group = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    u, r = torch.randn(8), torch.rand(8)
    got = regression_loss(u, torch.zeros(8), group_advantages(r, group), group, beta=1.0)
    want = []
    for g in (0, 1):
        ug, rg = u[group == g], r[group == g]
        n = len(ug)  # (1 / (2 N^2)) sum over ordered pairs (i, j) of ((u_i - u_j) - (R_i - R_j))^2
        want.append(((ug[:, None] - ug[None, :]) - (rg[:, None] - rg[None, :])).pow(2).sum() / (2 * n * n))
    assert float(got) == pytest.approx(float(sum(want) / 2), rel=1e-5)
    assert float(got) > 0.1  # random u and R are far from a fit: the identity is not 0 = 0


# a single-state bandit: 4 temperature bins, the mean rewards Q and reference of closed QA on the 6-task SmolLM2
# collection (issue 38); beta 0.1 -> pi* = pi_ref exp(Q / beta) / Z = (0.6866, 0.3087, 0.0047, 0.0001)
BANDIT_Q, BANDIT_REF, BANDIT_BETA = [1.0, 0.848, 0.542, 0.028], [0.18, 0.37, 0.12, 0.33], 0.1


def bandit_batch(bins: list) -> dict:
    """One prompt (input 0, so only the head's biases act), the given bins drawn with epsilon 0.3, exact rewards."""
    mu = [0.7 * p + 0.3 / 4 for p in BANDIT_REF]
    return collate_groups([{"task": "qa", "prompt_id": "p", "samples": [
        {"inputs": torch.zeros(4), "choices": {"temperature": torch.tensor(b)}, "reward": BANDIT_Q[b],
         "behaviour_logps": torch.tensor(math.log(mu[b]))} for b in bins]}])


def bandit_head() -> AdaptiveDecoderHead:
    cfg = AdaptiveDecoderConfig(hidden_size=4, num_layers=1, temperature_bins=[0.0, 0.4, 0.8, 1.2],
                                factors=["temperature"], level="sequence")
    head = AdaptiveDecoderHead(cfg)
    with torch.no_grad():
        head.outputs["temperature"].weight.zero_()
        head.outputs["temperature"].bias.copy_(torch.tensor(BANDIT_REF).log())
    return head


def train_bandit(bins: list, estimator: str, lr: float, steps: int = 300) -> list:
    batch, head, ref = bandit_batch(bins), bandit_head(), bandit_head()
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        group_loss(head, batch, beta=BANDIT_BETA, ref_head=ref, estimator=estimator)[0].backward()
        opt.step()
    return head.probs(torch.zeros(1, 4))["temperature"][0].tolist()


def test_the_regression_reaches_pi_star_where_the_policy_gradient_settles_on_the_probable_bin():
    pi_star = (torch.tensor(BANDIT_REF).log() + torch.tensor(BANDIT_Q) / BANDIT_BETA).softmax(-1).tolist()
    assert pi_star == pytest.approx([0.6866, 0.3087, 0.0047, 0.0001], abs=1e-4)
    # two draws from mu = (0.201, 0.334, 0.159, 0.306), every bin sampled: the second over-samples the reference's
    # most probable bin (T=0.4). The regression's minimum is pi* for both: the counts only weigh the cells.
    balanced, skewed = [0, 0, 1, 1, 1, 2, 3, 3, 3, 3], [0, 1, 1, 1, 1, 1, 2, 3, 3, 3]
    for bins in (balanced, skewed):
        assert train_bandit(bins, "regression", lr=0.1) == pytest.approx(pi_star, abs=1e-2)
    # the policy gradient's stationary point depends on the draw (weights pi / mu against counts n_c / N): from the
    # same start it stops 0.06 off pi* on the balanced draw (measured 0.752 on T=0), and on the skewed one it
    # moves to T=0.4, all of it with a large step (measured pi = (0, 1, 0, 0) at lr 3) and 0.92 at lr 0.1.
    assert train_bandit(balanced, "policy_gradient", lr=0.1)[0] > pi_star[0] + 0.05
    assert train_bandit(skewed, "policy_gradient", lr=0.1)[1] > 0.9
    assert train_bandit(skewed, "policy_gradient", lr=3.0)[1] > 0.999


def test_group_loss_with_the_regression_estimator_reports_the_kl_without_adding_it():
    head = bias_head({"temperature": [math.log(3), 0.0]})  # pi = (0.75, 0.25)
    ref = bias_head({"temperature": [0.0, 0.0]})
    batch = collate_groups([{"task": "t", "prompt_id": "p", "samples": [
        {"inputs": torch.zeros(4), "choices": {"temperature": torch.tensor(b)}, "reward": r,
         "behaviour_logps": torch.tensor(math.log(0.5))} for b, r in ((0, 1.0), (1, 0.0))]}])
    loss, m = group_loss(head, batch, beta=0.5, ref_head=ref, estimator="regression")
    loss = loss.detach()
    # u = 0.5 * (log 1.5, log 0.5), centred +-0.25 log 3; A = +-0.5: loss = (0.25 log 3 - 0.5)^2
    assert float(loss) == pytest.approx((0.25 * math.log(3) - 0.5) ** 2, rel=1e-5)
    assert float(m["kl"]) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-5)
    assert "weights/mean" not in m and float(m["loss"]) == pytest.approx(float(loss))
    with pytest.raises(ValueError, match="needs a reference head"):
        group_loss(head, batch, estimator="regression")
    with pytest.raises(ValueError, match="expected_reward_estimator must be one of"):
        group_loss(head, batch, ref_head=ref, estimator="rebel")


# ---------------------------------------------------------------------------------------------------------------
# from a collection: the recomputed behaviour probabilities, refusals, and a training run
@pytest.fixture(scope="module")
def seq_collection(tmp_path_factory):
    """A sequence-level collection, and the probabilities its head sampled each choice from, captured at the draw
    (the collection draws with row seeds, `noise.inverse_cdf`; the head's draws are the only ones over fewer than
    10 bins, the LM's are over its 259-token vocab)."""
    import sys
    from pathlib import Path

    from adaptive_decoder.modeling import noise

    sys.path.insert(0, str(Path(__file__).parent))
    from test_collection import make_adm, prompts, run

    drawn = []
    real = noise.inverse_cdf

    def spy(weights, u):
        if weights.shape[-1] < 10:
            drawn.append(weights / weights.sum(-1, keepdim=True))
        return real(weights, u)

    adm = make_adm("sequence")
    out = tmp_path_factory.mktemp("er_collection")
    noise.inverse_cdf = spy
    try:
        run(adm, out, prompts(6))
    finally:
        noise.inverse_cdf = real
    return adm, out, drawn


def test_group_dataset_recomputes_the_probabilities_the_collection_sampled_from(seq_collection):
    from adaptive_decoder.lpo.groups import GroupDataset
    from adaptive_decoder.lpo.store import read_collection

    adm, out, drawn = seq_collection
    manifest, records = read_collection(out)
    factors = adm.head.config.factors
    # one head call per generate batch (sequence level), one draw per factor in the head's factor order
    assert len(drawn) == len(manifest["shards"]) * len(factors)
    sampled = {}
    for k, shard in enumerate(manifest["shards"]):
        rows = [r for r in records if r["shard"] == shard["name"]]  # in the batch's row order
        for row, rec in enumerate(rows):
            sampled[(rec["prompt_id"], rec["sample_index"])] = math.prod(
                float(drawn[k * len(factors) + i][row, rec["choices"][f]]) for i, f in enumerate(factors))
    data = GroupDataset(out, behaviour_head=adm.head)
    assert len(data) == 6 and data.stats["samples"] == 24 and data.stats["samples_recomputed"] == 0
    for i in range(len(data)):
        item = data[i]
        got = [math.exp(float(s["behaviour_logps"])) for s in item["samples"]]
        want = [sampled[(item["prompt_id"], j)] for j in range(4)]
        assert got == pytest.approx(want, rel=1e-3)  # the cache holds the head inputs in fp16
        assert all(torch.equal(s["inputs"], item["samples"][0]["inputs"]) for s in item["samples"])


def test_group_dataset_refuses_what_it_cannot_recompute(seq_collection, tmp_path):
    import json
    import shutil

    from adaptive_decoder.lpo.groups import GroupDataset

    adm, out, _ = seq_collection
    torch.manual_seed(1)
    other = AdaptiveDecoderHead(adm.head.config)
    with pytest.raises(ValueError, match="sampled by the head with fingerprint .*start from the collecting head"):
        GroupDataset(out, behaviour_head=other)
    argmax = tmp_path / "argmax"
    shutil.copytree(out, argmax)
    m = json.loads((argmax / "manifest.json").read_text())
    m["settings"]["selection"] = "argmax"
    (argmax / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="records selection 'argmax'.*needs choices sampled"):
        GroupDataset(argmax, behaviour_head=adm.head)


def test_token_level_groups_recompute_uncached_inputs_with_the_lm(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_collection import make_adm, prompts, run

    from adaptive_decoder.lpo.groups import GroupDataset
    from adaptive_decoder.lpo.pairs import ModelNeededError

    adm = make_adm("token")
    run(adm, tmp_path / "all", prompts(2), cache_which="all")
    run(adm, tmp_path / "extremes", prompts(2))
    cached = GroupDataset(tmp_path / "all", behaviour_head=adm.head)
    assert cached.stats["samples_recomputed"] == 0
    with pytest.raises(ModelNeededError, match="samples in groups, .* have no cached head inputs"):
        GroupDataset(tmp_path / "extremes", behaviour_head=adm.head)
    recomputed = GroupDataset(tmp_path / "extremes", behaviour_head=adm.head, model=adm.model)
    assert recomputed.stats["samples_recomputed"] == 4  # 2 prompts x 4 samples, best and worst cached
    asked = []  # the loader runs only when inputs are missing, and is told which
    GroupDataset(tmp_path / "all", behaviour_head=adm.head, load_model=lambda m: asked.append(m) or adm.model)
    GroupDataset(tmp_path / "extremes", behaviour_head=adm.head, load_model=lambda m: asked.append(m) or adm.model)
    assert [len(m.head_inputs) for m in asked] == [4]
    for a, b in zip(cached, recomputed):
        for sa, sb in zip(a["samples"], b["samples"]):
            assert sa["inputs"].shape[0] == len(sa["choices"]["temperature"])
            assert torch.allclose(sa["inputs"].float(), sb["inputs"].float(), atol=1e-2)
            assert torch.allclose(sa["behaviour_logps"], sb["behaviour_logps"], atol=1e-3)
    batch = collate_groups([cached[0], cached[1]])
    assert batch["inputs"].dim() == 3 and batch["group"].tolist() == [0] * 4 + [1] * 4


def test_lpo_trainer_runs_the_expected_reward_objective_on_a_collection(seq_collection, tmp_path, monkeypatch):
    from pathlib import Path

    import adaptive_decoder.modeling.models as models
    from adaptive_decoder.lpo.config import LPOConfig
    from adaptive_decoder.lpo.data import build_head_and_dataset
    from adaptive_decoder.lpo.groups import GroupDataset
    from adaptive_decoder.lpo.trainer import LPOTrainer

    _, out, _ = seq_collection
    monkeypatch.setattr(models, "load_base_model", lambda *a, **k: pytest.fail("the LM must not be loaded"))
    opts = dict(output_dir=str(tmp_path / "run"), collection_dir=str(out), loss_type="expected_reward", max_steps=3,
                per_device_train_batch_size=2, logging_steps=1, save_steps=2, report_to="none", progress=False,
                plot=False, torch_threads=1)
    cfg = LPOConfig(**opts)
    head, data = build_head_and_dataset(cfg)  # head={} and seed 0: the collecting head
    assert isinstance(data, GroupDataset)
    trainer = LPOTrainer(cfg, head, data)
    summary = trainer.train()
    assert summary["step"] == 3 and summary["pairs_seen_this_session"] == 6
    assert set(summary["bin_histograms"]["tasks"]) == {"arith", "all"}
    assert sum(summary["bin_histograms"]["tasks"]["all"]["temperature"]) == 6  # one decision per prompt
    row = trainer.history[-1]
    assert {"kl", "weights/mean", "weights/truncated", "advantages/abs_mean", "entropy"} <= set(row)
    assert (Path(cfg.output_dir) / "head" / "model.safetensors").exists()
    with pytest.raises(ValueError, match="start from the collecting head"):
        build_head_and_dataset(LPOConfig(**{**opts, "head": {"num_layers": 3}}))
    with pytest.raises(ValueError, match="synthetic pairs have neither"):
        LPOConfig(**{**opts, "collection_dir": None, "synthetic_pairs": 4})
    with pytest.raises(ValueError, match="advantage_scale must be one of"):
        LPOConfig(**{**opts, "advantage_scale": "rank"})
    with pytest.raises(ValueError, match="expected_reward_estimator must be one of .*got 'rebel'"):
        LPOConfig(**{**opts, "expected_reward_estimator": "rebel"})
    with pytest.raises(ValueError, match="'regression' fits beta \\* log\\(pi / pi_ref\\): it needs reference 'initial'"):
        LPOConfig(**{**opts, "expected_reward_estimator": "regression", "reference": "none"})

    # the regression estimator reaches the trainer: its metrics have the KL and no importance weights
    cfg = LPOConfig(**{**opts, "output_dir": str(tmp_path / "rebel"), "expected_reward_estimator": "regression",
                       "max_steps": 2})
    trainer = LPOTrainer(cfg, *build_head_and_dataset(cfg))
    assert trainer.train()["step"] == 2
    assert "kl" in trainer.history[-1] and "weights/mean" not in trainer.history[-1]


def test_the_experiment_config_reaches_lpo_config_loss_type(tmp_path):
    from pathlib import Path

    from adaptive_decoder.configs import load_config
    from adaptive_decoder.lpo.config import LPOConfig

    path = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "natural_copy_expected_reward.yaml"
    lpo = load_config(path)["lpo"]
    cfg = LPOConfig(**lpo, output_dir=str(tmp_path), collection_dir=str(tmp_path), report_to="none")
    assert (cfg.loss_type, cfg.beta, cfg.importance_clip, cfg.advantage_scale) == ("expected_reward", 0.1, 10.0, "none")
