"""Requests that bring their own decoding values and seed: how the served model samples for the `vllm` backend of
the evaluation suite and the collection (`backend.VLLMDecodingModel`).

A request opts in with `SamplingParams(temperature=0, extra_args={REQUEST_KEY: spec})`, where spec is

    {"seed": int,                                   the common-random-numbers seed of its tokens (`crn`)
     "force": {name: value},                        fixed values (temperature, top_p, top_k, repetition_penalty,
                                                    min_p, any sampler)
  or "head": DIR, "selection": "argmax"|"sample", "epsilon": float, "head_seed": int}
                                                    a saved head (loaded once per worker) decides, per step
                                                    (token level) or once on the last prompt token (sequence)

Per sampling step, for the whole batch at once (`RequestDecoder.warp_rows`): each row's values (forced and
validated once per request, or the head's choice on the row's hidden state: one head call per head directory),
the warping over the batch with per-row values (`modeling.warp` for temperature / top-k / top-p / min-p, the same
distribution as our HF path's `apply_sampling_params` without a vocabulary sort; that function itself for the
other samplers; a repetition penalty, the first operation, is applied first to the penalised rows over their
left-padded prompt + output tokens, since rows differ in length), then the seeded draw of `crn` with (seed,
tokens generated so far) for every spec row in one call, returned as a point mass, so that vLLM's greedy sampler
takes exactly that token. Rows without a spec in the same batch keep the served head's warping (or the plain
model's logits when the directory has no head) and vLLM's own sampling.

Invariant: a row's token depends only on its prefix, its spec and its step, never on the other rows; with the
same seed, two requests whose processed distributions are equal at every step produce the same tokens.
A sequence-level head's decision is stored in the spec (the request's own SamplingParams in the worker), as
`requests.RequestRows.sequence_choices` does. Needs no vLLM (the params objects are only read).
"""

from __future__ import annotations

import torch

from ...modeling.head import AdaptiveDecoderHead
from ...modeling.sampling import SAMPLER_OFF, apply_sampling_params, validate_sampling_value
from ...modeling.warp import warp
from .crn import draw_tokens, select_rows

