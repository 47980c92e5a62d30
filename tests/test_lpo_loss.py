"""LPO losses and the pair collator, checked against numbers worked out by hand.

The hand-checkable head: hidden size 2, one linear layer (num_layers=1) whose weight we set to the identity and
bias to zero, so the logits ARE the hidden state and log p(bin 0 | h=[a, b]) = a - log(e^a + e^b).
Values used below (ls(a, b) = a - log(e^a + e^b)):
  ls(2, 0) = -0.1269280110   ls(0, 0) = -0.6931471806   ls(1, 0) = -0.3132616875
  ls(0, 1) = -1.3132616875   ls(0, 3) = -3.0485873516   ls(-1, 1) = -2.1269280110
"""

import copy
import math

import pytest
import torch

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead
from adaptive_decoder.lpo.losses import (aggregate_steps, collate_pairs, compute_loss, lpo_loss, nll_loss,
                                  pair_log_probs)

LS20, LS00, LS10, LS01, LS03, LSm11 = (-0.1269280110429727, -0.6931471805599453, -0.3132616875182228,
                                       -1.3132616875182228, -3.048587351573742, -2.1269280110429727)


def linear_head(factors=("temperature",), level="sequence", scale=1.0, swap_top_p=True):
    cfg = AdaptiveDecoderConfig(hidden_size=2, num_layers=1, temperature_bins=[0.0, 1.0], top_p_bins=[1.0, 0.9],
                                factors=list(factors), level=level)
    head = AdaptiveDecoderHead(cfg)
    with torch.no_grad():
        for f in factors:
            w = torch.eye(2) * scale
            if f == "top_p" and swap_top_p:
                w = w.flip(0)  # top_p logits = [h1, h0]
            head.outputs[f].weight.copy_(w)
            head.outputs[f].bias.zero_()
    return head


def pair(ch, cc, rh, rc, task="t", rc_=1.0, rr_=0.0, pid="p"):
    """ch/rh: hidden list; cc/rc: {factor: index or list of indices}."""
    def as_long(d):
        return {f: torch.tensor(v, dtype=torch.long) for f, v in d.items()}

    return {"chosen_inputs": torch.tensor(ch, dtype=torch.float16), "chosen_choices": as_long(cc),
            "rejected_inputs": torch.tensor(rh, dtype=torch.float16), "rejected_choices": as_long(rc),
            "reward_chosen": rc_, "reward_rejected": rr_, "task": task, "prompt_id": pid}


SEQ_BATCH = [pair([2.0, 0.0], {"temperature": 0}, [0.0, 0.0], {"temperature": 1})]


# --------------------------------------------------------------------------------------------------- collation
def test_collate_sequence_level_stacks_and_casts():
    batch = collate_pairs(SEQ_BATCH * 3)
    assert batch["level"] == "sequence"
    assert batch["chosen_inputs"].shape == (3, 2) and batch["chosen_inputs"].dtype == torch.float32
    assert batch["chosen_choices"]["temperature"].tolist() == [0, 0, 0]
    assert batch["rejected_choices"]["temperature"].tolist() == [1, 1, 1]
    assert batch["reward_chosen"].tolist() == [1.0] * 3 and batch["task"] == ["t"] * 3
    assert "chosen_mask" not in batch


