"""Adaptive decoding inside the ordinary transformers `generate` loop.

How it works, per decoding step of `model.generate(do_sample=True)` with neutral stock warpers:
  1. the LM forward runs; a forward pre-hook on the output embedding (lm_head) keeps the final hidden state of
     the last position only (generate already restricts lm_head to that position via `logits_to_keep=1`);
  2. our logits processor runs the head on that hidden state (token level: every step; sequence level: once,
     at the prefill step, i.e. on the last prompt token) and applies per-row temperature / top-k / top-p;
  3. generate samples from the processed scores as usual.
No `output_hidden_states=True`: that would keep every layer's activations for every step.
The head's own sampling (selection="sample") uses a separate torch.Generator, so choosing latents never
consumes the token-sampling RNG: two methods run with the same seed see the same token randomness.
`row_seeds=` (one seed per row, `adaptive_decoder.modeling.noise`) replaces both generators by counter-based
draws: row r's token and the head's sampled bins at step t are functions of (row_seeds[r], t) and the row's own
scores only, whatever else is in the batch; without it generate samples exactly as HF does.

`stop_when=` (a function of a row's decoded completion) ends each row the first time it returns True, through a
stock `StoppingCriteria`: a task that scores only its completion's first line need not decode the rest. Stopping a
row changes nothing in the others: generate still samples every row at every step (the stopped one is padded),
so the token RNG advances as it would have.

`out.values` has one layout whoever decided (token head, sequence head or `force=`): {name: [batch, steps]} for
every `VALUE_KEYS` name (plus any other sampler passed in `force=`), the value applied at each step, NaN (-1 for
the integer top_k) at steps that produced no token. `out.level` says how often they could change: "token" (per
step) or "sequence" (once per row: a sequence-level head, or `force=`). `out.choices` (the head's bin indices)
keep the head's own shape: [batch] at sequence level, [batch, steps] at token level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from .head import FACTORS, AdaptiveDecoderHead
from .models import contiguous_lm_head_input, encode_prompts, model_max_length
from .noise import RowSeededDraw, select_rows
from .sampling import NEUTRAL, SAMPLER_OFF, SamplingParamsProcessor, validate_sampling_value
from ..validation import positive_int

# kwargs that would switch on a stock warper or a search we do not support; sampling values go through force=
_REFUSED = {"temperature", "top_p", "top_k", "do_sample", "repetition_penalty", "min_p", "typical_p",
            "epsilon_cutoff", "eta_cutoff", "top_h"}
# generate() returns sequences, choices and values only: these would be computed and then dropped without a word
# (and HF's scores would be OUR processed scores, not the model's), so they are refused rather than ignored
_UNSUPPORTED_OUTPUTS = ("output_scores", "output_logits", "output_attentions", "output_hidden_states")
# the names every out.values holds; a head applies no repetition penalty, and a force= without min_p has it off
VALUE_KEYS = FACTORS + ("repetition_penalty",)


@dataclass
class AdaptiveGenerateOutput:
    sequences: torch.LongTensor
    prompt_length: int
    step_mask: torch.BoolTensor
    completion_ids: list
    level: str = "sequence"          # "token": values may change at every step; "sequence": one per row
    choices: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    head_inputs: torch.Tensor | None = None
    texts: list | None = None


class _StepRecorder:
    """State shared by the lm_head hook and the logits processor for one `generate` call."""

    def __init__(self, adm, force, selection, epsilon, generator, keep_inputs, row_seeds=None):
        self.adm, self.force, self.selection, self.epsilon = adm, force, selection, epsilon
        self.generator, self.keep_inputs, self.row_seeds = generator, keep_inputs, row_seeds
        self.hidden = None
        self.steps = 0
        self.choices, self.values, self.inputs = [], [], []
        self.seq_values = None

    def hook(self, module, args):
        # args[0]: [B, L, H] final-norm hidden states; L == 1 except possibly at prefill
        self.hidden = args[0][:, -1, :].detach()

    def decide(self, input_ids):
        n = input_ids.shape[0]
        if self.force is not None:
            self.steps += 1
            return self.force
        head = self.adm.head
        level = head.config.level
        if level == "sequence" and self.seq_values is not None:
            self.steps += 1
            return self.seq_values
        if self.hidden is None or self.hidden.shape[0] != n:
            raise RuntimeError("hidden state hook did not fire for this step; is the model's lm_head bypassed?")
        h = self.hidden
        if self.row_seeds is not None and (self.selection or head.config.selection) == "sample":
            # the vLLM backend's draw: step 0 for a sequence-level decision, the token's step otherwise
            steps = [0 if level == "sequence" else self.steps] * n
            choice = {f: c.to(h.device) for f, c in
                      select_rows(head, h, "sample", self.epsilon, self.row_seeds, steps).items()}
        else:
            choice = head.select(h, selection=self.selection, generator=self.generator, epsilon=self.epsilon)
        vals = head.values(choice, shape=(n,))
        self.choices.append(choice)
        if self.keep_inputs:
            self.inputs.append(h.float().cpu())
        if level == "sequence":
            self.seq_values = vals
        self.steps += 1
        return vals


class _StopWhen(StoppingCriteria):
    """Stops row i once `predicate(its decoded completion)` is True and keeps its completion length then. generate
    pads a stopped row from the next step on; where the pad token is also an EOS (SmolLM2), the first pad would
    otherwise read as a real EOS step in `_step_mask`. A row that has ended at an EOS is never decoded again either:
    its text can no longer change, and decoding every finished row at every step costs a batch_decode per row."""

    def __init__(self, tokenizer, prompt_length: int, predicate: Callable[[str], bool], eos_ids=()):
        self.tokenizer, self.prompt_length, self.predicate = tokenizer, prompt_length, predicate
        self.eos_ids = torch.tensor(sorted(set(eos_ids)), dtype=torch.long)
        self.lengths: list | None = None   # per row: the completion length at its stop, None while it runs
        self.ended: set = set()            # rows generate has finished at an EOS

    def __call__(self, input_ids, scores, **kwargs):
        if self.lengths is None:
            self.lengths = [None] * input_ids.shape[0]
        at_eos = torch.isin(input_ids[:, -1], self.eos_ids.to(input_ids.device))  # generate calls after each new token
        self.ended.update(i for i in at_eos.nonzero().flatten().tolist() if self.lengths[i] is None)
        live = [i for i, n in enumerate(self.lengths) if n is None and i not in self.ended]
        t = input_ids.shape[1] - self.prompt_length
        texts = self.tokenizer.batch_decode(input_ids[live, self.prompt_length:], skip_special_tokens=True)
        for i, text in zip(live, texts):
            if self.predicate(text):
                self.lengths[i] = t
        return torch.tensor([n is not None for n in self.lengths], dtype=torch.bool, device=input_ids.device)


class AdaptiveDecodingModel:
    """A frozen HF causal LM plus an `AdaptiveDecoderHead`, generating with per-row decoding hyperparameters."""

    backend = "hf"  # where `generate` samples (`integrations.vllm.backend.VLLMDecodingModel`: "vllm")

    def __init__(self, model, tokenizer=None, head: AdaptiveDecoderHead | None = None):
        self.model = contiguous_lm_head_input(model.eval())  # CPU bf16: see contiguous_lm_head_input
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.head = None
        if head is not None:
            self.set_head(head)

    def set_head(self, head: AdaptiveDecoderHead):
        head.check_compatible(self.model)
        self.head = head.to(self.model.device).eval()
        return self

    def with_head(self, head: AdaptiveDecoderHead | None) -> "AdaptiveDecodingModel":
        """A new decoding model on the same LM (and backend) with `head`; this one is left untouched."""
        return AdaptiveDecodingModel(self.model, self.tokenizer, head)

    @classmethod
    def from_pretrained(cls, head_path, model, tokenizer=None, **kwargs):
        """Load a saved head onto `model`; fails with both hidden sizes named if they differ."""
        return cls(model, tokenizer, AdaptiveDecoderHead.from_pretrained(head_path, **kwargs))

    # ------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input_ids=None, attention_mask=None, *, force: dict | None = None, selection: str | None = None,
                 epsilon: float = 0.0, head_seed: int | None = None, return_head_inputs: bool = False,
                 logits_processor=None, stop_when: Callable[[str], bool] | None = None, row_seeds=None,
                 **kwargs) -> AdaptiveGenerateOutput:
        bad = sorted(_REFUSED & set(kwargs))
        if bad:
            raise ValueError(f"pass sampling values through force= (or let the head choose), not {bad}")
        if kwargs.get("num_beams", 1) != 1:
            raise ValueError("num_beams > 1 is not supported: adaptive decoding samples one token per row per step")
        asked = [k for k in _UNSUPPORTED_OUTPUTS if kwargs.get(k)]
        if asked:
            raise ValueError(f"{asked} not supported: AdaptiveDecodingModel.generate returns sequences, per-step "
                             "choices and values only (read logits with a forward pass over out.sequences)")
        # HF would round a float length (2.5 -> 3 tokens) and fail on 0 with a shape message: check them here
        num_return = positive_int("num_return_sequences", kwargs.get("num_return_sequences", 1))
        for k in ("max_new_tokens", "max_length"):
            if kwargs.get(k) is not None:
                kwargs[k] = positive_int(k, kwargs[k])
        attention_mask, force = self._check_inputs(input_ids, attention_mask, force, num_return, input_ids.device)
        generator, draw = None, []
        if row_seeds is not None:
            row_seeds = _check_row_seeds(row_seeds, input_ids.shape[0] * num_return, head_seed)
            draw = [RowSeededDraw(row_seeds)]  # after every other processor: it draws from the final scores
        elif force is None and (selection or self.head.config.selection) == "sample":
            generator = torch.Generator(device=self.model.device)
            generator.manual_seed(int(head_seed) if head_seed is not None else int(torch.randint(0, 2**62, (1,))))
        rec = _StepRecorder(self, force, selection, epsilon, generator, return_head_inputs, row_seeds)
        pad_len = (attention_mask != 0).int().argmax(dim=1).repeat_interleave(num_return)
        procs = LogitsProcessorList(list(logits_processor or []) + [SamplingParamsProcessor(rec.decide, pad_len)] + draw)
        stop = None
        if stop_when is not None:
            if self.tokenizer is None:
                raise ValueError("stop_when= reads the decoded completion: it needs AdaptiveDecodingModel(model, tokenizer)")
            stop = _StopWhen(self.tokenizer, input_ids.shape[1], stop_when, self._eos_ids(kwargs))
            kwargs["stopping_criteria"] = StoppingCriteriaList(list(kwargs.get("stopping_criteria") or []) + [stop])
        handle = self.model.get_output_embeddings().register_forward_pre_hook(rec.hook)
        try:
            seqs = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True,
                                       temperature=1.0, top_p=1.0, top_k=0, logits_processor=procs, **kwargs)
        finally:
            handle.remove()
        if not torch.is_tensor(seqs):  # return_dict_in_generate=True
            seqs = seqs.sequences
        return self._assemble(seqs, input_ids.shape[1], rec, force, kwargs, stop)

    def _assemble(self, seqs, prompt_len, rec, force, kwargs, stop=None) -> AdaptiveGenerateOutput:
        gen = seqs[:, prompt_len:]
        n, t = gen.shape
        mask = _step_mask(gen, self._eos_ids(kwargs), self._pad_id(kwargs))
        if stop is not None and stop.lengths is not None:
            ends = torch.tensor([t if m is None else m for m in stop.lengths], device=mask.device)
            mask &= torch.arange(t, device=mask.device)[None, :] < ends[:, None]
        completion = [gen[i, : int(mask[i].sum())].tolist() for i in range(n)]
        out = AdaptiveGenerateOutput(sequences=seqs, prompt_length=prompt_len, step_mask=mask, completion_ids=completion)
        if force is not None:
            vals = force
        elif self.head.config.level == "sequence":
            out.choices = rec.choices[0] if rec.choices else {}
            vals = self.head.values(out.choices, shape=(n,))
            if rec.keep_inputs:
                out.head_inputs = rec.inputs[0]
        else:
            out.level = "token"
            steps = rec.choices[:t]  # generate may undo deferred final steps
            out.choices = {f: torch.stack([c[f] for c in steps], 1).masked_fill(~mask, -1) for f in self.head.factors}
            vals = self.head.values(out.choices, shape=(n, t))
            if rec.keep_inputs:
                out.head_inputs = torch.stack(rec.inputs[:t], 1) * mask[..., None].to(torch.float32)
        out.values = _per_step_values(vals, mask)
        if self.tokenizer is not None:
            out.texts = self.tokenizer.batch_decode(completion, skip_special_tokens=True)
        return out

    def _check_inputs(self, input_ids, attention_mask, force, num_return: int, device):
        """The inputs every backend's `generate` needs: a non-empty batch, its mask (all ones when none is given),
        a head or forced values, and `force` as one [rows] tensor per factor."""
        if input_ids is None or input_ids.numel() == 0:
            raise ValueError("generate() needs a non-empty input_ids tensor")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if force is None and self.head is None:
            raise ValueError("no head attached: pass force={...} or attach a head with set_head()")
        if force is not None:
            force = _normalise_force(force, input_ids.shape[0] * num_return, device)
        return attention_mask, force

    def generate_text(self, prompts: list, *, chat: bool | None = None, max_new_tokens: int = 128,
                      truncate: bool = True, **kwargs) -> AdaptiveGenerateOutput:
        """Encode `prompts` (chat template when the tokenizer has one), generate, decode.

        Prompts longer than the model context minus `max_new_tokens` are truncated from the left with a warning
        (the end of a prompt carries the question); `truncate=False` raises instead.
        """
        if self.tokenizer is None:
            raise ValueError("generate_text needs a tokenizer: AdaptiveDecodingModel(model, tokenizer, head)")
        max_new_tokens = positive_int("max_new_tokens", max_new_tokens)  # before it sizes the prompt budget
        limit = model_max_length(self.model, self.tokenizer)
        if limit is not None and max_new_tokens >= limit:
            raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for the prompt in a {limit}-token context")
        enc = encode_prompts(self.tokenizer, prompts, chat=chat,
                             max_length=None if limit is None else limit - max_new_tokens, truncate=truncate)
        enc = enc.to(self.model.device)
        return self.generate(enc["input_ids"], enc["attention_mask"], max_new_tokens=max_new_tokens, **kwargs)

    # ------------------------------------------------------------------------------------------------------
    def _eos_ids(self, kwargs) -> list:
        eos = kwargs.get("eos_token_id", self.model.generation_config.eos_token_id)
        if eos is None and self.tokenizer is not None:
            eos = self.tokenizer.eos_token_id
        if eos is None:
            return []
        return list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]

    def _pad_id(self, kwargs):
        pad = kwargs.get("pad_token_id", self.model.generation_config.pad_token_id)
        if pad is None and self.tokenizer is not None:
            pad = self.tokenizer.pad_token_id
        return pad


def _per_step_values(vals: dict, mask: torch.BoolTensor) -> dict:
    """{name: [n, t]}: a per-row value repeated over the steps, the `VALUE_KEYS` a decider left out at their
    neutral value, NaN / -1 where `mask` is False (no token was produced there)."""
    n, t = mask.shape
    out = {}
    for k in dict.fromkeys(VALUE_KEYS + tuple(vals)):
        v = vals[k] if k in vals else torch.full((n,), NEUTRAL[k], dtype=torch.float32, device=mask.device)
        v = v.to(mask.device)
        if v.dim() == 1:
            v = v[:, None].expand(n, t)
        out[k] = v.masked_fill(~mask, -1 if v.dtype == torch.long else float("nan"))
    return out


def _check_row_seeds(row_seeds, n: int, head_seed) -> list[int]:
    """`row_seeds` as n ints (one per row after num_return_sequences); head_seed belongs to the other mode."""
    if head_seed is not None:
        raise ValueError("pass row_seeds= or head_seed=, not both: with row seeds the head draws from them")
    seeds = [int(s) for s in (row_seeds.tolist() if torch.is_tensor(row_seeds) else row_seeds)]
    if len(seeds) != n:
        raise ValueError(f"row_seeds needs one seed per row: {n} (prompts x num_return_sequences), got {len(seeds)}")
    return seeds


def _normalise_force(force: dict, n: int, device) -> dict:
    """Forced values as [n] tensors (defaults filled in), each checked by `validate_sampling_value`."""
    allowed = set(FACTORS) | {"repetition_penalty"} | set(SAMPLER_OFF)
    unknown = sorted(set(force) - allowed)
    if unknown:
        raise ValueError(f"unknown keys in force: {unknown}; valid: {sorted(allowed)}")
    defaults = {k: NEUTRAL[k] for k in ("temperature", "top_p", "top_k", "repetition_penalty")}
    dtypes = {"temperature": torch.float32, "top_p": torch.float64, "top_k": torch.long, "repetition_penalty": torch.float32}
    # a sampler is carried only when asked for, so a plain config runs no sampler filter at all; float64
    # because each filter rounds it to the scores' dtype itself (as HF rounds its Python float)
    for k in SAMPLER_OFF:
        if k in force:
            defaults[k], dtypes[k] = NEUTRAL[k], torch.float64
    out = {}
    for k, default in defaults.items():
        # validated before the cast to its dtype: the cast would turn top_k=2.7 into 2 and hide a NaN's origin
        v = validate_sampling_value(k, force.get(k, default), label=f"force[{k!r}]")
        v = torch.as_tensor(v, dtype=dtypes[k], device=device)
        if v.dim() == 0:
            v = v.expand(n).clone()
        if v.shape != (n,):
            raise ValueError(f"force[{k!r}] needs a scalar or {n} values (rows after num_return_sequences), got {tuple(v.shape)}")
        out[k] = v
    return out


def _step_mask(gen: torch.LongTensor, eos_ids: list, pad_id) -> torch.BoolTensor:
    """True for steps that produced a real token: up to and including the first EOS.

    Rows stopped by other criteria (stop strings) are padded by generate; a trailing run of pad tokens is
    treated as finished too when pad is not also an EOS token.
    """
    n, t = gen.shape
    if t == 0:
        return torch.zeros(n, 0, dtype=torch.bool, device=gen.device)
    is_eos = torch.zeros_like(gen, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= gen == e
    # steps after the first EOS are not real
    before = torch.cumsum(is_eos.long(), 1) - is_eos.long()
    mask = before == 0
    if pad_id is not None and pad_id not in eos_ids:
        is_pad = gen == pad_id
        trailing = torch.flip(torch.cumprod(torch.flip(is_pad, [1]).long(), 1), [1]).bool()
        mask &= ~trailing
    return mask


def compute_head_inputs(model, sequences: torch.LongTensor, attention_mask: torch.LongTensor, prompt_length: int,
                        level: str, step_mask: torch.BoolTensor | None = None) -> torch.Tensor:
    """Recompute what the head saw during generation with ONE teacher-forced forward pass.

    Step t's decision used the final hidden state at position prompt_length - 1 + t (the token before the one
    sampled at step t). Sequence level needs only position prompt_length - 1. `attention_mask` covers the whole
    `sequences` (prompt padding zeros included). Returns float32 [N, H] or [N, T, H] (zeros where step_mask is False).
    """
    captured = {}

    def hook(module, args):
        captured["h"] = args[0]

    # generate derives positions from the attention mask (left padding); a plain forward would not
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    handle = model.get_output_embeddings().register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            if level == "sequence":
                model(input_ids=sequences[:, :prompt_length], attention_mask=attention_mask[:, :prompt_length],
                      position_ids=positions[:, :prompt_length], logits_to_keep=1)
                return captured["h"][:, -1].float()
            model(input_ids=sequences[:, :-1], attention_mask=attention_mask[:, :-1],
                  position_ids=positions[:, :-1], logits_to_keep=sequences.shape[1] - prompt_length)
    finally:
        handle.remove()
    h = captured["h"].float()  # [N, T, H]: positions prompt_length-1 .. L-2
    if step_mask is not None:
        h = h * step_mask[..., None].to(h.dtype)
    return h
