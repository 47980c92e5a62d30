"""The expected-reward objective on a collection's scored groups, beside LPO's pairwise loss, and its two estimators.

What it optimizes. A sequence-level head picks a latent choice c (one bin per active factor) from pi(c | h) at a
prompt's last hidden state h, and the sample decoded with c scores R. The bar scores the MEAN reward, so the head
should maximise

    J(pi) = E_h [ sum_c pi(c | h) E[R | h, c] ]  -  beta * E_h KL(pi(. | h) || pi_ref(. | h)),

the KL-regularised objective whose beta is DPO's beta (so `LPOConfig.beta` is the same knob for both losses).
LPO (`lpo_loss`) raises the log-odds of the chosen over the rejected sample of preference pairs: it follows which
bin WINS within a prompt, not by how much. A bin that wins most head-to-heads by a little and loses the others by
a lot is favoured by LPO and disfavoured by J (`pairs.preference_mean_disagreements` names such bins in a
collection; tests/test_expected_reward.py builds one by hand).

The policy-gradient estimate ("policy_gradient"), from the collection alone (no LM forward). The N samples of a
prompt were drawn from the behaviour policy mu of the collection: per factor (1 - epsilon) * softmax(collecting
head's logits) + epsilon / K, i.e. `AdaptiveDecoderHead.select` with the collection's recorded epsilon
(`behaviour_log_probs`). For sample i:

    A_i  = R_i - mean_j R_j          group-relative advantage (advantage_scale="std": / (std_j R_j + 1e-6))
    w_i  = pi(c_i | h) / mu(c_i | h) importance weight, truncated at `clip` and not differentiated
    loss = - mean over prompts of (1 / N) sum_i min(w_i, clip) * A_i * log pi(c_i | h)
           + beta * mean over decisions of KL(pi || pi_ref)

The first term's gradient is -(1/N) sum_i w_i A_i grad log pi(c_i | h), the score-function gradient of E_pi[A]
evaluated with mu's samples. With the group mean as baseline A_i = (N - 1)/N * (R_i - mean of the OTHER samples),
a baseline independent of sample i, and E_mu[w grad log pi] = sum_c grad pi(c) = 0; so while no weight is
truncated the gradient is unbiased for (N - 1)/N * grad E_pi[R]. Truncation (IMPALA's rho-bar) bounds the
weights' variance: where pi gives a choice more than `clip` times mu's probability, its samples count as if the
ratio were `clip`, a bias towards mu that the KL term (pi_ref = the collecting head) asks for anyway. "std"
weighs every prompt alike whatever its reward spread, at the price of no longer being the mean reward's gradient.

Token level. A token-level head decides at every step; the sample's advantage is each step's, each step has its own
ratio pi(c_t | h_t) / mu(c_t | h_t) (PPO / GRPO's per-step ratio; the product over steps would be exact but its
variance grows with the length), and the steps sum (or average) as LPO's token aggregation does.

Estimators (`LPOConfig.expected_reward_estimator`). The policy gradient above ("policy_gradient") follows J's
gradient, which scales each logit's update by pi(c): from a non-uniform reference the probable bins grow fastest, a
near-deterministic pi has a vanishing gradient, and weights pi / mu ~ 0 silence the other bins' samples, so with a
large step it can settle on the reference's most probable bin instead of J's maximiser; on a finite group its
stationary point also moves with the draw (the counts n_c / N against mu(c)). "regression" (REBEL, Gao et
al. 2024, arXiv 2404.16767) uses J's closed-form maximiser pi* = pi_ref exp(Q / beta) / Z, Q(h, c) = E[R | h, c]:
beta * log(pi* / pi_ref) = Q - beta log Z(h), so it regresses the scaled log-ratio on the group-relative reward,

    u_i  = beta * (log pi(c_i | h) - log pi_ref(c_i | h))   summed over factors (token level: over the steps, summed
                                                             or averaged as the token aggregation says)
    loss = mean over prompts of (1 / N) sum_i ((u_i - mean_j u_j) - A_i)^2       (`regression_loss`)

Centring removes the unknown beta log Z(h). With x_i = u_i - R_i, sum over ordered pairs (i, j) of (x_i - x_j)^2 =
2N sum_i (x_i - mean x)^2, so the per-prompt term equals (1 / (2 N^2)) sum over all ordered within-prompt pairs of
((u_i - u_j) - (R_i - R_j))^2: IPO's squared loss on every pair, with the reward gap as the target margin. It needs
no importance weights: u depends on a sample only through its (prompt, choice) cell, u(c) = Q(h, c) + const zeroes
every residual of exact rewards whatever the cells' sample counts, and reward noise of mean 0 given the cell adds a
constant to the expected loss; so mu decides how much each cell counts, not where the minimum is, and the fixed point
is pi* from any start. Its conditions: every bin sampled at the prompt (the collection's epsilon gives each at least
epsilon / K), pi_ref present (reference "initial"), and with several factors the fit is the least-squares
projection of Q onto a sum of per-factor terms (pi factorises). advantage_scale "std" targets A / std, i.e. the
optimum at beta * std. Pick "regression" to reach J's optimum from a head far from it; "policy_gradient" for small
steps near the collecting head, where its truncated weights keep the update close to mu.
"""