def test_collate_token_level_pads_both_sides_to_one_length_with_masks():
    ex1 = pair([[2, 0], [0, 0]], {"temperature": [0, 1]}, [[0, 0], [1, 0], [0, 3]], {"temperature": [1, 1, 0]})
    ex2 = pair([[1, 1]], {"temperature": [1]}, [[1, 1]], {"temperature": [0]})
    b = collate_pairs([ex1, ex2])
    assert b["level"] == "token"
    assert b["chosen_inputs"].shape == (2, 3, 2) and b["rejected_inputs"].shape == (2, 3, 2)
    assert b["chosen_mask"].tolist() == [[True, True, False], [True, False, False]]
    assert b["rejected_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert b["chosen_choices"]["temperature"].tolist() == [[0, 1, -1], [1, -1, -1]]
    assert b["chosen_inputs"][1, 1:].abs().sum() == 0


@pytest.mark.parametrize("bad, match", [
    ([], "empty"),
    ([{"chosen_inputs": torch.zeros(2)}], "lacks keys"),
    ([pair([1.0, 0.0], {"temperature": 0}, [[1.0, 0.0]], {"temperature": [0]})], "mix levels"),
    ([pair([1.0, 0.0], {"temperature": 0}, [1.0, 0.0], {"top_p": 0})], "factors"),
    ([pair([[1.0, 0.0]], {"temperature": [0, 1]}, [[1.0, 0.0]], {"temperature": [0]})], "shape"),
    ([pair([1.0, 0.0], {"temperature": 0}, [1.0, 0.0, 3.0], {"temperature": 0})], "hidden size"),
    ([pair([float("nan"), 0.0], {"temperature": 0}, [1.0, 0.0], {"temperature": 0})], "NaN"),
])
def test_collate_rejects_malformed_pairs_with_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        collate_pairs(bad)


# --------------------------------------------------------------------------------------------------- log-probs
def test_sequence_log_probs_by_hand():
    out = pair_log_probs(linear_head(), collate_pairs(SEQ_BATCH))
    assert out["chosen_logps"].item() == pytest.approx(LS20, abs=1e-6)
    assert out["rejected_logps"].item() == pytest.approx(LS00, abs=1e-6)
    # entropy of softmax([2,0]) and softmax([0,0]), averaged: (0.3655152 + 0.6931472) / 2
    assert out["entropy"].item() == pytest.approx(0.5292405178235766, abs=1e-6)


def test_factorized_joint_log_prob_is_sum_over_active_factors():
    # temperature logits = h, top_p logits = [h1, h0]
    head = linear_head(factors=("temperature", "top_p"))
    ex = pair([2.0, 0.0], {"temperature": 0, "top_p": 1}, [1.0, -1.0], {"temperature": 1, "top_p": 0})
    out = pair_log_probs(head, collate_pairs([ex]))
    # chosen: temp bin0 of [2,0] + top_p bin1 of [0,2] = 2 * ls(2,0)
    assert out["chosen_logps"].item() == pytest.approx(2 * LS20, abs=1e-6)
    # rejected: temp bin1 of [1,-1] + top_p bin0 of [-1,1] = 2 * ls(-1,1)
    assert out["rejected_logps"].item() == pytest.approx(2 * LSm11, abs=1e-6)
    # an inactive factor contributes nothing: the temperature-only head gives just the first term
    out_t = pair_log_probs(linear_head(), collate_pairs([pair([2.0, 0.0], {"temperature": 0}, [1.0, -1.0], {"temperature": 1})]))
    assert out_t["chosen_logps"].item() == pytest.approx(LS20, abs=1e-6)


TOKEN_PAIR = pair([[2, 0], [0, 0]], {"temperature": [0, 1]}, [[0, 0], [1, 0], [0, 3]], {"temperature": [1, 1, 0]})


@pytest.mark.parametrize("aggregation, chosen, rejected, loss", [
    # chosen: ls(2,0) + ls(0,0) = -0.820075; rejected: ls(0,0) + ls(0,1) + ls(0,3) = -5.054996
    ("sum", -0.820075191602918, -5.05499621965191, 0.5036537752623749),   # -logsig(0.1 * 4.234921)
    # means over 2 and 3 real steps: -0.410038, -1.684999
    ("mean", -0.410037595801459, -1.68499873988397, 0.6314296560281233),  # -logsig(0.1 * 1.274961)
])
def test_token_level_sum_and_mean_over_steps(aggregation, chosen, rejected, loss):
    head = linear_head(level="token")
    batch = collate_pairs([TOKEN_PAIR])
    out = pair_log_probs(head, batch, aggregation)
    assert out["chosen_logps"].item() == pytest.approx(chosen, abs=1e-6)
    assert out["rejected_logps"].item() == pytest.approx(rejected, abs=1e-6)
    # mean entropy over the 5 real decisions; padding (the chosen side's 3rd step) does not count
    assert out["entropy"].item() == pytest.approx(0.5049392592403518, abs=1e-6)
    value, _ = compute_loss(head, batch, beta=0.1, aggregation=aggregation)
    assert value.item() == pytest.approx(loss, abs=1e-6)


def test_aggregate_steps_ignores_nan_in_padding():
    vals = torch.tensor([[1.0, 2.0, float("nan")]])
    mask = torch.tensor([[True, True, False]])
    assert aggregate_steps(vals, mask, "sum").item() == 3.0
    assert aggregate_steps(vals, mask, "mean").item() == 1.5
    with pytest.raises(ValueError, match="aggregation"):
        aggregate_steps(vals, mask, "max")


# --------------------------------------------------------------------------------------------------- losses
def test_lpo_loss_without_reference_by_hand():
    # -log sigmoid(0.5 * (ls(2,0) - ls(0,0))) = -log sigmoid(0.283110) = 0.561578
    loss, metrics = compute_loss(linear_head(), collate_pairs(SEQ_BATCH), beta=0.5)
    assert loss.item() == pytest.approx(0.5615779861932398, abs=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.5 * LS20, abs=1e-6)
    assert metrics["rewards/margins"].item() == pytest.approx(0.5 * (LS20 - LS00), abs=1e-6)
    assert metrics["rewards/accuracies"].item() == 1.0


def test_lpo_loss_with_reference_head_by_hand():
    # reference logits = 0.5 * h: chosen ls(1,0) = -0.313262, rejected ls(0,0)
    # -log sigmoid(0.5 * ((ls(2,0) - ls(1,0)) - (ls(0,0) - ls(0,0)))) = -log sigmoid(0.093167) = 0.647648
    head, ref = linear_head(), linear_head(scale=0.5)
    loss, metrics = compute_loss(head, collate_pairs(SEQ_BATCH), beta=0.5, ref_head=ref)
    assert loss.item() == pytest.approx(0.6476483767227256, abs=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.5 * (LS20 - LS10), abs=1e-6)
    assert metrics["rewards/rejected"].item() == pytest.approx(0.0, abs=1e-7)
    # a reference equal to the policy gives log 2 and zero margin (accuracy 0: chosen > rejected is strict)
    loss_same, m = compute_loss(head, collate_pairs(SEQ_BATCH), beta=0.5, ref_head=copy.deepcopy(head))
    assert loss_same.item() == pytest.approx(math.log(2), abs=1e-6)
    assert m["rewards/margins"].item() == 0.0 and m["rewards/accuracies"].item() == 0.0


def test_nll_loss_by_hand():
    loss, metrics = compute_loss(linear_head(), collate_pairs(SEQ_BATCH), loss_type="nll")
    assert loss.item() == pytest.approx(0.1269280110429727, abs=1e-6)  # -ls(2,0)
    assert nll_loss(torch.tensor([-0.5, -2.0])).tolist() == [0.5, 2.0]


def test_lpo_loss_tensor_form_and_argument_errors():
    losses, cr, rr = lpo_loss(torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0]), beta=1.0)
    # -log sigmoid(1) = 0.313262, -log sigmoid(-2) = 2.126928
    assert losses.tolist() == pytest.approx([0.3132616875182228, 2.1269280110429727], abs=1e-6)
    assert cr.tolist() == [-1.0, -3.0] and rr.tolist() == [-2.0, -1.0]
    with pytest.raises(ValueError, match="both reference"):
        lpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), None)
    with pytest.raises(ValueError, match="beta"):
        lpo_loss(torch.zeros(1), torch.zeros(1), beta=0.0)
    with pytest.raises(ValueError, match="loss_type"):
        compute_loss(linear_head(), collate_pairs(SEQ_BATCH), loss_type="dpo")


