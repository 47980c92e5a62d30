"""vLLM model classes that warp their logits with the served head: each is vLLM's own class plus one method.

`AdaptiveDecoder<Base>ForCausalLM` inherits vLLM's `<Base>ForCausalLM` unchanged (weights, attention, loading,
parallelism) and overrides `compute_logits(hidden_states)`: parent logits (float32, as HF's `generate` scores
are) -> the head's argmax bin per row on the same hidden states -> `apply_sampling_params` with the bins' values.
Token level decides on every row at every step. Sequence level reuses each request's first decision
(`requests.RequestRows.sequence_choices`); calls that are not a step's sampling call over the batch (prompt
logprobs, warm-up) are warped with the per-row decision, as token level would. Requests that carry their own
values and seed (`per_request`, the sampling backend of the evaluation and the collection) are decided and drawn
there; a directory exported without a head (`export.export_sampler`) serves only those, and gives other requests
the plain model's logits.

The head sits outside the module tree (in a plain holder object), so vLLM's weight loader, which insists that
every parameter of the model comes from the checkpoint, never sees it; it is loaded from the servable
directory by `export.load_served_head` when the engine builds the model, so a bad head fails the engine start.
"""

from __future__ import annotations

import torch
from vllm.model_executor.models.llama import LlamaForCausalLM
from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM
from vllm.model_executor.models.qwen3 import Qwen3ForCausalLM

from ...modeling.sampling import apply_sampling_params
from .export import load_served_head
from .per_request import RequestDecoder, request_spec
from .requests import active_rows


class _ServedHead:
    """The head and what warping needs, kept off the nn.Module tree (see the module docstring)."""

    def __init__(self, vllm_config):
        if vllm_config.speculative_config is not None:
            raise ValueError("adaptive-decoder heads do not support speculative decoding (the head decides one "
                             "token per row; draft rows would each get their own decision)")
        model_config = vllm_config.model_config
        self.head = load_served_head(model_config.model, model_config.hf_config)  # None: a sampler directory
        self.level = self.head.config.level if self.head is not None else None
        self.rows = active_rows()
        self.requests = RequestDecoder()
        if (self.level == "sequence" or self.head is None) and self.rows is None:
            raise RuntimeError("a sequence-level head (and a directory without a head) needs adaptive-decoder's "
                               "`vllm.logits_processors` entry point (RequestRows), which vLLM did not load: reinstall "
                               "adaptive-decoder in this environment (pip install -e . or adaptive-decoder[vllm]) and "
                               "do not disable plugins")

    @torch.no_grad()
    def warp(self, hidden_states: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        n = logits.shape[0]
        sampling = self.rows is not None and self.rows.take_sampling_rows(n)
        specs = [request_spec(self.rows.params[i]) for i in range(n)] if sampling else [None] * n
        v = None
        if self.head is not None:
            if self.head._temperature_values.device != hidden_states.device:
                self.head.to(hidden_states.device)
            choices = self.head.select(hidden_states, selection="argmax")
            if self.level == "sequence" and sampling:
                choices = self.rows.sequence_choices(choices)
            v = self.head.values(choices, shape=(n,))
        if any(s is not None for s in specs):
            steps = [len(self.rows.outputs[i]) for i in range(n)]
            return self.requests.warp_rows(hidden_states, logits, specs, steps, served=v,
                                           token_ids=lambda i: list(self.rows.prompts[i] or []) + list(self.rows.outputs[i]))
        if v is None:
            return logits
        return apply_sampling_params(None, logits, v["temperature"], v["top_p"], v["top_k"], min_p=v["min_p"])


def _adaptive(base: type) -> type:
    class Adaptive(base):
        def __init__(self, *, vllm_config, prefix: str = "", **kwargs):
            super().__init__(vllm_config=vllm_config, prefix=prefix, **kwargs)
            self._served_head = _ServedHead(vllm_config)

        def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
            logits = super().compute_logits(hidden_states)
            if logits is None:  # tensor-parallel ranks other than 0 hold no logits
                return None
            return self._served_head.warp(hidden_states, logits)

    Adaptive.__name__ = Adaptive.__qualname__ = f"AdaptiveDecoder{base.__name__}"
    Adaptive.__doc__ = f"vLLM's {base.__name__} whose logits are warped by an adaptive-decoder head."
    return Adaptive


AdaptiveDecoderLlamaForCausalLM = _adaptive(LlamaForCausalLM)
AdaptiveDecoderQwen2ForCausalLM = _adaptive(Qwen2ForCausalLM)
AdaptiveDecoderQwen3ForCausalLM = _adaptive(Qwen3ForCausalLM)
