"""Training-free samplers as per-row filters: each takes float scores [R, V] and per-row parameters [R].

`apply_sampling_params` (sampling.py) decides the order and which rows need a filter; these functions only
compute it. Rows are independent: each row's result depends on that row's scores and parameter alone, which is
what lets a batch mix samplers and values row by row.

Reproductions of transformers 5.x warpers (`transformers/generation/logits_process.py`), bit for bit for the
float32 scores `generate` passes: the same operations in the same order, the parameter rounded to the scores'
dtype where HF multiplies or compares by a Python float, and HF's `min_tokens_to_keep=1` (what `generate` uses
without beam search: the single most likely token is never removed):
    top_h_filter     TopHLogitsWarper       (top-H, arXiv 2509.02510; top_n = 100 candidates, as in HF)
    min_p_filter     MinPLogitsWarper       (arXiv 2407.01082)
    typical_filter   TypicalLogitsWarper    (arXiv 2202.00666)
    epsilon_filter   EpsilonLogitsWarper    (arXiv 2210.15191)
    eta_filter       EtaLogitsWarper        (arXiv 2210.15191)

Not in transformers, implemented from the papers:
    top_nsigma_mask  top-nσ (arXiv 2411.07641): keep token i iff l_i >= max(l) - n·σ(l), on the logits before
                     temperature. Dividing every logit by T scales max and σ alike, so the kept set does not depend
                     on the temperature (computing it before the division makes that exact in floating point).
    edt_temperature  EDT (arXiv 2403.14541): T = T0 · N^(θ / H) per row and step.
"""

from __future__ import annotations

import torch

NEG_INF = -float("inf")

# top-H scores at most this many highest-logit tokens (TopHLogitsWarper.top_n); the rest are removed
TOP_H_CANDIDATES = 100
# EDT's base N (the paper's recommended value): N < 1, so N^(θ/H) is in (0, 1] and shrinks as the entropy H falls
EDT_BASE = 0.8


def _col(x: torch.Tensor, dtype) -> torch.Tensor:
    return x.to(dtype)[:, None]


def _keep_top1(remove: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """min_tokens_to_keep=1 as Epsilon/Eta write it: a token at or above the largest score is never removed."""
    return remove & (scores < torch.topk(scores, 1)[0][..., -1, None])


def top_h_filter(scores: torch.Tensor, top_h: torch.Tensor) -> torch.Tensor:
    """TopHLogitsWarper: among the top 100 tokens (by logit), keep the longest prefix whose cumulative entropy
    terms -p·log p (p renormalised over those 100) stay <= top_h · H(p); the top token is always kept."""
    top_n = min(TOP_H_CANDIDATES, scores.shape[-1])
    top_logits, top_idx = torch.topk(scores, top_n, dim=-1, largest=True, sorted=True)
    dist = torch.distributions.Categorical(logits=top_logits)
    probs = dist.probs
    log_probs = torch.log(probs)
    tau = (dist.entropy() * top_h.to(scores.dtype)).unsqueeze(-1)
    selection = torch.cumsum(-probs * log_probs, dim=-1) <= tau
    selection[:, 0] = True
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top_idx, selection)
    return scores.masked_fill(~keep, NEG_INF)


def min_p_filter(scores: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """MinPLogitsWarper: remove tokens with p < min_p · p_max (p = softmax of the scores as they arrive)."""
    probs = torch.softmax(scores, dim=-1)
    remove = probs < _col(min_p, probs.dtype) * probs.amax(dim=-1, keepdim=True)
    remove.scatter_(-1, torch.topk(probs, 1, dim=-1).indices, False)
    return scores.masked_fill(remove, NEG_INF)


def typical_filter(scores: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """TypicalLogitsWarper: rank tokens by |-log p - H| and keep the smallest prefix holding `mass` probability.
    The most likely token can be removed here (typicality, not probability, decides); the most typical one stays."""
    normalized = torch.nn.functional.log_softmax(scores, dim=-1)
    p = torch.exp(normalized)
    ent = -(normalized * p).nansum(-1, keepdim=True)
    shifted = torch.abs((-normalized) - ent)
    sorted_scores, sorted_indices = torch.sort(shifted, descending=False)
    cumulative = scores.gather(-1, sorted_indices).softmax(dim=-1).cumsum(dim=-1)
    last_ind = (cumulative < _col(mass, cumulative.dtype)).sum(dim=1)
    last_ind.clamp_(max=sorted_scores.shape[-1] - 1)
    remove_sorted = sorted_scores > sorted_scores.gather(1, last_ind.view(-1, 1))
    remove_sorted[..., :1] = 0
    remove = remove_sorted.scatter(1, sorted_indices, remove_sorted)
    return scores.masked_fill(remove, NEG_INF)


def epsilon_filter(scores: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
    """EpsilonLogitsWarper: remove tokens with p < epsilon (absolute cutoff), keeping the top token."""
    probs = scores.softmax(dim=-1)
    remove = _keep_top1(probs < _col(epsilon, probs.dtype), scores)
    return scores.masked_fill(remove, NEG_INF)


def eta_filter(scores: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
    """EtaLogitsWarper: remove tokens with p < min(ε, √ε · exp(-H)) (entropy-adaptive cutoff), keeping the top token.
    HF holds ε as a float32 tensor, so ε is rounded to float32 before the square root, as there."""
    probs = scores.softmax(dim=-1)
    entropy = torch.distributions.Categorical(logits=scores).entropy()
    eps = epsilon.to(torch.float32).to(scores.dtype)
    eta = torch.min(eps, torch.sqrt(eps) * torch.exp(-entropy))[..., None]
    remove = _keep_top1(probs < eta, scores)
    return scores.masked_fill(remove, NEG_INF)


def top_nsigma_mask(scores: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """top-nσ: True for the tokens to REMOVE, l_i < max(l) - n·σ(l) with σ the sample standard deviation
    (torch.std's default, as the authors' code). Tokens that are already -inf (banned by an earlier processor)
    are not part of the distribution, so max and σ are taken over the finite logits only."""
    finite = torch.isfinite(scores)
    count = finite.sum(-1, keepdim=True)
    x = torch.where(finite, scores, 0.0)
    mean = x.sum(-1, keepdim=True) / count
    var = torch.where(finite, (x - mean) ** 2, 0.0).sum(-1, keepdim=True) / (count - 1).clamp(min=1)
    top = torch.where(finite, scores, NEG_INF).amax(-1, keepdim=True)
    return scores < top - _col(n, scores.dtype) * var.sqrt()


def step_entropy(scores: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(scores) per row [R]; -inf logits contribute 0 (0 · log 0 = 0)."""
    logp = torch.nn.functional.log_softmax(scores, dim=-1)
    h = -(logp.exp() * logp).nansum(-1)
    # a point mass sums to -0.0, and θ / -0.0 = -inf would send EDT's temperature to +inf instead of 0
    return torch.where(h > 0, h, 0.0)


def edt_temperature(scores: torch.Tensor, t0: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """EDT's temperature per row: T = T0 · N^(θ / H), N = EDT_BASE, H = `step_entropy` of the scores it is given
    (sampling.py passes the logits after the repetition penalty, before any temperature or truncation: the
    model's own next-token distribution). θ = 0 gives T0 exactly; a confident step (small H) gets a temperature
    near 0, a flat one (large H) a temperature near T0. H = 0 (a one-hot distribution) gives T = 0 (greedy)."""
    h = step_entropy(scores)
    return t0 * torch.pow(torch.tensor(EDT_BASE, dtype=h.dtype, device=h.device), theta.to(h.dtype) / h)
