"""Common random numbers for sampling in vLLM: the token at each step is an inverse-CDF draw whose one uniform is a
function of (the request's seed, the step) only.

Why. Comparing decoding methods is sharper when every method sees the same randomness (a paired comparison with
common random numbers). vLLM's own per-request
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
from; recompute them with one teacher-forced HF pass (`adaptive_decoder.modeling.response_logps`). HF `generate` with
the same `row_seeds=` draws with the same functions (`adaptive_decoder.modeling.noise`, where they live: they need
no vLLM), so the two backends agree token for token wherever their processed scores agree.

The head's own sampled bin choices (selection="sample", LPO exploration) are inverse-CDF draws on a separate
stream, one uniform per (row, step, factor) (`select_rows`), so they are reproducible outside the engine from the
same hidden states, a whole batch of rows and steps in one head call.
"""

from __future__ import annotations

# the vLLM backend's names for the library's counter-based noise
from ...modeling.noise import (HEAD_STREAM, NOISE_VERSION, TOKEN_STREAM, draw_tokens, inverse_cdf,  # noqa: F401
                               point_mass, request_seed, select_rows, uniforms)
