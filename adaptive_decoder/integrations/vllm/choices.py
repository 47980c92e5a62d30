"""The choices a served head applied to a finished vLLM request, recovered with one teacher-forced HF pass.

Stock vLLM returns tokens and logprobs, but no per-request data computed inside the model, so the head's bins
do not come back with the outputs. They need not: the served head takes the argmax bin of its own output on
the final hidden state before each sampled token (token level), or on the last prompt token (sequence level),
and those hidden states are a function of the prompt and the returned tokens alone. `served_choices` recomputes
them with `compute_head_inputs` (the pass the collection cache already uses) and applies the same argmax, so it
returns what the server applied, up to the float differences between vLLM's kernels and HF's (which can only
matter where two bins' logits tie to within them). Runs in the HF environment; needs no vLLM.
"""

from __future__ import annotations

import torch

from ...modeling.generation import compute_head_inputs
from ...modeling.head import AdaptiveDecoderHead


@torch.no_grad()
def served_choices(model, head: AdaptiveDecoderHead, prompt_ids: list[int], completion_ids: list[int]) -> dict:
    """{"choices": factor -> bin indices, "values": factor -> values} for one request, [T] per factor at
    token level (one per returned token), scalar tensors at sequence level. `model`: the HF base model."""
    if not prompt_ids or not completion_ids:
        raise ValueError("served_choices needs a non-empty prompt and at least one returned token")
    device = next(model.parameters()).device
    seq = torch.tensor([list(prompt_ids) + list(completion_ids)], device=device)
    level = head.config.level
    h = compute_head_inputs(model, seq, torch.ones_like(seq), len(prompt_ids), level)[0]  # [H] or [T, H]
    choices = head.select(h.to(next(head.parameters()).device), selection="argmax")
    shape = h.shape[:-1]
    return {"choices": choices, "values": head.values(choices, shape=shape)}