from __future__ import annotations

import torch

from .losses import aggregate_steps
from ..modeling.head import exploration_probs

GROUP_LOSS_TYPES = ("expected_reward",)
ADVANTAGE_SCALES = ("none", "std")
ESTIMATORS = ("policy_gradient", "regression")


def behaviour_log_probs(head, inputs: torch.Tensor, choices: dict, epsilon: float) -> torch.Tensor:
    """log mu(c | h) of the choices the collection drew: the sum over active factors of
    log((1 - epsilon) * softmax(logits) + epsilon / K)[c_f], the distribution `AdaptiveDecoderHead.select` samples
    ("sample" selection). inputs [..., H], choices {factor: [...]}; an index of -1 (padding) contributes 0."""
    total = torch.zeros(inputs.shape[:-1], dtype=torch.float32)
    with torch.no_grad():
        for f, logits in head(inputs).items():
            p = exploration_probs(logits, epsilon)  # what select() drew from: a recomputed mu equals it to rounding
            idx = choices[f].long().to(p.device)
            lp = p.log().gather(-1, idx.clamp(min=0).unsqueeze(-1)).squeeze(-1).cpu()
            total = total + torch.where(idx.cpu() >= 0, lp, torch.zeros_like(lp))
    return total


def group_advantages(rewards: torch.Tensor, group: torch.Tensor, scale: str = "none") -> torch.Tensor:
    """[S] reward minus its prompt's mean (`group[i]` = sample i's prompt, 0..G-1); "std" divides by the prompt's
    population standard deviation + 1e-6 (a prompt whose samples all tie has advantages 0 either way)."""
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"advantage_scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    n = int(group.max()) + 1
    count = torch.bincount(group, minlength=n).to(rewards.dtype)
    sums = torch.zeros(n, dtype=rewards.dtype, device=rewards.device).index_add_(0, group, rewards)
    a = rewards - (sums / count)[group]
    if scale == "std":
        std = (torch.zeros(n, dtype=rewards.dtype, device=rewards.device).index_add_(0, group, a * a) / count).sqrt()
        a = a / (std[group] + 1e-6)
    return a


def expected_reward_loss(logps: torch.Tensor, behaviour_logps: torch.Tensor, advantages: torch.Tensor,
                         group: torch.Tensor, mask: torch.Tensor | None = None, clip: float = 10.0,
                         aggregation: str = "sum") -> tuple[torch.Tensor, torch.Tensor]:
    """The policy-gradient term (module docstring) and the truncated weights.

    logps, behaviour_logps: [S] (sequence level) or [S, T] (token level, `mask` True on real steps): log pi and
    log mu of each decision's choices. Every prompt weighs the same: a sample's term is divided by its prompt's
    sample count and by the number of prompts. Returns (scalar loss, truncated weights, detached, logps' shape).
    """
    if clip <= 0:
        raise ValueError(f"importance_clip must be > 0, got {clip}")
    weights = (logps.detach() - behaviour_logps.to(logps.dtype)).exp().clamp(max=clip)
    adv = advantages if logps.dim() == 1 else advantages[:, None]
    per_sample = aggregate_steps(-weights * adv * logps, mask, aggregation)
    n = int(group.max()) + 1
    count = torch.bincount(group, minlength=n).to(per_sample.dtype)
    return (per_sample / count[group]).sum() / n, weights


