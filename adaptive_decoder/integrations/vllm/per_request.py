"""Requests that bring their own decoding values and seed: how the served model samples for the `vllm` backend of
the evaluation suite and the collection (`backend.VLLMDecodingModel`).

A request opts in with `SamplingParams(temperature=0, extra_args={REQUEST_KEY: spec})`, where spec is

    {"seed": int,                                   the common-random-numbers seed of its tokens (`crn`)
     "force": {name: value},                        fixed values (temperature, top_p, top_k, repetition_penalty,
                                                    min_p, any sampler)
  or "head": DIR, "selection": "argmax"|"sample", "epsilon": float, "head_seed": int}
                                                    a saved head (loaded once per worker) decides, per step
                                                    (token level) or once on the last prompt token (sequence)

Per sampling step, for each such row (`RequestDecoder.warp_rows`): its values (forced, or the head's choice on the
row's hidden state), `apply_sampling_params` over the batch with per-row values (the same function our HF path
uses; a repetition penalty, its first operation, is applied row by row over the row's prompt and output tokens
first, since rows differ in length), then the Gumbel-max draw of `crn` with (seed, tokens generated so far),
returned as a point mass, so that vLLM's greedy sampler takes exactly that token. Rows without a spec in the same
batch keep the served head's warping (or the plain model's logits when the directory has no head) and vLLM's own
sampling.

Invariant: a row's token depends only on its prefix, its spec and its step, never on the other rows; with the
same seed, two requests whose processed distributions are equal at every step produce the same tokens.
A sequence-level head's decision is stored in the spec (the request's own SamplingParams in the worker), as
`requests.RequestRows.sequence_choices` does. Needs no vLLM (the params objects are only read).
"""

from __future__ import annotations

import torch

from ...modeling.head import AdaptiveDecoderHead
from ...modeling.sampling import SAMPLER_OFF, apply_sampling_params
from .crn import gumbel_tokens, point_mass, select_row

REQUEST_KEY = "adaptive_decoder_request"
_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0, **SAMPLER_OFF}


def request_spec(params) -> dict | None:
    """The spec a request carries in `extra_args[REQUEST_KEY]`, or None."""
    extra = getattr(params, "extra_args", None) or {}
    spec = extra.get(REQUEST_KEY)
    if spec is not None and not isinstance(spec, dict):
        raise ValueError(f"extra_args[{REQUEST_KEY!r}] must be a dict, got {type(spec).__name__}")
    return spec


class RequestDecoder:
    """Per-row values and seeded draws for the rows whose requests carry a spec; heads cached by directory."""

    def __init__(self):
        self._heads: dict[str, AdaptiveDecoderHead] = {}

    def head(self, path: str) -> AdaptiveDecoderHead:
        if path not in self._heads:
            # float32 on the CPU whatever vLLM's default dtype is, as the served head (export.load_served_head)
            previous = torch.get_default_dtype()
            torch.set_default_dtype(torch.float32)
            try:
                with torch.device("cpu"):
                    self._heads[path] = AdaptiveDecoderHead.from_pretrained(path).float().eval()
            finally:
                torch.set_default_dtype(previous)
        return self._heads[path]

    def row_values(self, hidden_row: torch.Tensor, spec: dict, step: int) -> dict:
        """{name: number} applied to one row at `step` (tokens the request generated before this one)."""
        if "force" in spec:
            return dict(spec["force"])
        if "head" not in spec:
            raise ValueError(f"a {REQUEST_KEY} spec needs 'force' or 'head', got keys {sorted(spec)}")
        head = self.head(spec["head"])
        sel, eps, seed = spec.get("selection") or head.config.selection, float(spec.get("epsilon", 0.0)), spec["head_seed"]
        if head.config.level == "sequence":
            # step 0 is the last prompt token (each chunk of a chunked prefill comes here, the last one stays)
            if step == 0 or "choice" not in spec:
                spec["choice"] = select_row(head, hidden_row, sel, eps, seed, 0)
            choice = spec["choice"]
        else:
            choice = select_row(head, hidden_row, sel, eps, seed, step)
        v = head.values({f: torch.tensor([c]) for f, c in choice.items()}, shape=(1,))
        return {k: x[0].item() for k, x in v.items()}

    @torch.no_grad()
    def warp_rows(self, hidden: torch.Tensor, logits: torch.Tensor, specs: list, steps: list,
                  served: dict | None = None, token_ids=None) -> torch.Tensor:
        """Scores for one sampling call: spec rows as point masses, the others warped with `served` (per-row
        value tensors of the served head) or left as they are. `specs[i]`: row i's spec or None; `token_ids(i)`:
        row i's prompt + output token ids (needed only for a repetition penalty)."""
        n = logits.shape[0]
        rows = []
        for i in range(n):
            if specs[i] is not None:
                rows.append(self.row_values(hidden[i], specs[i], steps[i]))
            elif served is not None:
                rows.append({k: v[i].item() for k, v in served.items()})
            else:
                rows.append({})  # plain model: neutral values leave the row untouched
        keys = dict.fromkeys(["temperature", "top_p", "top_k", *(k for r in rows for k in r)])
        unknown = sorted(set(keys) - set(_DEFAULTS))
        if unknown:
            raise ValueError(f"request values {unknown} are not supported by the served model; valid: {sorted(_DEFAULTS)}")
        v = {k: [r.get(k, _DEFAULTS[k]) for r in rows] for k in keys}
        v["top_k"] = [int(x) for x in v["top_k"]]
        scores = logits.float()
        penalised = [i for i, p in enumerate(v.pop("repetition_penalty", [])) if p != 1.0]
        if penalised and token_ids is None:
            raise ValueError("a repetition penalty needs the rows' token ids")
        for i in penalised:
            ids = torch.tensor([list(token_ids(i))], dtype=torch.long, device=scores.device)
            row = apply_sampling_params(ids, scores[i : i + 1], 1.0, 1.0, 0, repetition_penalty=[rows[i]["repetition_penalty"]])
            scores = scores.index_copy(0, torch.tensor([i], device=scores.device), row)
        scores = apply_sampling_params(None, scores, v["temperature"], v["top_p"], v["top_k"],
                                       **{k: v[k] for k in SAMPLER_OFF if k in v})
        seeded = [i for i in range(n) if specs[i] is not None]
        if seeded:
            idx = torch.tensor(seeded, device=scores.device)
            sub = scores.index_select(0, idx)
            tokens = gumbel_tokens(sub, [specs[i]["seed"] for i in seeded], [steps[i] for i in seeded])
            scores = scores.index_copy(0, idx, point_mass(sub, tokens))
        return scores
