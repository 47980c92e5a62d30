"""The frozen LM's log-probabilities of a sample's own tokens under every temperature bin (for the joint and
latent LPO losses, `adaptive_decoder.lpo.losses`).

For a sample with tokens y_1..y_T and the LM's logits z_t at the step that produced y_t:

    table[t, k] = log softmax(z_t / tau_k)[y_t]                       tau_k > 0
    table[t, k] = 0 if z_t[y_t] == max z_t else log(GREEDY_FLOOR)     tau_k = 0 (greedy: a point mass on the argmax)

Only the temperature enters: P(y | tau) is the LM's softmax at tau, as in the paper (whose head picks the
temperature alone); top-p / top-k / min-p truncation and the repetition penalty a sample was decoded with are not
applied. The floor keeps log P finite for a token greedy decoding would not have produced (a tie for the max
counts as the argmax). The logits come from one teacher-forced forward pass over the finished sequences, so they
equal those seen while sampling up to the last bits of a batched / cached forward.
"""

from __future__ import annotations

import math

import torch

GREEDY_FLOOR = 1e-6
LOG_GREEDY_FLOOR = math.log(GREEDY_FLOOR)


def temperature_log_probs(logits: torch.Tensor, tokens: torch.Tensor, temperatures) -> torch.Tensor:
    """logits [..., V], tokens [...] -> float32 [..., K]: log P(token | tau_k) for each temperature (rule above)."""
    z = logits.float()
    tok = tokens.long().unsqueeze(-1)
    cols = []
    for tau in temperatures:
        if tau == 0:
            is_max = z.gather(-1, tok).squeeze(-1) >= z.amax(-1)
            cols.append(torch.where(is_max, 0.0, LOG_GREEDY_FLOOR))
        else:
            cols.append((z / float(tau)).log_softmax(-1).gather(-1, tok).squeeze(-1))
    return torch.stack(cols, -1)


def sample_token_log_probs(model, sequences: torch.LongTensor, attention_mask: torch.LongTensor, prompt_length: int,
                           temperatures, step_mask: torch.BoolTensor | None = None) -> torch.Tensor:
    """float32 [N, T, K] table of every generated token (T = sequences' length - prompt_length), one teacher-forced
    pass. Step t's token was sampled from the logits at position prompt_length - 1 + t (positions follow the
    attention mask, as in `generation.compute_head_inputs`); steps where `step_mask` is False are 0."""
    t = sequences.shape[1] - prompt_length
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=sequences[:, :-1], attention_mask=attention_mask[:, :-1],
                       position_ids=positions[:, :-1], logits_to_keep=t).logits
    table = temperature_log_probs(logits[:, -t:], sequences[:, prompt_length:], temperatures)
    if step_mask is not None:
        table = table * step_mask[..., None].to(table.dtype)
    return table


def table_temperatures(head_config) -> list:
    """The temperatures a head's table has columns for: its bins, or its one fixed temperature when inactive."""
    if "temperature" in head_config.factors:
        return list(head_config.temperature_bins)
    return [float(head_config.fixed["temperature"])]


def response_log_prob(table: torch.Tensor, temperature_choice) -> torch.Tensor:
    """Sum over steps of log P(y_t | tau chosen at t): table [T, K]; choice an index (sequence level), an index
    per step [T] (token level), or None (temperature not a factor: the table's one column)."""
    if temperature_choice is None:
        return table[:, 0].sum()
    idx = torch.as_tensor(temperature_choice, dtype=torch.long)
    if idx.dim() == 0:
        return table[:, int(idx)].sum()
    return table.gather(1, idx.clamp(min=0)[:, None]).squeeze(1).sum()
