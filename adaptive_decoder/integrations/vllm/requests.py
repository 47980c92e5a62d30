"""Which request each batch row belongs to, for the served head: the one thing `compute_logits` cannot see.

vLLM reorders the rows of its persistent batch between steps (a finished request's slot is filled by moving
the last row into it; new requests take free slots), and `compute_logits(hidden_states)` gets the rows in the
current order with no request attached. A logits processor, however, receives every change of the batch
(`update_state(BatchUpdate)`: removed, added with the request's own SamplingParams and a live reference to its
output tokens, moved/swapped) before each forward pass. `RequestRows` is such a processor that changes no
logits; it only keeps, per row, the request's SamplingParams and output-token list, for the model to read.

Sequence level (ADseq) uses it to decide once per request, inside the engine: at every sampling step a row
whose request has produced no token yet is taking its first sample, so its hidden state is that of the last
prompt token (with chunked prefill, earlier chunks also come through here; each later chunk overwrites the
tentative decision, and the last one is the prompt's end). That decision is stored on the request's own
SamplingParams object in the worker (`extra_args[SEQ_CHOICE_KEY]`) and reused at every later step, wherever
the row has moved. The worker keeps that object for the request's whole life, preemption included, and drops
it with the request, so the decision needs no bookkeeping of its own. (The alternative, deciding on the prompt
before submitting and sending ordinary per-request SamplingParams, would need the last prompt token's hidden
state on the client: a second forward pass outside vLLM, and no way to do it behind `vllm serve`.)

It is also where requests with non-neutral sampling values are noticed: vLLM's sampler would apply them on
top of the head's warping, so each such request gets a warning in the server log naming the values. Greedy
requests (temperature 0) are not warped on top of, but the head's warping never moves the argmax, so they decode
as the plain model's greedy: under a head, the first one of an engine is noted once in the log (`GREEDY_NOTE`:
lm-eval's completions client sends temperature 0 for every `do_sample: false` task). Requests that switch the
head off are exempt from both, and so are the backend's own requests (`per_request`: greedy over the point mass
the model drew). It also holds each request's controls (`controls`: the head off,
a temperature cap, forced bins), parsed once when the request joins the batch and refused at admission when bad.

It is attached only to engines that serve one of our architectures (`attach`: never through the global
`vllm.logits_processors` entry point, which would load it into every engine). One engine per process (vLLM's own
rule for a worker), so the active instance is a module global the model finds at load time, keyed by the model
directory so that a later engine in the same process never reads an earlier engine's rows.
"""

from __future__ import annotations

import logging

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from . import MODEL_CLASSES
from .controls import admission_bins, request_controls
from .per_request import REQUEST_KEY

logger = logging.getLogger(__name__)

SEQ_CHOICE_KEY = "adaptive_decoder_seq_choice"
GREEDY_NOTE = ("adaptive-decoder: a greedy request (temperature 0) decodes as the plain model's greedy: the head's "
               "warping never moves the argmax. Send temperature=1, top_p=1 for the head to choose (lm-eval: "
               "--gen_kwargs temperature=1,top_p=1); noted once per engine")
_GREEDY_EPS = 1e-5  # vLLM samples greedily below this temperature (its _SAMPLING_EPS)
_ACTIVE: "RequestRows | None" = None


def active_rows(model: str) -> "RequestRows | None":
    """The `RequestRows` of this process's engine serving `model` (its directory), or None when vLLM built none."""
    return _ACTIVE if _ACTIVE is not None and _ACTIVE.model == model else None


def non_neutral_values(params) -> dict:
    """The request sampling values that vLLM would apply on top of the head (empty: the request is neutral).

    Neutral: temperature 1 (or 0, greedy), top_p 1, top_k 0 or -1, min_p 0, no penalties, no logit bias."""
    checks = {"temperature": lambda v: v in (0.0, 1.0), "top_p": lambda v: v == 1.0, "top_k": lambda v: v in (0, -1, None),
              "min_p": lambda v: v == 0.0, "presence_penalty": lambda v: v == 0.0,
              "frequency_penalty": lambda v: v == 0.0, "repetition_penalty": lambda v: v == 1.0,
              "logit_bias": lambda v: not v}
    out = {}
    for name, ok in checks.items():
        v = getattr(params, name, None)
        if v is not None and not ok(v):
            out[name] = v
    return out


