"""Common random numbers for sampling in vLLM: the token at each step is an inverse-CDF draw whose one uniform is a
function of (the request's seed, the step) only.

Why. Comparing decoding methods is sharper when every method sees the same randomness (a paired comparison with
common random numbers; the HF path gets it from `torch.manual_seed` before each batch). vLLM's own per-request
seeds (`SamplingParams(seed=...)`) would give that where they work, but the CPU build's engine dies on them ("CPU
Generator does not use offset"), and vLLM's batch-wide generator makes a row's noise depend on which other rows
share the batch.

Mechanism. For a row whose processed scores are s (already warped: temperature, top-k, top-p, ... as -inf masks),
the token is the first v with C_v > u * C_V, where C is the cumulative sum of exp(s - max s) over the vocabulary
and u = `uniforms(seed, step)`, a counter-based uniform in (0, 1) (a keyed hash of (seed, step, stream), no
generator state). That is an exact draw from softmax(s) (inverse-CDF sampling; a token whose weight underflows
float32, below e^-103 of the top one, is never drawn), and u depends on nothing but (seed, step, stream): two
methods given the same seed see the same u at every step, whatever else is in the batch, so methods whose
processed distributions agree produce identical samples, and methods that differ are coupled through the same
quantile. A greedy row (one finite score) gets its argmax whatever u is. The whole batch is drawn in one call:
one uniform per row and one pass over the scores (a Gumbel-max draw would need a vocabulary of noise per
row, two logarithms each: about five times the cost, measured in bench/warp_cost.py). The served model returns `point_mass(s,
token)` (0 at the token, -inf elsewhere) and the request asks vLLM for greedy decoding, so vLLM's sampler consumes
no randomness and can only pick that token.

What is lost: vLLM's returned logprobs describe the point mass (0 for the token), not the distribution it was drawn
from; recompute them with one teacher-forced HF pass (`adaptive_decoder.modeling.response_logps`). Samples are not the ones
HF `generate` draws for the same seed (another RNG); only greedy decoding agrees token for token.

The head's own sampled bin choices (selection="sample", LPO exploration) are inverse-CDF draws on a separate
stream, one uniform per (row, step, factor) (`select_rows`), so they are reproducible outside the engine from the
same hidden states, a whole batch of rows and steps in one head call. Needs no vLLM.
"""

from __future__ import annotations

import hashlib

import torch

TOKEN_STREAM = 0
HEAD_STREAM = 1


def _hash63(*parts) -> int:
    h = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1  # non-negative, below 2**63: a valid manual_seed and msgpack integer


def request_seed(base: int, prompt_ids, sample_index: int) -> int:
    """A request's seed: a function of the batch's base seed, its prompt tokens and its sample index only, so a
    prompt's j-th sample does not depend on which other prompts share its batch (or on a resume's subset)."""
    return _hash63("request", int(base), ",".join(str(int(t)) for t in prompt_ids), int(sample_index))


NOISE_VERSION = 2  # part of every run fingerprint that samples with these draws: a change of scheme changes samples


def uniforms(seeds, steps, stream: int = TOKEN_STREAM, slot: str = "") -> torch.Tensor:
    """[n] float64 uniforms in (0, 1), row i a function of (seeds[i], steps[i], stream, slot) only: the top 53 bits of
    a keyed hash, plus half a unit so that neither end is reachable."""
    if len(seeds) != len(steps):
        raise ValueError(f"{len(seeds)} seeds but {len(steps)} steps")
    bits = [_hash63("u", int(a), int(b), int(stream), slot) >> 10 for a, b in zip(seeds, steps)]
    return (torch.tensor(bits, dtype=torch.float64) + 0.5) * 2.0**-53


def inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.LongTensor:
    """[n] indices: row i the first index whose cumulative weight exceeds u[i] times the row's total (weights >= 0,
    each row with some positive weight). A zero-weight index is never returned."""
    c = weights.cumsum(-1, dtype=torch.float64)
    total = c[:, -1:]
    idx = torch.searchsorted(c, u.to(c.device)[:, None] * total, right=True).squeeze(1)
    # u * total can round up to total: the first index that reaches it is the last one with positive weight
    return torch.minimum(idx, (c < total).sum(-1))


def draw_tokens(scores: torch.Tensor, seeds: list, steps: list) -> torch.LongTensor:
    """[n] tokens: row i drawn from softmax(scores[i]) with the uniform of (seeds[i], steps[i])."""
    n = scores.shape[0]
    if len(seeds) != n or len(steps) != n:
        raise ValueError(f"{n} rows but {len(seeds)} seeds and {len(steps)} steps")
    s = scores.float()
    return inverse_cdf((s - s.amax(-1, keepdim=True)).exp(), uniforms(seeds, steps))


def point_mass(scores: torch.Tensor, tokens: torch.LongTensor) -> torch.Tensor:
    """Scores that are 0 at `tokens` (one per row) and -inf elsewhere."""
    out = torch.full_like(scores, -float("inf"))
    return out.scatter_(1, tokens[:, None].to(scores.device), 0.0)


def select_rows(head, hidden: torch.Tensor, selection: str, epsilon: float, seeds, steps) -> dict:
    """The head's bin per active factor for each hidden state of `hidden` [n, H] ({factor: [n] long}), in one head
    call: the argmax, or (selection="sample") a draw from (1-epsilon)*pi + epsilon*uniform with the uniform of
    (seeds[i], steps[i]) on the head stream, one per factor. Runs on the head's device and dtype."""
    p0 = next(head.parameters())
    h = hidden.reshape(-1, hidden.shape[-1]).to(device=p0.device, dtype=p0.dtype)
    if selection == "argmax":
        return {f: c.cpu() for f, c in head.select(h, selection="argmax").items()}
    if selection != "sample":
        raise ValueError(f"selection must be 'argmax' or 'sample', got {selection!r}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
    out = {}
    for f, logits in head(h).items():
        p = logits.float().softmax(-1)
        if epsilon > 0:
            p = (1 - epsilon) * p + epsilon / p.shape[-1]
        out[f] = inverse_cdf(p.cpu(), uniforms(seeds, steps, HEAD_STREAM, f))
    return out