# --------------------------------------------------------------------------------------------------- gradients
def test_gradient_matches_closed_form_and_finite_differences():
    head = linear_head()
    loss, _ = compute_loss(head, collate_pairs(SEQ_BATCH), beta=0.5)
    loss.backward()
    # d loss / d z = -beta * sigmoid(-beta * z) with z = log pi_c - log pi_r; d log pi_c / d logits = onehot - p.
    # Only the chosen sample (h=[2,0]) has nonzero hidden, so dW[:, 0] = 2 * dloss/dlogits_c, and the bias gets
    # both samples' logits gradients.
    z = LS20 - LS00
    g = -0.5 / (1 + math.exp(0.5 * z))
    p_c = torch.tensor([math.exp(LS20), 1 - math.exp(LS20)])
    d_logits_c = g * (torch.tensor([1.0, 0.0]) - p_c)
    d_logits_r = -g * (torch.tensor([0.0, 1.0]) - torch.tensor([0.5, 0.5]))
    w = head.outputs["temperature"].weight.grad
    assert torch.allclose(w[:, 0], 2 * d_logits_c, atol=1e-6)
    assert torch.allclose(w[:, 1], torch.zeros(2), atol=1e-7)
    assert torch.allclose(head.outputs["temperature"].bias.grad, d_logits_c + d_logits_r, atol=1e-6)

    # and the whole thing against finite differences in float64 on a deeper head
    torch.manual_seed(0)
    cfg = AdaptiveDecoderConfig(hidden_size=4, num_layers=2, intermediate_size=5, level="token")
    deep = AdaptiveDecoderHead(cfg).double()
    ref = copy.deepcopy(deep)
    g = torch.Generator().manual_seed(0)
    ex = {"chosen_inputs": torch.randn(3, 4, generator=g), "rejected_inputs": torch.randn(2, 4, generator=g),
          "chosen_choices": {f: torch.randint(0, len(cfg.bins(f)), (3,), generator=g) for f in cfg.factors},
          "rejected_choices": {f: torch.randint(0, len(cfg.bins(f)), (2,), generator=g) for f in cfg.factors}}
    batch = collate_pairs([ex])
    for k in ("chosen_inputs", "rejected_inputs"):
        batch[k] = batch[k].double()
    with torch.no_grad():  # move the policy away from the reference so the ratio terms matter
        for p in deep.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    weight = deep.outputs["top_k"].weight

    def f(w):
        with torch.no_grad():
            weight.copy_(w)
        return compute_loss(deep, batch, beta=0.7, ref_head=ref)[0]

    w0 = weight.detach().clone()
    deep.zero_grad()
    f(w0).backward()
    analytic = weight.grad.clone()
    numeric = torch.zeros_like(w0)
    eps = 1e-6
    for idx in range(w0.numel()):
        d = torch.zeros_like(w0).view(-1)
        d[idx] = eps
        d = d.view_as(w0)
        numeric.view(-1)[idx] = (f(w0 + d).item() - f(w0 - d).item()) / (2 * eps)
    assert torch.allclose(analytic, numeric, atol=1e-7), (analytic, numeric)


