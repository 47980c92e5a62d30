"""vLLM model classes that warp their logits with the served head: each is vLLM's own class plus one method.

`AdaptiveDecoder<Base>ForCausalLM` inherits vLLM's `<Base>ForCausalLM` unchanged (weights, attention, loading,
parallelism) and overrides `compute_logits(hidden_states)`: parent logits (float32, as HF's `generate` scores
are) -> the head's argmax bin per row on the same hidden states -> `modeling.warp.warp` with the bins' values (the
distribution `apply_sampling_params` gives, without sorting the vocabulary).
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
from vllm.model_executor.models.gemma3 import Gemma3ForCausalLM
from vllm.model_executor.models.llama import LlamaForCausalLM
from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM
from vllm.model_executor.models.qwen3 import Qwen3ForCausalLM

from ...modeling.warp import warp
from .export import load_served_head
from .attach import head_bins, require_rows
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
        self.rows = active_rows(model_config.model)
        self.requests = RequestDecoder()
        require_rows(vllm_config, self.rows, needed=self.level == "sequence" or self.head is None)
        if self.rows is not None and self.head is not None:
            self.rows.bins = head_bins(self.head.config.to_dict())

    @torch.no_grad()
    def warp(self, hidden_states: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        n = logits.shape[0]
        sampling = self.rows is not None and self.rows.take_sampling_rows(n)
        specs = [request_spec(self.rows.params[i]) for i in range(n)] if sampling else [None] * n
        off = [i for i, c in self.rows.controls.items() if c["off"] and i < n] if sampling else []
        v = None
        if self.head is not None and len(off) < n:  # a step whose every request asked for the plain model skips the head
            if self.head._temperature_values.device != hidden_states.device:
                self.head.to(hidden_states.device)
            controls = self._controls(n) if sampling else {}
            forced = controls.get("bins", {})
            if forced and all((f, i) in forced for f in self.head.factors for i in range(n)):
                # every row forces every factor: the head has nothing to decide this step, so it is not called
                choices = {f: torch.tensor([forced[(f, i)] for i in range(n)], device=hidden_states.device)
                           for f in self.head.factors}
            else:
                choices = self.head.select(hidden_states, selection="argmax")
                if self.level == "sequence" and sampling:
                    choices = self.rows.sequence_choices(choices)
                for (f, i), b in forced.items():
                    choices[f][i] = b
            v = self.head.values(choices, shape=(n,))
            for i, cap in controls.get("max_temperature", {}).items():
                v["temperature"][i] = v["temperature"][i].clamp(max=cap)
        if any(s is not None for s in specs):
            steps = [len(self.rows.outputs[i]) for i in range(n)]
            return self.requests.warp_rows(hidden_states, logits, specs, steps, served=v,
                                           token_ids=lambda i: list(self.rows.prompts[i] or []) + list(self.rows.outputs[i]))
        if v is None:
            return logits
        out = warp(logits, v["temperature"], v["top_p"], v["top_k"], min_p=v["min_p"])
        if off:  # these requests asked for the plain model: vLLM applies their own sampling values
            out[off] = logits[off]
        return out

    def _controls(self, n: int) -> dict:
        """This step's request controls by row: forced bins {(factor, row): bin}, temperature caps {row: cap}."""
        bins, caps = {}, {}
        for i, c in self.rows.controls.items():
            if i >= n:
                continue
            for f, b in c["bins"].items():
                bins[(f, i)] = b
            if c["max_temperature"] is not None:
                caps[i] = c["max_temperature"]
        return {"bins": bins, "max_temperature": caps}


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
AdaptiveDecoderGemma3ForCausalLM = _adaptive(Gemma3ForCausalLM)
