"""Per-row decoding hyperparameters (temperature, top-k, top-p, repetition penalty and the training-free samplers
of `adaptive_decoder.modeling.samplers`), in one vectorized pass over the batch.

Stock `generate` applies one scalar value of each to the whole batch. Adaptive decoding needs a different value
per row (and per step), so we apply them here and call `generate(do_sample=True)` with neutral warpers. Each
operation reproduces the corresponding transformers warper bit for bit, in transformers' order:

    repetition penalty -> temperature -> top-H -> top-k -> top-p -> min-p -> typical -> epsilon -> eta

which is what makes a forced config token-for-token identical to plain `generate` with those values under the
same seed. The two samplers transformers does not have sit where their papers put them: top-nσ's kept set is
computed on the logits before temperature (and applied there; masking commutes with the division), EDT replaces
the temperature step by T = T0 · N^(θ/H) with T0 = the row's `temperature`. Every sampler has an "off" value
(the default) at which its row is not touched at all, so configs without it stay bit-identical.

`validate_sampling_value` is the one definition of a valid value: `force=`, the head config's `fixed=` and bins,
and the sampler itself all call it, so every entry point refuses the same inputs with the same message.
"""

from __future__ import annotations

import math

import torch
from transformers import LogitsProcessor

from . import samplers

NEG_INF = -float("inf")

# name -> (description used in error messages, predicate on a float64 tensor marking the VALID entries).
# Every value must also be finite: NaN compares False everywhere (so it would slip through as "off" or crash
# deep in torch) and inf is no better (temperature inf samples uniformly, top_k inf has no integer).
SAMPLING_VALUES = {
    "temperature": ("a finite, non-negative number (0 = greedy)", lambda t: t >= 0),
    "top_p": ("a finite number in (0, 1] (1 = off)", lambda t: (t > 0) & (t <= 1)),
    # a fractional k would be truncated by the cast to long (2.7 -> 2): refuse it instead
    "top_k": ("a non-negative integer (0 = off)", lambda t: (t >= 0) & (t == t.round())),
    "repetition_penalty": ("a finite number > 0 (1 = off)", lambda t: t > 0),
    # HF applies min_p=0 as a no-op filter; here 0 skips it
    "min_p": ("a finite number in [0, 1] (0 = off)", lambda t: (t >= 0) & (t <= 1)),
    "typical_p": ("a finite number in (0, 1] (1 = off)", lambda t: (t > 0) & (t <= 1)),
    "epsilon_cutoff": ("a finite number in [0, 1) (0 = off)", lambda t: (t >= 0) & (t < 1)),
    "eta_cutoff": ("a finite number in [0, 1) (0 = off)", lambda t: (t >= 0) & (t < 1)),
    # HF refuses top_h=0, which frees 0 to mean off (top_h=1 is not off: it still keeps at most 100 tokens)
    "top_h": ("a finite number in [0, 1] (0 = off)", lambda t: (t >= 0) & (t <= 1)),
    # n = 0 would keep only the argmax (greedy, which temperature 0 already gives): 0 means off
    "top_nsigma": ("a finite, non-negative number of standard deviations (0 = off)", lambda t: t >= 0),
    "edt_theta": ("a finite, non-negative number (0 = off: T = T0)", lambda t: t >= 0),
}

# the off value of each sampler, and the dtype a per-row value is held in before it meets the scores
SAMPLER_OFF = {"min_p": 0.0, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "top_h": 0.0,
               "top_nsigma": 0.0, "edt_theta": 0.0}
# the value of every SAMPLING_VALUES name at which a row's scores are left as the LM made them (temperature 1:
# the plain softmax); what a config that does not name a value gets, wherever a config is filled in
NEUTRAL = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0, **SAMPLER_OFF}


def _refuse(label: str, desc: str, got: str):
    raise ValueError(f"{label} must be {desc}, got {got}")