# --------------------------------------------------------------------------------------------------- behaviour
def _synthetic_batch(g, n, level, chosen_bin, rejected_bins, hidden=8, steps=4):
    exs = []
    for _ in range(n):
        shape = (hidden,) if level == "sequence" else (steps, hidden)
        cshape = () if level == "sequence" else (steps,)
        exs.append({"chosen_inputs": torch.randn(shape, generator=g),
                    "chosen_choices": {"temperature": torch.full(cshape, chosen_bin)},
                    "rejected_inputs": torch.randn(shape, generator=g),
                    "rejected_choices": {"temperature": torch.randint(rejected_bins[0], rejected_bins[1], cshape, generator=g)}})
    return collate_pairs(exs)


@pytest.mark.parametrize("level, reference", [("sequence", True), ("sequence", False), ("token", True)])
def test_training_on_low_temperature_chosen_moves_argmax_to_lowest_bin(level, reference):
    torch.manual_seed(0)
    cfg = AdaptiveDecoderConfig(hidden_size=8, num_layers=2, intermediate_size=16, factors=["temperature"], level=level)
    head = AdaptiveDecoderHead(cfg)
    ref = copy.deepcopy(head).requires_grad_(False) if reference else None
    g = torch.Generator().manual_seed(1)
    probe = torch.randn(256, 8, generator=g)
    before = head.select(probe, "argmax")["temperature"]
    assert (before == 0).float().mean() < 0.9  # not already there
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(60):
        batch = _synthetic_batch(g, 16, level, chosen_bin=0, rejected_bins=(1, 6))
        loss, metrics = compute_loss(head, batch, beta=0.5, ref_head=ref)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = head.select(probe, "argmax")["temperature"]
    assert (after == 0).all(), after.bincount(minlength=6)
    assert metrics["rewards/accuracies"].item() == 1.0 and metrics["rewards/margins"].item() > 0


