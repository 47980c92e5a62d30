"""Counter-based noise: every random draw of a sampled row is a pure function of (the row's seed, the step, a
stream), never of a generator's state, so a row's samples do not depend on the other rows of its batch.

The one seeding rule of the library's scored sampling (`adaptive_decoder.scoring`): a prompt's seed is
`prompt_seed(seed, task, prompt id)`, its j-th sample's row seed `row_seeds([that], k)[j]` (a hash of both), and at
step t the row's token is an inverse-CDF draw from its processed distribution with the uniform
`uniforms([row seed], [t])` on TOKEN_STREAM; a head's sampled bin choice (selection="sample", epsilon exploration)
is the same kind of draw on HEAD_STREAM, one uniform per (row, step, factor). The HF path opts in with
`AdaptiveDecodingModel.generate(row_seeds=...)` (`RowSeededDraw` draws the token and hands generate a point mass),
the vLLM backend with the same argument (`integrations.vllm.per_request` draws in the served model): both draw
the same token from the same processed scores. Batch size, batch order, the other prompts and a resume change
nothing but the last bits of the logits where left padding differs (a token flips only when its uniform lands
within that rounding of a boundary of the cumulative distribution).

Inverse CDF: the token is the first v with C_v > u * C_V, C the cumulative sum of exp(s - max s), an exact draw
from softmax(s) (a token whose weight underflows float32, below e^-103 of the top one, is never drawn); a greedy
row (one finite score) gets its argmax whatever u is. One uniform per row and one pass over the scores: a
Gumbel-max draw would need a vocabulary of noise per row (about five times the cost, bench/warp_cost.py).
"""

from __future__ import annotations

import hashlib

import torch
from transformers import LogitsProcessor
from .head import exploration_probs

TOKEN_STREAM = 0
HEAD_STREAM = 1

# part of every run fingerprint that samples (evaluation, collection, HAG search): a change of scheme changes
# samples, so a directory written under another scheme is refused rather than continued with other noise
NOISE_VERSION = 3


def _hash63(*parts) -> int:
    h = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1  # non-negative, below 2**63: a valid manual_seed and msgpack integer


def request_seed(base: int, prompt_ids, sample_index: int) -> int:
    """A request's seed from a batch's base seed, its prompt tokens and its sample index (the vLLM backend's rule
    for a call without `row_seeds`)."""
    return _hash63("request", int(base), ",".join(str(int(t)) for t in prompt_ids), int(sample_index))


def prompt_seed(seed: int, task, prompt_id) -> int:
    """The seed of one prompt: a function of (run seed, task name, prompt id) only."""
    return _hash63("prompt", int(seed), str(task), str(prompt_id))


def row_seeds(prompt_seeds, k: int, label: str = "") -> list[int]:
    """Row seeds of k samples per prompt, row i*k + j = prompt i's j-th sample (generate's num_return_sequences
    layout). `label` names another family of rows of the same prompts (e.g. collection's scored twins)."""
    return [_hash63("row", int(s), int(j), label) for s in prompt_seeds for j in range(int(k))]


def seeding(seed, k: int) -> dict:
    """`generate` keywords for a policy's `seed`: a list holds one `prompt_seed` per prompt and gives k row seeds
    each (`row_seeds=`, the batch-independent rule); an int seeds torch's global generator (HF's own sampling,
    whose draws depend on the whole batch) and the head's generator."""
    if isinstance(seed, (list, tuple)):
        return {"row_seeds": row_seeds(seed, k)}
    torch.manual_seed(int(seed))
    return {"head_seed": int(seed)}


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
    """The head's bin per active factor for each hidden state of `hidden` [n, H] ({factor: [n] long}, on the CPU),
    in one head call: the argmax, or (selection="sample") a draw from (1-epsilon)*pi + epsilon*uniform with the
    uniform of (seeds[i], steps[i]) on the head stream, one per factor. Runs on the head's device and dtype."""
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
        out[f] = inverse_cdf(exploration_probs(logits, epsilon).cpu(), uniforms(seeds, steps, HEAD_STREAM, f))
    return out


class RowSeededDraw(LogitsProcessor):
    """The last logits processor of a `generate(do_sample=True)` call with row seeds: draws each row's token from
    its processed scores with the uniform of (its seed, the step) and returns the point mass on it, so generate's
    multinomial can pick nothing else and the global generator's state never reaches a token."""

    def __init__(self, seeds):
        self.seeds = [int(s) for s in seeds]
        self.step = 0  # tokens generated before this call: generate calls the processors once per step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        n = scores.shape[0]
        if n != len(self.seeds):
            raise ValueError(f"row_seeds has {len(self.seeds)} seeds but generate samples {n} rows "
                             "(prompts x num_return_sequences)")
        tokens = draw_tokens(scores, self.seeds, [self.step] * n)
        self.step += 1
        return point_mass(scores, tokens)