def validate_sampling_value(name: str, value, label: str | None = None):
    """Raise ValueError unless `value` is a valid `name` (a SAMPLING_VALUES key); return `value` unchanged.

    `value` is a Python number, a list/tuple of numbers or a tensor of any shape; EVERY entry must be valid
    (a single NaN row fails the whole call). bools and strings are not numbers here, although torch would
    convert them. `label` is what the message calls the value (default `name`), e.g. "force['top_k']".
    The value is returned as given, so callers convert it exactly as before (bit-exactness depends on that).
    """
    if name not in SAMPLING_VALUES:
        raise ValueError(f"unknown sampling parameter {name!r}; valid: {sorted(SAMPLING_VALUES)}")
    label = label or name
    desc, valid = SAMPLING_VALUES[name]
    t = _as_float64(label, desc, value)
    ok = torch.isfinite(t) & valid(t)
    if not bool(ok.all()):  # one device sync, only to decide; the message is built on the CPU
        if t.dim() == 0:
            _refuse(label, desc, _show(float(t)))
        flat, bad = t.flatten().cpu(), (~ok).flatten().nonzero().squeeze(1).cpu()
        shown = ", ".join(f"{_show(float(flat[i]))} at index {int(i)}" for i in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        _refuse(label, desc, shown + more)
    return value


def _as_float64(label: str, desc: str, value) -> torch.Tensor:
    """`value` as a float64 tensor for checking; bools, strings, None and complex numbers are refused."""
    def is_non_number(v):
        return v is None or isinstance(v, (bool, str, bytes))

    if is_non_number(value) or (isinstance(value, (list, tuple)) and any(is_non_number(v) for v in value)):
        _refuse(label, desc, f"{value!r} ({type(value).__name__})")
    if getattr(getattr(value, "dtype", None), "kind", None) in ("b", "c", "U", "S", "O"):  # numpy non-numbers
        _refuse(label, desc, f"an array of dtype {value.dtype}")
    try:
        # float64 straight from Python numbers: via float32 a top_p of 1.0000000001 would round to a valid 1.0
        t = value if torch.is_tensor(value) else torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        _refuse(label, desc, f"{value!r} ({type(value).__name__})")
    if t.dtype == torch.bool or t.is_complex():
        _refuse(label, desc, f"a {t.dtype} tensor")
    return t.detach().to(torch.float64)


def _show(x: float) -> str:
    return repr(int(x)) if math.isfinite(x) and x == int(x) and abs(x) < 2**53 else repr(x)


def _as_row_tensor(name: str, x, n: int, dtype, device) -> torch.Tensor:
    validate_sampling_value(name, x)  # before the cast: casting to long would already have truncated 2.7 to 2
    t = torch.as_tensor(x, dtype=dtype, device=device)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"{name}: expected a scalar or {n} per-row values, got shape {tuple(t.shape)}")
    return t


def _rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return x if rows.numel() == x.shape[0] else x.index_select(0, rows)


def _put_rows(x: torch.Tensor, rows: torch.Tensor, sub: torch.Tensor) -> torch.Tensor:
    return sub if rows.numel() == x.shape[0] else x.index_copy(0, rows, sub)


def _sampler_rows(name: str, value, n: int, skip: torch.Tensor, device):
    """(per-row float64 values, rows where the sampler is on and the row is not greedy), or None when off
    everywhere. float64 so each filter rounds the value to the scores' dtype once, as HF's Python floats are."""
    if value is None:
        return None
    v = _as_row_tensor(name, value, n, torch.float64, device)
    rows = ((v != SAMPLER_OFF[name]) & ~skip).nonzero().squeeze(1)
    return (v, rows) if rows.numel() else None


def _filter_rows(scores: torch.Tensor, active, fn) -> torch.Tensor:
    if active is None:
        return scores
    v, rows = active
    return _put_rows(scores, rows, fn(_rows(scores, rows), _rows(v, rows)))