def test_nll_baseline_follows_whatever_is_chosen():
    # the NLL loss ignores the rejected side: with chosen = highest bin it goes to the highest bin even though
    # the rejected samples also sit there most of the time (LPO would learn nothing from such pairs)
    torch.manual_seed(0)
    head = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=8, num_layers=2, intermediate_size=16,
                                                     factors=["temperature"], level="sequence"))
    g = torch.Generator().manual_seed(2)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(40):
        batch = _synthetic_batch(g, 16, "sequence", chosen_bin=5, rejected_bins=(4, 6))
        loss, _ = compute_loss(head, batch, loss_type="nll")
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (head.select(torch.randn(64, 8, generator=g), "argmax")["temperature"] == 5).all()


# ----------------------------------------------------------------------------- joint: temperatures as tokens
from adaptive_decoder.lpo.losses import joint_loss, latent_log_probs  # noqa: E402
from adaptive_decoder.modeling.response_logps import LOG_GREEDY_FLOOR, temperature_log_probs  # noqa: E402

SIG = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
P20 = (0.8807970779778823, 0.11920292202211755)  # softmax([2, 0])


def with_response(ex, c_resp, c_lm, r_resp, r_lm, c_table=None, r_table=None):
    ex = dict(ex, chosen_response_logp=c_resp, chosen_lm_logp=c_lm, rejected_response_logp=r_resp, rejected_lm_logp=r_lm)
    n = lambda side: 1 if ex[f"{side}_inputs"].dim() == 1 else ex[f"{side}_inputs"].shape[0]  # noqa: E731
    ex["chosen_token_logps"] = torch.tensor(c_table) if c_table is not None else torch.zeros(n("chosen"), 2)
    ex["rejected_token_logps"] = torch.tensor(r_table) if r_table is not None else torch.zeros(n("rejected"), 2)
    return ex


# pair A: chosen h=[2,0] bin 0, rejected h=[0,0] bin 1; response ratios +0.4 (chosen) and -0.6 (rejected)
# pair B: chosen h=[0,0] bin 0, rejected h=[1,0] bin 0; response ratios -1.0 and +0.5 (the LM prefers the rejected)
JOINT_BATCH = [with_response(pair([2.0, 0.0], {"temperature": 0}, [0.0, 0.0], {"temperature": 1}), -1.0, -1.4, -3.0, -2.4),
               with_response(pair([0.0, 0.0], {"temperature": 0}, [1.0, 0.0], {"temperature": 0}), -2.0, -1.0, -1.5, -2.0)]
BETA = 0.5
M_SEP = (BETA * (LS20 - LS00), BETA * (LS00 - LS10))          # 0.2831095848, -0.1900572465
M_JOINT = (M_SEP[0] + BETA * (0.4 + 0.6), M_SEP[1] + BETA * (-1.0 - 0.5))


def test_joint_loss_adds_the_response_margin_hand_computed():
    batch = collate_pairs(JOINT_BATCH)
    loss, metrics = compute_loss(linear_head(), batch, loss_type="joint", beta=BETA)
    want = [math.log1p(math.exp(-m)) for m in M_JOINT]  # -log sigmoid(m)
    assert loss.item() == pytest.approx(sum(want) / 2, rel=1e-6)
    assert metrics["rewards/margins"].item() == pytest.approx(sum(M_JOINT) / 2, rel=1e-6)
    # the functional form directly, with reference terms: ratios subtract the reference head's log-probs
    losses, _, _ = joint_loss(torch.tensor([LS20]), torch.tensor([LS00]), torch.tensor([0.4]), torch.tensor([-0.6]),
                              torch.tensor([LS10]), torch.tensor([LS01]), beta=BETA)
    m = BETA * ((LS20 - LS10) - (LS00 - LS01)) + BETA * 1.0
    assert losses.item() == pytest.approx(math.log1p(math.exp(-m)), rel=1e-6)


