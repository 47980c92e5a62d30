"""Per-row temperature / top-k / top-p / min-p without sorting the vocabulary: the served path's warping.

`sampling.apply_sampling_params` reproduces transformers' warpers bit for bit, and so sorts the whole vocabulary
for every row with top-p < 1 (about 5 ms a row for SmolLM2's 49,152 logits on one CPU core: as much as the
model's matmuls at batch 128). Sampling needs only the tokens that survive, which are few:

  * top-k on (then top-p over the survivors): `topk(k)` of the scaled row gives the survivors in descending
    order; top-p is HF's rule on them (ascending cumulative probability <= 1 - p is removed, the most likely token
    always stays), since every other token's probability is 0 once top-k has masked it;
  * top-p alone: the nucleus lies in the top `window` tokens whenever they hold mass >= p. Their probabilities
    come from one logsumexp over the row, and a token is kept while the mass strictly above it is < p, which is
    HF's rule read from the other end. A row whose top `window` hold less than p (a flat distribution) goes the
    exact way;
  * temperature alone, greedy (only the argmax stays, unscaled) and min-p: as `apply_sampling_params` does.

Invariant: the kept set and the kept (scaled) logits equal `apply_sampling_params(None, scores, temperature,
top_p, top_k, min_p=min_p)`'s, except where a top-p cut falls on a cumulative sum that differs in its last bit
between the two summation orders (the survivors' softmax sums k terms, HF's sums the whole row) or on tied logits
(whose order neither path fixes). Rows whose k-th value is tied beyond the `topk` window go the exact way.

Values are not validated here: the served head's come from its bins (checked when its config is built). Callers
with values from elsewhere validate them once (`sampling.validate_sampling_value`) before the first step.
"""

from __future__ import annotations

import torch

from . import samplers
from .sampling import NEG_INF, apply_sampling_params

NUCLEUS_WINDOW = 1024  # top-p alone: the top tokens searched for the nucleus before falling back to a full sort


def _col(values, n: int, dtype, device) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=dtype, device=device)
    return t.expand(n) if t.dim() == 0 else t


def _top_p_keep(desc_logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """HF's top-p on rows already in descending order that hold every token with probability > 0: remove where the
    ascending cumulative probability is <= 1 - p, keep the most likely token."""
    asc = desc_logits.flip(1)
    cum = asc.softmax(-1).cumsum(-1)
    remove = cum <= (1.0 - p.to(torch.float64)).to(cum.dtype)[:, None]  # HF's threshold, rounded as HF rounds it
    remove[:, -1] = False
    return ~remove.flip(1)


def _take(x: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    return x if rows.numel() == n else x.index_select(0, rows)


def _put(out: torch.Tensor, rows: torch.Tensor, sub: torch.Tensor) -> torch.Tensor:
    if rows.numel() == out.shape[0]:
        return sub
    out[rows] = sub
    return out


def _scatter_kept(vals: torch.Tensor, idx: torch.Tensor, keep: torch.Tensor, vocab: int) -> torch.Tensor:
    full = torch.full((vals.shape[0], vocab), NEG_INF, dtype=vals.dtype, device=vals.device)
    return full.scatter_(1, idx, vals.masked_fill_(~keep, NEG_INF))


def warp(scores: torch.Tensor, temperature, top_p, top_k, min_p=None, *, window: int = NUCLEUS_WINDOW) -> torch.Tensor:
    """Processed scores [B, V] (float32, a new tensor) for per-row values (scalars or length-B tensors); see the
    module docstring for what equals `apply_sampling_params` and what it costs."""
    s = scores.float()
    n, vocab = s.shape
    dev = s.device
    temp = _col(temperature, n, torch.float32, dev)
    p = _col(top_p, n, torch.float64, dev)
    k = _col(top_k, n, torch.long, dev).clamp(max=vocab)
    greedy = temp == 0
    # every sampled row is scaled first (as HF does: top-k and top-p see the scaled logits); a greedy row keeps
    # its argmax unscaled and nothing else
    out = s / torch.where(greedy, 1.0, temp)[:, None]
    exact = torch.zeros(n, dtype=torch.bool, device=dev)

    rows = greedy.nonzero().squeeze(1)
    if rows.numel():
        sub = _take(s, rows, n)
        arg = sub.argmax(-1, keepdim=True)
        out = _put(out, rows, torch.full_like(sub, NEG_INF).scatter_(1, arg, sub.gather(1, arg)))

    rows = (~greedy & (k > 0)).nonzero().squeeze(1)
    if rows.numel():
        kr, pr = k[rows], p[rows]
        width = min(int(kr.max()) + 1, vocab)  # one beyond the largest k: a tie there means ties beyond the window
        vals, idx = _take(out, rows, n).topk(width, dim=-1)
        kth = vals.gather(1, (kr - 1)[:, None])
        keep = vals >= kth  # HF keeps every token tied with the k-th
        exact[rows[keep[:, -1] & (kr < vocab) & (width < vocab)]] = True
        nucleus = pr < 1.0
        if bool(nucleus.any()):
            keep[nucleus] &= _top_p_keep(vals.masked_fill(~keep, NEG_INF)[nucleus], pr[nucleus])
        out = _put(out, rows, _scatter_kept(vals, idx, keep, vocab))

    rows = (~greedy & (k == 0) & (p < 1.0)).nonzero().squeeze(1)
    if rows.numel():
        pr = p[rows]
        x = _take(out, rows, n)
        vals, idx = x.topk(min(window, vocab), dim=-1)
        prob = (vals - x.logsumexp(-1, keepdim=True)).exp().double()
        mass = prob.cumsum(-1)
        keep = (mass - prob) < pr[:, None]  # HF's rule from the top: the mass strictly above a kept token is < p
        keep[:, 0] = True
        exact[rows[mass[:, -1] < pr]] = True  # the nucleus reaches beyond the window
        out = _put(out, rows, _scatter_kept(vals, idx, keep, vocab))

    rows = exact.nonzero().squeeze(1)
    if rows.numel():
        out = _put(out, rows, apply_sampling_params(None, s.index_select(0, rows), temp[rows], p[rows], k[rows]))

    if min_p is not None:
        m = _col(min_p, n, torch.float64, dev)
        rows = ((m > 0) & ~greedy).nonzero().squeeze(1)
        if rows.numel():
            out = _put(out, rows, samplers.min_p_filter(_take(out, rows, n), m[rows]))
    return out