def _greedy_mask(scores: torch.Tensor, rows_mask: torch.Tensor) -> torch.Tensor:
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.argmax(-1, keepdim=True), True)
    return torch.where(rows_mask[:, None] & ~keep, torch.full_like(scores, NEG_INF), scores)


def _opmath(dtype: torch.dtype) -> torch.dtype:
    """The dtype PyTorch computes `tensor <op> python_float` in: float32 for bf16/fp16 scores, else their own.

    HF's warpers scale by Python floats, so bf16 scores are divided by float32(0.7) and rounded once; dividing
    them by a bf16 tensor would divide by bf16(0.7) = 0.69921875 instead, and the samples would drift from
    `generate`'s. (Inside `generate` the scores are float32 anyway; this keeps direct calls on bf16 logits exact.)
    """
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def apply_sampling_params(input_ids: torch.LongTensor, scores: torch.Tensor, temperature, top_p, top_k,
                          repetition_penalty=None, padding_lengths=None, *, min_p=None, typical_p=None,
                          epsilon_cutoff=None, eta_cutoff=None, top_h=None, top_nsigma=None,
                          edt_theta=None) -> torch.Tensor:
    """Return processed scores [B, V]. Each hyperparameter is a scalar or a length-B tensor/list.

    `padding_lengths` [B]: left-padding tokens the repetition penalty ignores (as generate does).

    temperature 0 keeps only the argmax (after the repetition penalty), so sampling from it is greedy decoding;
    no other filter touches a greedy row. top_p 1.0 and top_k 0 are off; repetition_penalty 1.0 (or None) is off;
    each sampler is off at its `SAMPLER_OFF` value (or None). With edt_theta > 0 a row's temperature is
    T0 · N^(θ/H) (`samplers.edt_temperature`, T0 = `temperature`); a row whose EDT temperature is 0, or so
    small that the scaled logits overflow float, is decoded greedily (its distribution is a point mass anyway).
    Every value is checked by `validate_sampling_value` (ValueError naming it) before it is cast.
    """
    n, vocab = scores.shape
    dev = scores.device
    if repetition_penalty is not None:
        op = _opmath(scores.dtype)
        pen = _as_row_tensor("repetition_penalty", repetition_penalty, n, op, dev)
        if bool((pen != 1.0).any()):
            # Same as RepetitionPenaltyLogitsProcessor, with a [B, 1] penalty.
            ids = input_ids.clamp(max=vocab)
            if padding_lengths is not None:  # padding ids map to the dropped extra column
                pos = torch.arange(ids.shape[1], device=dev)
                ids = ids.masked_fill(pos[None, :] < padding_lengths.to(dev)[:, None], vocab)
            padded = torch.nn.functional.pad(scores, (0, 1))
            score = padded.gather(1, ids)
            pen_col = pen[:, None]
            wide = score.to(op)  # in the dtype HF's `score * penalty` (a Python float) computes in, rounded once
            score = torch.where(score < 0, wide * pen_col, wide / pen_col).to(scores.dtype)
            # rows without penalty keep their original values exactly
            score = torch.where(pen_col == 1.0, padded.gather(1, ids), score)
            scores = padded.scatter(1, ids, score)[..., :vocab]

    temp = _as_row_tensor("temperature", temperature, n, torch.float32, dev)
    greedy = temp == 0
    # top-nσ and EDT read the model's distribution before temperature: top-nσ so that its kept set is exactly
    # temperature-invariant, EDT because its temperature is a function of that distribution's entropy
    nsigma = _sampler_rows("top_nsigma", top_nsigma, n, greedy, dev)
    edt = _sampler_rows("edt_theta", edt_theta, n, greedy, dev)
    if edt is not None:
        theta, rows = edt
        temp = temp.index_copy(0, rows, samplers.edt_temperature(_rows(scores, rows).float(), _rows(temp, rows),
                                                                 _rows(theta, rows)))
    if nsigma is not None:
        n_sig, rows = nsigma
        sub = _rows(scores, rows)
        scores = _put_rows(scores, rows, sub.masked_fill(samplers.top_nsigma_mask(sub, _rows(n_sig, rows)), NEG_INF))
    greedy = temp == 0
    if bool(greedy.any()):
        scores = _greedy_mask(scores, greedy)
    scaled = ~greedy & (temp != 1.0)
    unscaled = scores
    # dividing by a [B, 1] tensor gives the same result per row as HF's scalar division (see _opmath)
    op = _opmath(scores.dtype)
    if bool(scaled.all()):
        scores = (scores.to(op) / temp.to(op)[:, None]).to(scores.dtype)
    elif bool(scaled.any()):
        div = (scores.to(op) / torch.where(scaled, temp, 1.0).to(op)[:, None]).to(scores.dtype)
        scores = torch.where(scaled[:, None], div, scores)
    if edt is not None:  # an EDT temperature can be tiny but positive: the division overflows, the row is a point mass
        over = scaled & ~torch.isfinite(scores.amax(-1))
        if bool(over.any()):
            scores = torch.where(over[:, None], _greedy_mask(unscaled, over), scores)
            greedy = greedy | over

    scores = _filter_rows(scores, _sampler_rows("top_h", top_h, n, greedy, dev), samplers.top_h_filter)

    k = _as_row_tensor("top_k", top_k, n, torch.long, dev)
    k = k.clamp(max=vocab)
    # Greedy rows already hold a single finite logit, which every filter keeps: skip them.
    rows = ((k > 0) & ~greedy).nonzero().squeeze(1)
    if rows.numel():
        sub, kr = _rows(scores, rows), _rows(k, rows)
        kth = torch.topk(sub, int(kr.max()), dim=-1).values.gather(1, (kr - 1)[:, None])
        scores = _put_rows(scores, rows, sub.masked_fill(sub < kth, NEG_INF))

    # float64 so that (1 - p) rounded to the scores' dtype matches HF's `cum <= 1 - top_p` on a Python float
    # (a comparison with a Python float casts it to the tensor's dtype: float32, or bf16 for bf16 scores)
    p = _as_row_tensor("top_p", top_p, n, torch.float64, dev)
    # Sorting the vocabulary is the most expensive step: only rows with top-p < 1 pay for it.
    rows = ((p < 1.0) & ~greedy).nonzero().squeeze(1)
    if rows.numel():
        sub, thr = _rows(scores, rows), (1.0 - _rows(p, rows)).to(scores.dtype)
        sorted_logits, sorted_idx = torch.sort(sub, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cum <= thr[:, None]
        remove_sorted[..., -1:] = False  # keep at least one token
        remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)
        scores = _put_rows(scores, rows, sub.masked_fill(remove, NEG_INF))

    for name, value, fn in (("min_p", min_p, samplers.min_p_filter), ("typical_p", typical_p, samplers.typical_filter),
                            ("epsilon_cutoff", epsilon_cutoff, samplers.epsilon_filter),
                            ("eta_cutoff", eta_cutoff, samplers.eta_filter)):
        scores = _filter_rows(scores, _sampler_rows(name, value, n, greedy, dev), fn)
    return scores


class SamplingParamsProcessor(LogitsProcessor):
    """Applies per-row hyperparameters chosen each step by `decide(input_ids) -> dict`.

    `decide` returns {"temperature", "top_p", "top_k"[, "repetition_penalty", any `SAMPLER_OFF` key]}, each a
    scalar or [B] tensor; a sampler left out is off.
    Used with `generate(do_sample=True, temperature=1.0, top_p=1.0, top_k=0)` so no stock warper runs.
    """

    def __init__(self, decide, padding_lengths: torch.Tensor | None = None):
        self.decide = decide
        self.padding_lengths = padding_lengths

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        v = self.decide(input_ids)
        return apply_sampling_params(input_ids, scores, v["temperature"], v["top_p"], v["top_k"],
                                     v.get("repetition_penalty"), self.padding_lengths,
                                     **{k: v[k] for k in SAMPLER_OFF if k in v})