def test_joint_gradient_is_the_separate_gradient_scaled_per_pair():
    """d/dtheta of -log sigmoid(m) = -sigmoid(-m) dm: the response term only rescales each pair's gradient."""
    for i in range(2):
        batch = collate_pairs([JOINT_BATCH[i]])
        grads = {}
        for lt in ("lpo", "joint"):
            head = linear_head()
            compute_loss(head, batch, loss_type=lt, beta=BETA)[0].backward()
            grads[lt] = head.outputs["temperature"].bias.grad.clone()
        scale = SIG(-M_JOINT[i]) / SIG(-M_SEP[i])
        torch.testing.assert_close(grads["joint"], grads["lpo"] * scale)
    # and pair A's bias gradient by hand: -sigmoid(-m) * beta * [(e_c - p_c) - (e_r - p_r)]
    d = (1 - P20[0]) - (0 - 0.5)
    want = [-SIG(-M_JOINT[0]) * BETA * d, SIG(-M_JOINT[0]) * BETA * d]
    head = linear_head()
    compute_loss(head, collate_pairs([JOINT_BATCH[0]]), loss_type="joint", beta=BETA)[0].backward()
    torch.testing.assert_close(head.outputs["temperature"].bias.grad, torch.tensor(want))


def test_response_loss_types_refuse_a_batch_without_token_logps():
    with pytest.raises(ValueError, match="response_logps=True"):
        compute_loss(linear_head(), collate_pairs(SEQ_BATCH), loss_type="joint")


# ----------------------------------------------------------------------------- latent: temperatures as latents
L = math.log
C_TABLE = [[L(0.5), L(0.2)], [L(0.1), L(0.4)]]     # log P(y_t | tau_k), chosen: 2 tokens x 2 bins
R_TABLE = [[L(0.3), L(0.6)], [L(0.25), L(0.05)]]
LATENT_PAIR = with_response(pair([[2.0, 0.0], [0.0, 0.0]], {"temperature": [0, 1]}, [[1.0, 0.0], [0.0, 1.0]],
                                 {"temperature": [1, 0]}), 0.0, 0.0, 0.0, 0.0, C_TABLE, R_TABLE)


def test_latent_loss_token_level_hand_computed():
    # pi(tau | h) = softmax(h): chosen steps [0.8808, 0.1192], [0.5, 0.5]; rejected [0.7311, 0.2689], [0.2689, 0.7311]
    pc = [0.5 * 0.8807970780 + 0.2 * 0.1192029220, 0.1 * 0.5 + 0.4 * 0.5]              # 0.4642391, 0.25
    pr = [0.3 * 0.7310585786 + 0.6 * 0.2689414214, 0.25 * 0.2689414214 + 0.05 * 0.7310585786]  # 0.3806824, 0.1037883
    # reference head with zero weights: pi_ref = [0.5, 0.5] everywhere
    pc_ref, pr_ref = [0.35, 0.25], [0.45, 0.15]
    margin = sum(map(L, pc)) - sum(map(L, pc_ref)) - (sum(map(L, pr)) - sum(map(L, pr_ref)))
    ref = linear_head(level="token")
    with torch.no_grad():
        ref.outputs["temperature"].weight.zero_()
    batch = collate_pairs([LATENT_PAIR])
    loss, metrics = compute_loss(linear_head(level="token"), batch, loss_type="latent", beta=1.0, ref_head=ref)
    assert metrics["logps/chosen"].item() == pytest.approx(sum(map(L, pc)), rel=1e-6)
    assert metrics["logps/rejected"].item() == pytest.approx(sum(map(L, pr)), rel=1e-6)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-margin)), rel=1e-6)


def test_latent_log_probs_sequence_level_marginalises_one_tau_for_the_whole_response():
    # pi = softmax([2, 0]); P(y | tau_0) = 0.5 * 0.1 = 0.05, P(y | tau_1) = 0.2 * 0.4 = 0.08
    got = latent_log_probs(linear_head(), torch.tensor([[2.0, 0.0]]), torch.tensor([C_TABLE]),
                           torch.ones(1, 2, dtype=torch.bool))
    assert got.item() == pytest.approx(L(0.05 * P20[0] + 0.08 * P20[1]), rel=1e-6)


def test_temperature_log_probs_greedy_bin_is_a_point_mass_with_a_floor():
    logits = torch.tensor([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]])
    got = temperature_log_probs(logits, torch.tensor([0, 1]), [0.0, 0.5])
    assert got[0, 0].item() == 0.0 and got[1, 0].item() == pytest.approx(LOG_GREEDY_FLOOR)
    assert got[1, 1].item() == pytest.approx(2 - L(math.exp(4) + math.exp(2) + 1), rel=1e-6)  # softmax([4, 2, 0])[1]
