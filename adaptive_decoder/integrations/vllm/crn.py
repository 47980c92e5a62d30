"""Common random numbers for sampling in vLLM: the token at each step is a Gumbel-max draw whose noise is a function
of (the request's seed, the step) only.

Why. Comparing decoding methods is sharper when every method sees the same randomness (a paired comparison with
common random numbers; the HF path gets it from `torch.manual_seed` before each batch). vLLM's own per-request
seeds (`SamplingParams(seed=...)`) would give that where they work, but the CPU build's engine dies on them ("CPU
Generator does not use offset"), and vLLM's batch-wide generator makes a row's noise depend on which other rows
share the batch.

Mechanism. For a row whose processed scores are s (already warped: temperature, top-k, top-p, ... as -inf masks),
the token is argmax_v (s_v + G_v) with G_v = -log(-log U_v) and U = the uniforms of a torch CPU generator seeded by
`step_seed(seed, step)`. That is an exact draw from softmax(s) (the Gumbel-max trick), and the noise depends on
nothing but (seed, step, vocabulary size): two methods given the same seed see the same U at every step, whatever
else is in the batch, so methods whose processed distributions agree produce identical samples, and methods that
differ are coupled as tightly as one noise vector allows. A greedy row (one finite score) gets its argmax whatever
the noise. The served model returns `point_mass(s, token)` (0 at the token, -inf elsewhere) and the request asks
vLLM for greedy decoding, so vLLM's sampler consumes no randomness and can only pick that token.

What is lost: vLLM's returned logprobs describe the point mass (0 for the token), not the distribution it was drawn
from; recompute them with one teacher-forced HF pass (`adaptive_decoder.modeling.response_logps`). Samples are not the ones
HF `generate` draws for the same seed (another RNG); only greedy decoding agrees token for token.

The head's own sampled bin choices (selection="sample", LPO exploration) get the same treatment on a separate
stream (`select_row`), so they are reproducible outside the engine from the same hidden states. Needs no vLLM.
"""

from __future__ import annotations

import hashlib

import torch

TOKEN_STREAM = 0
HEAD_STREAM = 1


def _hash63(*parts) -> int:
    h = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1  # non-negative, below 2**63: a valid manual_seed and msgpack integer


def step_seed(seed: int, step: int, stream: int = TOKEN_STREAM) -> int:
    """The generator seed of one request's draw at `step` (tokens generated before it) on `stream`."""
    return _hash63("step", int(seed), int(step), int(stream))


def request_seed(base: int, prompt_ids, sample_index: int) -> int:
    """A request's seed: a function of the batch's base seed, its prompt tokens and its sample index only, so a
    prompt's j-th sample does not depend on which other prompts share its batch (or on a resume's subset)."""
    return _hash63("request", int(base), ",".join(str(int(t)) for t in prompt_ids), int(sample_index))


def gumbel_noise(seed: int, step: int, vocab: int, stream: int = TOKEN_STREAM) -> torch.Tensor:
    """[vocab] float64 Gumbel(0, 1) noise of (seed, step, stream), drawn on the CPU (same numbers on any device)."""
    g = torch.Generator(device="cpu").manual_seed(step_seed(seed, step, stream))
    u = torch.rand(vocab, generator=g, dtype=torch.float64)
    return -torch.log(-torch.log(u))  # u = 0 (probability 2**-53) gives -inf: that token is never chosen


def gumbel_tokens(scores: torch.Tensor, seeds: list, steps: list) -> torch.LongTensor:
    """[n] tokens: row i drawn from softmax(scores[i]) with the noise of (seeds[i], steps[i])."""
    n, vocab = scores.shape
    if len(seeds) != n or len(steps) != n:
        raise ValueError(f"{n} rows but {len(seeds)} seeds and {len(steps)} steps")
    noise = torch.stack([gumbel_noise(s, t, vocab) for s, t in zip(seeds, steps)]).to(scores.device)
    return (scores.double() + noise).argmax(-1)


def point_mass(scores: torch.Tensor, tokens: torch.LongTensor) -> torch.Tensor:
    """Scores that are 0 at `tokens` (one per row) and -inf elsewhere."""
    out = torch.full_like(scores, -float("inf"))
    return out.scatter_(1, tokens[:, None].to(scores.device), 0.0)


def select_row(head, hidden: torch.Tensor, selection: str, epsilon: float, seed: int, step: int) -> dict:
    """The head's bin per active factor for ONE hidden state [H] ({factor: int}), sampled (selection="sample")
    with a CPU generator of (seed, step) on the head stream; argmax needs no seed. `head` must be on the CPU."""
    g = None
    if selection == "sample":
        g = torch.Generator(device="cpu").manual_seed(step_seed(seed, step, HEAD_STREAM))
    h = hidden.reshape(1, -1).to(device="cpu", dtype=next(head.parameters()).dtype)
    return {f: int(c[0]) for f, c in head.select(h, selection=selection, generator=g, epsilon=epsilon).items()}
