"""Per-row temperature / top-k / top-p / repetition penalty, in one vectorized pass over the batch.

Stock `generate` applies one scalar temperature, top-k and top-p to the whole batch. Adaptive decoding needs a
different value per row (and per step), so we apply them here and call `generate(do_sample=True)` with
neutral warpers. Each operation reproduces the corresponding transformers warper bit for bit (same order:
penalty -> temperature -> top-k -> top-p, same comparisons), which is what makes a forced head choice
token-for-token identical to plain `generate` with those values under the same seed.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

NEG_INF = -float("inf")


def _as_row_tensor(x, n: int, dtype, device) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=dtype, device=device)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"expected a scalar or {n} per-row values, got shape {tuple(t.shape)}")
    return t


def _rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return x if rows.numel() == x.shape[0] else x.index_select(0, rows)


def _put_rows(x: torch.Tensor, rows: torch.Tensor, sub: torch.Tensor) -> torch.Tensor:
    return sub if rows.numel() == x.shape[0] else x.index_copy(0, rows, sub)


def apply_sampling_params(input_ids: torch.LongTensor, scores: torch.Tensor, temperature, top_p, top_k,
                          repetition_penalty=None, padding_lengths=None) -> torch.Tensor:
    """Return processed scores [B, V]. Each hyperparameter is a scalar or a length-B tensor/list.

    `padding_lengths` [B]: left-padding tokens the repetition penalty ignores (as generate does).

    temperature 0 keeps only the argmax (after the repetition penalty), so sampling from it is greedy decoding.
    top_p 1.0 and top_k 0 are off; repetition_penalty 1.0 (or None) is off.
    """
    n, vocab = scores.shape
    dev = scores.device
    if repetition_penalty is not None:
        pen = _as_row_tensor(repetition_penalty, n, scores.dtype, dev)
        if bool((pen != 1.0).any()):
            # Same as RepetitionPenaltyLogitsProcessor, with a [B, 1] penalty.
            ids = input_ids.clamp(max=vocab)
            if padding_lengths is not None:  # padding ids map to the dropped extra column
                pos = torch.arange(ids.shape[1], device=dev)
                ids = ids.masked_fill(pos[None, :] < padding_lengths.to(dev)[:, None], vocab)
            padded = torch.nn.functional.pad(scores, (0, 1))
            score = padded.gather(1, ids)
            pen_col = pen[:, None]
            score = torch.where(score < 0, score * pen_col, score / pen_col)
            # rows without penalty keep their original values exactly
            score = torch.where(pen_col == 1.0, padded.gather(1, ids), score)
            scores = padded.scatter(1, ids, score)[..., :vocab]

    temp = _as_row_tensor(temperature, n, torch.float32, dev)
    if bool((temp < 0).any()):
        raise ValueError(f"temperature must be >= 0, got {temp.tolist()}")
    greedy = temp == 0
    if bool(greedy.any()):
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.argmax(-1, keepdim=True), True)
        scores = torch.where(greedy[:, None] & ~keep, torch.full_like(scores, NEG_INF), scores)
    scaled = ~greedy & (temp != 1.0)
    # dividing by a [B, 1] tensor gives the same float32 result per row as HF's scalar division
    if bool(scaled.all()):
        scores = scores / temp.to(scores.dtype)[:, None]
    elif bool(scaled.any()):
        scores = torch.where(scaled[:, None], scores / torch.where(scaled, temp, 1.0).to(scores.dtype)[:, None], scores)

    k = _as_row_tensor(top_k, n, torch.long, dev)
    if bool((k < 0).any()):
        raise ValueError(f"top_k must be >= 0, got {k.tolist()}")
    k = k.clamp(max=vocab)
    # Greedy rows already hold a single finite logit, which top-k and top-p always keep: skip them.
    rows = ((k > 0) & ~greedy).nonzero().squeeze(1)
    if rows.numel():
        sub, kr = _rows(scores, rows), _rows(k, rows)
        kth = torch.topk(sub, int(kr.max()), dim=-1).values.gather(1, (kr - 1)[:, None])
        scores = _put_rows(scores, rows, sub.masked_fill(sub < kth, NEG_INF))

    # float64 so that float32(1 - p) matches HF's `1 - top_p` computed on a Python float
    p = _as_row_tensor(top_p, n, torch.float64, dev)
    if bool(((p <= 0) | (p > 1)).any()):
        raise ValueError(f"top_p must lie in (0, 1], got {p.tolist()}")
    # Sorting the vocabulary is the most expensive step: only rows with top-p < 1 pay for it.
    rows = ((p < 1.0) & ~greedy).nonzero().squeeze(1)
    if rows.numel():
        sub, thr = _rows(scores, rows), (1.0 - _rows(p, rows)).to(torch.float32)
        sorted_logits, sorted_idx = torch.sort(sub, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cum <= thr[:, None]
        remove_sorted[..., -1:] = False  # keep at least one token
        remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)
        scores = _put_rows(scores, rows, sub.masked_fill(remove, NEG_INF))
    return scores


class SamplingParamsProcessor(LogitsProcessor):
    """Applies per-row hyperparameters chosen each step by `decide(input_ids) -> dict`.

    `decide` returns {"temperature", "top_p", "top_k"[, "repetition_penalty"]}, each a scalar or [B] tensor.
    Used with `generate(do_sample=True, temperature=1.0, top_p=1.0, top_k=0)` so no stock warper runs.
    """

    def __init__(self, decide, padding_lengths: torch.Tensor | None = None):
        self.decide = decide
        self.padding_lengths = padding_lengths

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        v = self.decide(input_ids)
        return apply_sampling_params(input_ids, scores, v["temperature"], v["top_p"], v["top_k"],
                                     v.get("repetition_penalty"), self.padding_lengths)
