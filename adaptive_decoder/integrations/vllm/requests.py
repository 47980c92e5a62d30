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
requests (temperature 0) are exempt: the head's warping never moves the argmax, so they decode plain greedy.

It is installed through the `vllm.logits_processors` entry point, so vLLM loads it for every model; it stays
inert (and is not consulted) unless the model being served is one of ours. One engine per process (vLLM's own
rule for a worker), so the active instance is a module global the model finds at load time.
"""

from __future__ import annotations

import logging

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from . import MODEL_CLASSES

logger = logging.getLogger(__name__)

SEQ_CHOICE_KEY = "adaptive_decoder_seq_choice"
_ACTIVE: "RequestRows | None" = None


def active_rows() -> "RequestRows | None":
    """The `RequestRows` of the engine in this process, or None when vLLM did not build one."""
    return _ACTIVE


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


class RequestRows(LogitsProcessor):
    """Row -> (SamplingParams, output-token list) of the persistent batch; changes no logits."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        global _ACTIVE
        archs = getattr(vllm_config.model_config.hf_config, "architectures", None) or []
        self.enabled = any(a in MODEL_CLASSES for a in archs)
        self.params: dict[int, object] = {}
        self.outputs: dict[int, list] = {}
        self.prompts: dict[int, list] = {}  # prompt token ids (a repetition penalty counts them)
        self.batch_size = 0
        self.fresh = False  # True from update_state until the step's sampling `compute_logits` consumed it
        if self.enabled:
            _ACTIVE = self

    def is_argmax_invariant(self) -> bool:
        return True  # apply() is the identity

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if not self.enabled:
            return
        self.fresh = True  # vLLM calls this once before every forward pass
        if batch_update is None:
            return
        for i in batch_update.removed:
            self.params.pop(i, None)
            self.outputs.pop(i, None)
            self.prompts.pop(i, None)
        for i, params, prompt, output in batch_update.added:
            self.params[i], self.outputs[i], self.prompts[i] = params, output, prompt
            bad = non_neutral_values(params)
            if bad:
                logger.warning("adaptive-decoder: request sampling values %s are applied on top of the head's own "
                               "choices; send temperature=1, top_p=1, top_k=0 (or temperature=0 for plain greedy)",
                               bad)
        for a, b, direction in batch_update.moved:
            pa, oa, qa = self.params.pop(a, None), self.outputs.pop(a, None), self.prompts.pop(a, None)
            if direction == MoveDirectionality.SWAP:
                pb, ob, qb = self.params.pop(b, None), self.outputs.pop(b, None), self.prompts.pop(b, None)
                if pb is not None:
                    self.params[a], self.outputs[a], self.prompts[a] = pb, ob, qb
            if pa is not None:
                self.params[b], self.outputs[b], self.prompts[b] = pa, oa, qa
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