def regression_loss(logps: torch.Tensor, ref_logps: torch.Tensor, advantages: torch.Tensor, group: torch.Tensor,
                    mask: torch.Tensor | None = None, beta: float = 0.1, aggregation: str = "sum") -> torch.Tensor:
    """The regression estimator's loss (module docstring): mean over prompts of (1 / N) sum_i ((u_i - mean_j u_j)
    - A_i)^2 with u_i = beta * (log pi - log pi_ref) of sample i's choices, aggregated over its real steps.

    logps, ref_logps: [S] or [S, T] (token level, `mask` True on real steps); advantages [S], group [S] as in
    `group_advantages`, whose "none" scale is exactly the centring by the prompt's mean."""
    u = beta * aggregate_steps(logps - ref_logps.to(logps.dtype), mask, aggregation)
    residual = group_advantages(u, group) - advantages.to(u.dtype)
    n = int(group.max()) + 1
    count = torch.bincount(group, minlength=n).to(u.dtype)
    return (torch.zeros(n, dtype=u.dtype, device=u.device).index_add_(0, group, residual * residual) / count).mean()


def kl_to_reference(log_dists: dict, ref_log_dists: dict, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over decisions of KL(pi || pi_ref) = sum over factors and bins of p (log p - log p_ref), exact (the
    distributions are categorical); {factor: [..., K]} log-probabilities, `mask` picks the real token-level steps."""
    kl = sum((lp.exp() * (lp - ref_log_dists[f].to(lp.dtype))).sum(-1) for f, lp in log_dists.items())
    return kl[mask].mean() if mask is not None else kl.mean()


# ---------------------------------------------------------------------------------------------------------------
def collate_groups(examples: list) -> dict:
    """Flatten prompt groups into one batch of samples: "inputs" [S, H] or [S, T, H] (zeros in padding, float32),
    "mask" [S, T] (token level), "choices" {factor: [S] or [S, T]} (-1 in padding), "behaviour_logps" like the
    choices (0 in padding), "rewards" [S], "group" [S] (the sample's prompt, 0..G-1), "first" [G] (each prompt's
    first row), "task" and "prompt_id" (per prompt), "level"."""
    if not examples:
        raise ValueError("collate_groups got an empty list of groups")
    bad = [i for i, ex in enumerate(examples) if not isinstance(ex, dict) or not ex.get("samples")]
    if bad:
        raise ValueError(f"items {bad[:5]} are not prompt groups with samples (the expected-reward objective trains on "
                         "GroupDataset items, not preference pairs)")
    samples = [(g, s) for g, ex in enumerate(examples) for s in ex["samples"]]
    level = "sequence" if samples[0][1]["inputs"].dim() == 1 else "token"
    factors = sorted(samples[0][1]["choices"])
    batch = {"level": level, "group": torch.tensor([g for g, _ in samples]),
             "rewards": torch.tensor([float(s["reward"]) for _, s in samples]),
             "task": [str(ex["task"]) for ex in examples], "prompt_id": [str(ex["prompt_id"]) for ex in examples]}
    batch["first"] = torch.tensor([0] + [len(ex["samples"]) for ex in examples[:-1]]).cumsum(0)
    if level == "sequence":
        batch["inputs"] = torch.stack([s["inputs"].float() for _, s in samples])
        batch["choices"] = {f: torch.stack([s["choices"][f].long() for _, s in samples]) for f in factors}
        batch["behaviour_logps"] = torch.stack([s["behaviour_logps"].float() for _, s in samples])
        return batch
    t, n = max(s["inputs"].shape[0] for _, s in samples), len(samples)
    batch["inputs"] = torch.zeros(n, t, samples[0][1]["inputs"].shape[-1])
    batch["mask"] = torch.zeros(n, t, dtype=torch.bool)
    batch["choices"] = {f: torch.full((n, t), -1, dtype=torch.long) for f in factors}
    batch["behaviour_logps"] = torch.zeros(n, t)
    for i, (_, s) in enumerate(samples):
        k = s["inputs"].shape[0]
        batch["inputs"][i, :k], batch["mask"][i, :k] = s["inputs"].float(), True
        batch["behaviour_logps"][i, :k] = s["behaviour_logps"].float()
        for f in factors:
            batch["choices"][f][i, :k] = s["choices"][f].long()
    return batch


def group_policy(head, batch: dict) -> dict:
    """One head call: {"logps": log pi of each decision's choices ([S] or [S, T]), "log_dists": {factor: the
    head's log-probabilities over its bins}}."""
    log_dists = {f: logits.float().log_softmax(-1) for f, logits in head(batch["inputs"]).items()}
    logps = sum(lp.gather(-1, batch["choices"][f].clamp(min=0).unsqueeze(-1)).squeeze(-1)
                for f, lp in log_dists.items())
    return {"logps": logps, "log_dists": log_dists}


def group_loss(head, batch: dict, *, beta: float = 0.1, ref_head=None, aggregation: str = "sum", clip: float = 10.0,
               advantage_scale: str = "none", estimator: str = "policy_gradient", policy_out: dict | None = None):
    """Mean loss over the batch's prompts and detached scalar metrics, as `losses.compute_loss` returns them.

    `estimator`: one of ESTIMATORS (module docstring). `ref_head=None`: no KL term, and refused by "regression",
    whose target is the log-ratio to it. `policy_out`: `group_policy`'s output computed by the caller (through a
    wrapped module, so DDP / DeepSpeed see the forward). Metrics: loss, kl, entropy, advantages/abs_mean,
    rewards/mean, and for "policy_gradient" weights/mean and weights/truncated (the share of decisions whose weight
    hit `clip`). "regression" reports the KL without adding it: beta already sets the optimum its fit targets."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"expected_reward_estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if estimator == "regression" and ref_head is None:
        raise ValueError("the regression estimator fits beta * log(pi / pi_ref): it needs a reference head "
                         "(reference 'initial')")
    out = policy_out if policy_out is not None else group_policy(head, batch)
    mask = batch.get("mask")
    adv = group_advantages(batch["rewards"], batch["group"], advantage_scale)
    metrics = {}
    if ref_head is not None:
        with torch.no_grad():
            ref = group_policy(ref_head, batch)
        kl = kl_to_reference(out["log_dists"], ref["log_dists"], mask)
        metrics["kl"] = kl.detach()
    if estimator == "regression":
        loss = regression_loss(out["logps"], ref["logps"], adv, batch["group"], mask, beta, aggregation)
    else:
        loss, weights = expected_reward_loss(out["logps"], batch["behaviour_logps"], adv, batch["group"], mask, clip,
                                             aggregation)
        loss = loss + beta * kl if ref_head is not None else loss
        real = mask if mask is not None else torch.ones_like(weights, dtype=torch.bool)
        metrics.update({"weights/mean": weights[real].mean(),
                        "weights/truncated": (weights[real] >= clip).float().mean()})
    with torch.no_grad():
        ent = -sum((lp.exp() * lp).sum(-1) for lp in out["log_dists"].values())
        metrics.update({"loss": loss.detach(), "entropy": ent[mask].mean() if mask is not None else ent.mean(),
                        "advantages/abs_mean": adv.abs().mean(), "rewards/mean": batch["rewards"].mean()})
    return loss, metrics


__all__ = ["ADVANTAGE_SCALES", "ESTIMATORS", "GROUP_LOSS_TYPES", "behaviour_log_probs", "collate_groups",
           "expected_reward_loss", "group_advantages", "group_loss", "group_policy", "kl_to_reference",
           "regression_loss"]
