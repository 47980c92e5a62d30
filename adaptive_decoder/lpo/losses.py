"""Latent Preference Optimization (LPO) losses on the head's discrete choices, and the pair collator.

A preference pair holds, for a chosen and a rejected sample of the same prompt, the hidden states the head saw
and the bins it picked (see `adaptive_decoder.lpo.pairs`). The policy is the head alone: the LM is frozen, so the
only trainable log-probability is that of the latent choices,

    log pi(tau) = sum over active factors of log pi_f(bin_f | h)                  (factorized head)
    sequence level: one decision per sample;  token level: sum (or mean) over the generated steps.

Losses (per pair; the batch loss is the mean):
    "lpo":  -log sigmoid(beta * [(log pi(tau_c) - log pi_ref(tau_c)) - (log pi(tau_r) - log pi_ref(tau_r))])
            with pi_ref the frozen initial head, or with no reference terms at all (`ref_*_logps=None`,
            the paper's Eq. 10 form).
    "nll":  -log pi(tau_c), the baseline the paper shows drifting to high temperature (chosen samples are
            high-temperature ones most of the time, whatever the task).
    "joint":  temperatures as tokens, DPO over P(y, tau) = P(y | tau) pi(tau) (`joint_loss`): the "lpo" margin
            plus a response term from the frozen LM; it has no gradient, so it only re-weights pairs.
    "latent": temperatures as latents (`latent_log_probs`): DPO on P'(y) = prod_t sum_tau P(y_t | tau) pi(tau).
    "expected_reward": not a pair loss: maximises mean reward - beta * KL(pi || pi_ref) on whole prompt groups
            (`adaptive_decoder.lpo.expected_reward`, with its own collator and dataset, `lpo.groups.GroupDataset`),
            by a policy gradient or by regressing beta * log(pi / pi_ref) on the group-relative rewards (REBEL,
            whose minimum is pi_ref exp(Q / beta) / Z from any start): `LPOConfig.expected_reward_estimator`.
The LM's log P(y_t | tau) come from the collection (`adaptive_decoder.modeling.response_logps`, via the pair dataset with
`response_logps=True`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("lpo", "nll", "joint", "latent", "expected_reward")
NEEDS_RESPONSE_LOGPS = ("joint", "latent")
AGGREGATIONS = ("sum", "mean")
_PAIR_KEYS = ("chosen_inputs", "chosen_choices", "rejected_inputs", "rejected_choices")


# ---------------------------------------------------------------------------------------------------------------
# collation
def _check_sample(ex: dict, side: str, i: int, level: str | None, hidden: int | None, factors: set | None):
    inputs, choices = ex[f"{side}_inputs"], ex[f"{side}_choices"]
    if not torch.is_tensor(inputs) or inputs.dim() not in (1, 2):
        shape = tuple(inputs.shape) if torch.is_tensor(inputs) else type(inputs).__name__
        raise ValueError(f"pair {i}: {side}_inputs must be a [H] (sequence level) or [T, H] (token level) tensor, got {shape}")
    this_level = "sequence" if inputs.dim() == 1 else "token"
    if level is not None and this_level != level:
        raise ValueError(f"pair {i}: {side} sample is {this_level}-level but earlier samples are {level}-level; "
                         "a batch cannot mix levels")
    if hidden is not None and inputs.shape[-1] != hidden:
        raise ValueError(f"pair {i}: {side}_inputs has hidden size {inputs.shape[-1]}, expected {hidden}")
    if not isinstance(choices, dict) or not choices:
        raise ValueError(f"pair {i}: {side}_choices must be a non-empty dict {{factor: LongTensor}}")
    if factors is not None and set(choices) != factors:
        raise ValueError(f"pair {i}: {side}_choices has factors {sorted(choices)}, expected {sorted(factors)}")
    steps = () if this_level == "sequence" else (inputs.shape[0],)
    for f, c in choices.items():
        if not torch.is_tensor(c) or tuple(c.shape) != steps:
            got = tuple(c.shape) if torch.is_tensor(c) else type(c).__name__
            raise ValueError(f"pair {i}: {side}_choices[{f!r}] must have shape {steps} to match {side}_inputs, got {got}")
    if not torch.isfinite(inputs).all():
        raise ValueError(f"pair {i}: {side}_inputs holds NaN/inf hidden states")
    return this_level, inputs.shape[-1], set(choices)


def collate_pairs(examples: list) -> dict:
    """Stack pair dicts into a batch.

    Sequence level: `chosen_inputs`/`rejected_inputs` [B, H], choices {factor: [B]}.
    Token level: both sides padded to the same T (the longest chosen or rejected sample) so that one head call
    covers the whole batch: inputs [B, T, H] (zeros in padding), choices [B, T] (-1 in padding, the generation
    convention), `chosen_mask`/`rejected_mask` BoolTensor [B, T] (True on real steps).
    Always: `reward_chosen`, `reward_rejected` float32 [B]; `task`, `prompt_id` lists of str; `level` str.
    Hidden states are cast to float32 (the cache stores fp16).
    """
    if not examples:
        raise ValueError("collate_pairs got an empty list of pairs")
    level = hidden = factors = None
    for i, ex in enumerate(examples):
        missing = [k for k in _PAIR_KEYS if k not in ex]
        if missing:
            raise ValueError(f"pair {i} lacks keys {missing}; a pair needs {list(_PAIR_KEYS)} "
                             "(+ reward_chosen, reward_rejected, task, prompt_id)")
        for side in ("chosen", "rejected"):
            level, hidden, factors = _check_sample(ex, side, i, level, hidden, factors)
    factors = sorted(factors)
    batch = {"level": level}
    if level == "sequence":
        for side in ("chosen", "rejected"):
            batch[f"{side}_inputs"] = torch.stack([ex[f"{side}_inputs"].float() for ex in examples])
            batch[f"{side}_choices"] = {f: torch.stack([ex[f"{side}_choices"][f].long() for ex in examples]) for f in factors}
    else:
        t = max(max(ex["chosen_inputs"].shape[0], ex["rejected_inputs"].shape[0]) for ex in examples)
        b = len(examples)
        for side in ("chosen", "rejected"):
            inputs = torch.zeros(b, t, hidden, dtype=torch.float32)
            mask = torch.zeros(b, t, dtype=torch.bool)
            choices = {f: torch.full((b, t), -1, dtype=torch.long) for f in factors}
            for j, ex in enumerate(examples):
                n = ex[f"{side}_inputs"].shape[0]
                inputs[j, :n] = ex[f"{side}_inputs"].float()
                mask[j, :n] = True
                for f in factors:
                    choices[f][j, :n] = ex[f"{side}_choices"][f].long()
            batch[f"{side}_inputs"], batch[f"{side}_mask"], batch[f"{side}_choices"] = inputs, mask, choices
    if "chosen_token_logps" in examples[0]:
        _collate_token_logps(examples, batch)
    for side in ("chosen", "rejected"):
        batch[f"reward_{side}"] = torch.tensor([float(ex.get(f"reward_{side}", float("nan"))) for ex in examples])
    batch["task"] = [str(ex.get("task", "")) for ex in examples]
    batch["prompt_id"] = [str(ex.get("prompt_id", "")) for ex in examples]
    return batch


def _collate_token_logps(examples: list, batch: dict):
    """`<side>_token_logps` float32 [B, T, K] (zeros in padding) and `<side>_token_mask` [B, T]; token level pads to
    the inputs' T (step t's table row belongs to step t's head input); `<side>_{response,lm}_logp` float32 [B]."""
    t = max(ex[f"{s}_token_logps"].shape[0] for ex in examples for s in ("chosen", "rejected"))
    if batch["level"] == "token":
        t = batch["chosen_inputs"].shape[1]
    k = examples[0]["chosen_token_logps"].shape[1]
    for side in ("chosen", "rejected"):
        table, mask = torch.zeros(len(examples), t, k), torch.zeros(len(examples), t, dtype=torch.bool)
        for j, ex in enumerate(examples):
            x = ex[f"{side}_token_logps"]
            if x.dim() != 2 or x.shape[1] != k:
                raise ValueError(f"pair {j}: {side}_token_logps must be [T, {k}], got {tuple(x.shape)}")
            if batch["level"] == "token" and x.shape[0] != ex[f"{side}_inputs"].shape[0]:
                raise ValueError(f"pair {j}: {side}_token_logps has {x.shape[0]} steps, its inputs "
                                 f"{ex[f'{side}_inputs'].shape[0]}")
            table[j, : x.shape[0]], mask[j, : x.shape[0]] = x.float(), True
        batch[f"{side}_token_logps"], batch[f"{side}_token_mask"] = table, mask
        for name in ("response_logp", "lm_logp"):
            batch[f"{side}_{name}"] = torch.tensor([float(ex[f"{side}_{name}"]) for ex in examples])