def _plain_greedy(params) -> bool:
    """A greedy request that is not the backend's own (`per_request`, whose point mass makes greedy its draw)."""
    return params.temperature < _GREEDY_EPS and REQUEST_KEY not in (params.extra_args or {})


class RequestRows(LogitsProcessor):
    """Row -> (SamplingParams, output-token list) of the persistent batch; changes no logits."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        global _ACTIVE
        archs = getattr(vllm_config.model_config.hf_config, "architectures", None) or []
        self.enabled = any(a in MODEL_CLASSES for a in archs)
        self.model = vllm_config.model_config.model
        # row -> the request's SamplingParams, its live output-token list, its prompt token ids (a repetition
        # penalty counts them) and its parsed controls (`controls`; None for most requests)
        self.rows: dict[str, dict[int, object]] = {"params": {}, "outputs": {}, "prompts": {}, "controls": {}}
        self.params, self.outputs, self.prompts, self.controls = (self.rows[k] for k in self.rows)
        self.bins: dict | None = None  # factor -> number of bins of the served head (set by the model at load)
        self.batch_size = 0
        self.fresh = False  # True from update_state until the step's sampling `compute_logits` consumed it
        self.greedy_noted = False
        if self.enabled:
            _ACTIVE = self

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        """Refuse a request with a bad control at admission (see `controls`)."""
        request_controls(getattr(sampling_params, "extra_args", None), admission_bins())

    def is_argmax_invariant(self) -> bool:
        return True  # apply() is the identity

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def _controls(self, params):
        try:
            return request_controls(params.extra_args, self.bins)
        except ValueError as e:  # admission checks the same; a worker must not die of one request
            logger.warning("%s: the control is ignored", e)
            return None

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if not self.enabled:
            return
        self.fresh = True  # vLLM calls this once before every forward pass
        if batch_update is None:
            return
        for i in batch_update.removed:
            for d in self.rows.values():
                d.pop(i, None)
        for i, params, prompt, output in batch_update.added:
            ctl = self._controls(params)
            self.params[i], self.outputs[i], self.prompts[i] = params, output, prompt
            if ctl is not None:
                self.controls[i] = ctl
            else:
                self.controls.pop(i, None)
            if ctl and ctl["off"]:
                continue
            bad = non_neutral_values(params)
            if bad:
                logger.warning("adaptive-decoder: request sampling values %s are applied on top of the head's own "
                               "choices; send temperature=1, top_p=1, top_k=0 (or temperature=0 for plain greedy)",
                               bad)
            elif self.bins is not None and not self.greedy_noted and _plain_greedy(params):
                self.greedy_noted = True
                logger.warning(GREEDY_NOTE)
        for a, b, direction in batch_update.moved:
            for d in self.rows.values():
                va, vb = d.pop(a, None), d.pop(b, None)  # a one-way move fills a free slot b: nothing to keep
                if vb is not None and direction == MoveDirectionality.SWAP:
                    d[a] = vb
                if va is not None:
                    d[b] = va
        self.batch_size = batch_update.batch_size

    def take_sampling_rows(self, n: int) -> bool:
        """Whether this `compute_logits` call of `n` rows is the step's sampling call over the whole batch (the
        first after `update_state`; later calls in a step are prompt-logprob passes, earlier ones warm-up runs)."""
        is_sampling = self.fresh and n == self.batch_size and all(i in self.params for i in range(n))
        self.fresh = False
        return is_sampling

    def sequence_choices(self, now: dict) -> dict:
        """Per-row bin indices for a sequence-level head, given this step's per-row argmax choices `now`
        (factor -> [n] long tensor, rows in batch order): the stored decision of each request that has
        already sampled, `now` (stored as the request's decision) for each one that has not."""
        if not now:  # a head with no active factor decides nothing
            return now
        n = next(iter(now.values())).shape[0]
        out = {f: c.clone() for f, c in now.items()}
        for i in range(n):
            params = self.params[i]
            extra = params.extra_args if params.extra_args is not None else {}
            if len(self.outputs[i]) == 0 or SEQ_CHOICE_KEY not in extra:
                extra[SEQ_CHOICE_KEY] = {f: int(c[i]) for f, c in now.items()}
                params.extra_args = extra
            else:
                for f, idx in extra[SEQ_CHOICE_KEY].items():
                    out[f][i] = idx
        return out