REQUEST_KEY = "adaptive_decoder_request"
_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0, **SAMPLER_OFF}
_WARP_KEYS = {"temperature", "top_p", "top_k", "min_p"}  # what `modeling.warp` applies without sorting
_CHECKED = "_checked"  # set on a spec once its forced values were validated: once per request, not per step


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

    def head_values(self, hidden: torch.Tensor, rows: list, specs: list, steps: list) -> list[dict]:
        """{name: number} for each of `rows` (spec rows): one head call per head directory and selection for the
        rows that decide now, one value lookup per head directory for every head row."""
        out: dict[int, dict] = {}
        groups: dict[tuple, list] = {}  # (head dir, selection, epsilon) -> rows that decide at this step
        picks: dict[str, list] = {}  # head dir -> [(row, {factor: bin})]
        for i in rows:
            spec = specs[i]
            if "force" in spec:
                if not spec.get(_CHECKED):
                    for name, value in spec["force"].items():
                        if name in _DEFAULTS:  # unknown names are refused below, for the whole batch
                            validate_sampling_value(name, value, f"force[{name!r}]")
                    spec[_CHECKED] = True
                out[i] = dict(spec["force"])
            elif "head" not in spec:
                raise ValueError(f"a {REQUEST_KEY} spec needs 'force' or 'head', got keys {sorted(spec)}")
            elif self.head(spec["head"]).config.level == "sequence" and steps[i] > 0 and "choice" in spec:
                # step 0 is the last prompt token (each chunk of a chunked prefill decides, the last one stays)
                picks.setdefault(spec["head"], []).append((i, spec["choice"]))
            else:
                sel = spec.get("selection") or self.head(spec["head"]).config.selection
                groups.setdefault((spec["head"], sel, float(spec.get("epsilon", 0.0))), []).append(i)
        for (path, sel, eps), idx in groups.items():
            seq = self.head(path).config.level == "sequence"
            chosen = select_rows(self.head(path), hidden[idx], sel, eps, [specs[i]["head_seed"] for i in idx],
                                 [0 if seq else steps[i] for i in idx])
            for j, i in enumerate(idx):
                choice = {f: int(c[j]) for f, c in chosen.items()}
                if seq:
                    specs[i]["choice"] = choice
                picks.setdefault(path, []).append((i, choice))
        for path, chosen in picks.items():
            factors = list(chosen[0][1])  # one head: every row chose the same factors
            v = self.head(path).values({f: torch.tensor([c[f] for _, c in chosen]) for f in factors},
                                       shape=(len(chosen),))
            cols = {k: x.tolist() for k, x in v.items()}
            for j, (i, _) in enumerate(chosen):
                out[i] = {k: float(col[j]) for k, col in cols.items()}
        return [out[i] for i in rows]

    def row_values(self, hidden_row: torch.Tensor, spec: dict, step: int) -> dict:
        """{name: number} applied to one row at `step` (tokens the request generated before this one)."""
        return self.head_values(hidden_row[None], [0], [spec], [step])[0]

    @torch.no_grad()
    def warp_rows(self, hidden: torch.Tensor, logits: torch.Tensor, specs: list, steps: list,
                  served: dict | None = None, token_ids=None) -> torch.Tensor:
        """Scores for one sampling call: spec rows as point masses, the others warped with `served` (per-row
        value tensors of the served head) or left as they are. `specs[i]`: row i's spec or None; `token_ids(i)`:
        row i's prompt + output token ids (needed only for a repetition penalty). One head call per head, one warping
        call and one draw for the whole batch; the caller's logits are not written to."""
        n = logits.shape[0]
        seeded = [i for i in range(n) if specs[i] is not None]
        spec_values = self.head_values(hidden, seeded, specs, steps)
        keys = dict.fromkeys(["temperature", "top_p", "top_k", *(served or {}), *(k for r in spec_values for k in r)])
        unknown = sorted(set(keys) - set(_DEFAULTS))
        if unknown:
            raise ValueError(f"request values {unknown} are not supported by the served model; valid: {sorted(_DEFAULTS)}")
        # per-row values: the served head's (or neutral: a plain model's rows are left as they are), then the specs'
        v = {}
        for k in keys:
            col = (served[k].detach().to("cpu", torch.float64) if served is not None and k in served
                   else torch.full((n,), float(_DEFAULTS[k]), dtype=torch.float64))
            if seeded:
                col[seeded] = torch.tensor([float(r.get(k, _DEFAULTS[k])) for r in spec_values], dtype=torch.float64)
            v[k] = col
        v["top_k"] = v["top_k"].long()
        scores = logits.float()
        pen = v.pop("repetition_penalty", None)
        if pen is not None and bool((pen != 1.0).any()):
            scores = self._penalise(scores, pen, token_ids)
        if set(v) <= _WARP_KEYS:
            scores = warp(scores, v["temperature"], v["top_p"], v["top_k"], min_p=v.get("min_p"))
        else:
            scores = apply_sampling_params(None, scores, v["temperature"], v["top_p"], v["top_k"],
                                           **{k: v[k] for k in SAMPLER_OFF if k in v})
        if seeded:
            if scores.data_ptr() == logits.data_ptr():  # nothing was warped: do not write into the caller's logits
                scores = scores.clone()
            idx = torch.tensor(seeded, device=scores.device)
            tokens = draw_tokens(scores.index_select(0, idx), [specs[i]["seed"] for i in seeded], [steps[i] for i in seeded])
            scores[idx] = -float("inf")
            scores[idx, tokens.to(scores.device)] = 0.0
        return scores

    @staticmethod
    def _penalise(scores: torch.Tensor, pen: torch.Tensor, token_ids) -> torch.Tensor:
        """The repetition penalty of the penalised rows, in one call over their left-padded token ids."""
        if token_ids is None:
            raise ValueError("a repetition penalty needs the rows' token ids")
        rows = (pen != 1.0).nonzero().squeeze(1).tolist()
        ids = [list(token_ids(i)) for i in rows]
        width = max(1, max(map(len, ids)))
        padded = torch.zeros((len(rows), width), dtype=torch.long)
        for j, row in enumerate(ids):
            if row:
                padded[j, width - len(row):] = torch.tensor(row, dtype=torch.long)
        lengths = torch.tensor([width - len(row) for row in ids])
        idx = torch.tensor(rows, device=scores.device)
        sub = apply_sampling_params(padded.to(scores.device), scores.index_select(0, idx), 1.0, 1.0, 0,
                                    repetition_penalty=pen[rows].to(scores.device), padding_lengths=lengths)
        scores = scores.clone()  # the caller's logits stay as they were
        scores[idx] = sub
        return scores