# ---------------------------------------------------------------------------------------------------------------
# log-probabilities of latent choices
def aggregate_steps(step_values: torch.Tensor, mask: torch.Tensor | None, aggregation: str = "sum") -> torch.Tensor:
    """[B] stays [B]; [B, T] -> [B] as the sum (or mean) over the steps where `mask` is True."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if step_values.dim() == 1:
        return step_values
    if mask is None:
        raise ValueError("token-level values need a step mask")
    # where, not multiply: a padded step must not leak NaN/inf into the sum
    total = torch.where(mask, step_values, torch.zeros_like(step_values)).sum(-1)
    if aggregation == "mean":
        total = total / mask.sum(-1).clamp(min=1).to(total.dtype)
    return total


def pair_log_probs(head, batch: dict, aggregation: str = "sum", with_entropy: bool = True) -> dict:
    """Joint log-probabilities of the chosen and rejected latent choices under `head`, one head call for both.

    Returns {"chosen_logps": [B], "rejected_logps": [B]} and, with `with_entropy`, "entropy": the head's mean
    entropy (sum over factors) over all real decisions of the batch (no gradient; a monitoring metric).
    """
    inputs = torch.cat([batch["chosen_inputs"], batch["rejected_inputs"]])
    choices = {f: torch.cat([batch["chosen_choices"][f], batch["rejected_choices"][f]]) for f in batch["chosen_choices"]}
    mask = None
    if inputs.dim() == 3:
        mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]])
    step_logps = head.log_prob(inputs, choices)  # [2B] or [2B, T]; sum over active factors
    logps = aggregate_steps(step_logps, mask, aggregation)
    b = batch["chosen_inputs"].shape[0]
    out = {"chosen_logps": logps[:b], "rejected_logps": logps[b:]}
    if with_entropy:
        with torch.no_grad():
            ent = head.entropy(inputs)
            out["entropy"] = ent.mean() if mask is None else ent[mask].mean() if mask.any() else ent.new_zeros(())
    return out


# ---------------------------------------------------------------------------------------------------------------
# losses on per-pair log-probabilities
def lpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor | None = None,
             ref_rejected_logps: torch.Tensor | None = None, beta: float = 0.1):
    """Per-pair LPO loss and the implicit rewards beta * (log pi - log pi_ref).

    Without reference log-probs (both None) this is the reference-free form -log sigmoid(beta (log pi_c - log pi_r)).
    Returns (losses [B], chosen_rewards [B], rejected_rewards [B]); rewards are detached.
    """
    if (ref_chosen_logps is None) != (ref_rejected_logps is None):
        raise ValueError("give both reference log-probs or neither")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen_ratio, rejected_ratio = chosen_logps, rejected_logps
    if ref_chosen_logps is not None:
        chosen_ratio = chosen_logps - ref_chosen_logps
        rejected_ratio = rejected_logps - ref_rejected_logps
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def joint_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, chosen_response_ratio: torch.Tensor,
               rejected_response_ratio: torch.Tensor, ref_chosen_logps: torch.Tensor | None = None,
               ref_rejected_logps: torch.Tensor | None = None, beta: float = 0.1):
    """Temperatures as tokens, joint: DPO over P(y, tau) = P(y | tau) pi(tau) (paper, as transcribed:
    -log sigmoid(beta log P(y_c)/P_ref(y_c) - beta log P(y_r)/P_ref(y_r) + beta log pi(tau_c) - beta log pi(tau_r))).

        margin_joint = margin_sep + beta * (chosen_response_ratio - rejected_response_ratio)
        margin_sep   = the "lpo" margin of the latent choices (with the head's reference terms when given)

    Our reading of P_ref(y). The policy's response term is log P_LM(y | tau), the frozen LM at the temperatures
    the sample was decoded with. If P_ref were that same frozen LM at the same tau the ratio would be exactly 1
    and this loss would be "lpo" itself; the transcription writes P_ref(y) without tau, i.e. the reference model
    is the LM that has no temperature token and decodes at its native temperature 1. So the response ratio is
    log P_LM(y | tau) - log P_LM(y | tau=1) (`response_logp - lm_logp` in the collection). The caller passes
    that difference per side, so any other reading is a different argument, not a different loss.

    What it changes. The response term does not depend on the head: the gradient of the loss is
    -beta * sigmoid(-margin_joint) * d(margin_sep), the separate loss's gradient scaled per pair by
    sigmoid(-margin_joint) / sigmoid(-margin_sep). Its direction per pair is unchanged; pairs whose responses
    already favour the chosen one (under the LM, relative to temperature 1) weigh less, the others more.
    Returns (losses [B], chosen_rewards [B], rejected_rewards [B]); rewards are the joint implicit rewards.
    """
    losses, chosen_rewards, rejected_rewards = lpo_loss(chosen_logps, rejected_logps, ref_chosen_logps,
                                                        ref_rejected_logps, beta=beta)
    c_extra, r_extra = beta * chosen_response_ratio.detach(), beta * rejected_response_ratio.detach()
    chosen_ratio = chosen_logps if ref_chosen_logps is None else chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps if ref_rejected_logps is None else rejected_logps - ref_rejected_logps
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio) + c_extra - r_extra)
    return losses, chosen_rewards + c_extra, rejected_rewards + r_extra


def latent_log_probs(head, inputs: torch.Tensor, token_logps: torch.Tensor, token_mask: torch.Tensor,
                     aggregation: str = "sum") -> torch.Tensor:
    """log P'(y) of each sample with the temperature marginalised out under `head`'s temperature distribution.

    token_logps [B, T, K]: log P_LM(y_t | tau_k) (`adaptive_decoder.modeling.response_logps`), K = the temperature bins.
    Token level (inputs [B, T, H]): P'(y_t) = sum_k P(y_t | tau_k) pi(tau_k | h_t), per step, then the sum (or
        mean) over real steps of log P'(y_t) -- the paper's formula.
    Sequence level (inputs [B, H], one tau for the whole response): log sum_k pi(tau_k | h) prod_t P(y_t | tau_k),
        the marginal of how the sample was actually drawn (a per-token mixture would let the steps pick different
        temperatures); `aggregation="mean"` divides it by the number of steps.
    Only the temperature factor enters; logsumexp keeps the mixture exact in log space.
    """
    if "temperature" not in head.factors:
        raise ValueError("the latent loss marginalises the head's temperature: 'temperature' must be an active factor")
    log_pi = head(inputs)["temperature"].float().log_softmax(-1)
    if log_pi.shape[-1] != token_logps.shape[-1]:
        raise ValueError(f"token_logps has {token_logps.shape[-1]} temperature columns, the head {log_pi.shape[-1]} bins")
    if inputs.dim() == 3:
        step = torch.logsumexp(token_logps + log_pi, -1)  # [B, T]
        return aggregate_steps(step, token_mask, aggregation)
    per_tau = torch.where(token_mask[..., None], token_logps, torch.zeros_like(token_logps)).sum(1)  # [B, K]
    total = torch.logsumexp(per_tau + log_pi, -1)
    if aggregation == "mean":
        total = total / token_mask.sum(-1).clamp(min=1).to(total.dtype)
    return total


def pair_latent_log_probs(head, batch: dict, aggregation: str = "sum") -> dict:
    """{"chosen_logps", "rejected_logps"}: `latent_log_probs` of both sides, one head call."""
    inputs = torch.cat([batch["chosen_inputs"], batch["rejected_inputs"]])
    table = torch.cat([batch["chosen_token_logps"], batch["rejected_token_logps"]])
    mask = torch.cat([batch["chosen_token_mask"], batch["rejected_token_mask"]])
    logps = latent_log_probs(head, inputs, table, mask, aggregation)
    b = batch["chosen_inputs"].shape[0]
    return {"chosen_logps": logps[:b], "rejected_logps": logps[b:]}


def policy_log_probs(head, batch: dict, loss_type: str, aggregation: str = "sum", with_entropy: bool = True) -> dict:
    """The log-probabilities `loss_type` compares: of the latent choices, or (latent) of the responses."""
    if loss_type == "latent":
        out = pair_latent_log_probs(head, batch, aggregation)
        if with_entropy:
            out["entropy"] = pair_log_probs(head, batch, aggregation)["entropy"]
        return out
    return pair_log_probs(head, batch, aggregation, with_entropy=with_entropy)


def nll_loss(chosen_logps: torch.Tensor) -> torch.Tensor:
    """Per-pair negative log-likelihood of the chosen latent choices (the paper's L_NLL baseline)."""
    return -chosen_logps


def compute_loss(head, batch: dict, *, loss_type: str = "lpo", beta: float = 0.1, ref_head=None,
                 aggregation: str = "sum", policy_logps: dict | None = None):
    """Mean loss over the batch and a dict of scalar-tensor metrics (detached; reduce them across processes).

    `ref_head=None` means no reference terms (for "latent": P'_ref uses the same LM with the reference head's pi).
    `policy_logps` lets a caller pass log-probs it computed itself (e.g. through a DDP/DeepSpeed-wrapped module, so
    gradient sync sees the forward); otherwise they are computed here from `head`. Metrics: loss,
    rewards/{chosen,rejected,margins,accuracies}, logps/{chosen,rejected}, entropy. The implicit rewards are reported
    for the NLL loss too (same definition) so runs compare.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if loss_type == "expected_reward":
        raise ValueError("loss_type 'expected_reward' trains on prompt groups, not pairs: use "
                         "adaptive_decoder.lpo.expected_reward.group_loss")
    if loss_type in NEEDS_RESPONSE_LOGPS and "chosen_token_logps" not in batch:
        raise ValueError(f"loss_type {loss_type!r} needs the LM's token log-probs in the batch "
                         "(PairDataset(..., response_logps=True))")
    out = policy_logps if policy_logps is not None else policy_log_probs(head, batch, loss_type, aggregation)
    pc, pr = out["chosen_logps"], out["rejected_logps"]
    rc = rr = None
    if ref_head is not None:
        with torch.no_grad():
            ref = policy_log_probs(ref_head, batch, loss_type, aggregation, with_entropy=False)
        rc, rr = ref["chosen_logps"], ref["rejected_logps"]
    if loss_type == "joint":
        losses, chosen_rewards, rejected_rewards = joint_loss(
            pc, pr, batch["chosen_response_logp"] - batch["chosen_lm_logp"],
            batch["rejected_response_logp"] - batch["rejected_lm_logp"], rc, rr, beta=beta)
    else:
        losses, chosen_rewards, rejected_rewards = lpo_loss(pc, pr, rc, rr, beta=beta)
    if loss_type == "nll":
        losses = nll_loss(pc)
    loss = losses.mean()
    metrics = {
        "loss": loss.detach(),
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "logps/chosen": pc.detach().mean(),
        "logps/rejected": pr.detach().mean(),
    }
    if "entropy" in out:
        metrics["entropy"] = out["entropy"].detach()
    return loss, metrics
