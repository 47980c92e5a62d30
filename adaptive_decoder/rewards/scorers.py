"""Rewards computed by a model: fluency under the scorer LM (normally the frozen base model) and a reward model
(any sequence-classification model, placed where the policy runs unless told otherwise)."""

from __future__ import annotations

import functools
import logging
import math

import torch

from .metrics import _check_batch, _require


def _prompt_ids(tokenizer, prompt: str, chat: bool | None) -> list[int]:
    """Token ids of a prompt exactly as generation encodes it (`adaptive_decoder.modeling.models.encode_prompts`):
    chat template + generation prompt when the tokenizer has one (and chat is not False), else plain encoding."""
    from ..modeling.models import format_prompt, has_chat_template

    use_chat = has_chat_template(tokenizer) if chat is None else chat
    return tokenizer(format_prompt(tokenizer, prompt, chat), add_special_tokens=not use_chat)["input_ids"]


class Fluency:
    """Mean per-token log-likelihood (nats) of the completion given the prompt under a scorer LM (default: the
    frozen base model). Higher is better; high-temperature gibberish scores very low.

    Scores are clamped below at `floor` (default -20.0) so one absurd token cannot dominate a composite, and an
    empty completion gets exactly `floor`. Prompts are encoded like generation does (chat template if any);
    at most `max_length` tokens are scored (the prompt is cut from the left first).
    """

    name = "fluency"

    def __init__(self, model, tokenizer, batch_size: int = 8, floor: float = -20.0, max_length: int = 1024,
                 chat: bool | None = None):
        if model is None or tokenizer is None:
            raise ValueError("Fluency needs a scorer LM and its tokenizer (pass model=, tokenizer= to build_reward)")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.floor, self.max_length, self.chat = int(batch_size), float(floor), int(max_length), chat

    def _encode(self, completion: str, example: dict) -> tuple[list[int], int]:
        p = _prompt_ids(self.tokenizer, _require(example, "prompt", self.name), self.chat)
        c = self.tokenizer(completion, add_special_tokens=False)["input_ids"]
        c = c[: self.max_length - 1]
        p = p[-(self.max_length - len(c)) :] if len(p) + len(c) > self.max_length else p
        if not p:  # nothing to condition the first token on: use BOS/EOS as context
            p = [self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id]
        return p + c, len(c)

    @torch.no_grad()
    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        _check_batch(completions, examples, self.name)
        enc = [self._encode(c, e) for c, e in zip(completions, examples)]
        out = [self.floor] * len(enc)
        todo = [i for i, (_, n) in enumerate(enc) if n > 0]
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for s in range(0, len(todo), self.batch_size):
            idx = todo[s : s + self.batch_size]
            L = max(len(enc[i][0]) for i in idx)
            ids = torch.full((len(idx), L), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), L), dtype=torch.long)
            for r, i in enumerate(idx):  # right padding: positions stay 0..len-1 without position_ids
                ids[r, : len(enc[i][0])] = torch.tensor(enc[i][0])
                mask[r, : len(enc[i][0])] = 1
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            for r, i in enumerate(idx):
                seq, n = enc[i]
                start = len(seq) - n  # first completion position; predicted from position start-1
                lp = torch.log_softmax(logits[r, start - 1 : len(seq) - 1], dim=-1)
                tok = torch.tensor(seq[start:], device=lp.device)
                mean = lp.gather(-1, tok[:, None]).mean().item()
                out[i] = max(self.floor, mean) if math.isfinite(mean) else self.floor
        return out


logger = logging.getLogger(__name__)


def _is_cpu(where) -> bool:
    return isinstance(where, (str, torch.device)) and str(where).split(":")[0] == "cpu"


def _check_reward_model_placement(model, policy_device, asked_cpu: bool) -> None:
    """Warn (once per process) when the reward model ended on the CPU while the policy runs on CUDA, unless the
    CPU was asked for."""
    if asked_cpu or policy_device is None or torch.device(policy_device).type != "cuda":
        return
    if next(model.parameters()).device.type == "cpu":
        _warn_reward_model_on_cpu(str(policy_device))


@functools.lru_cache(maxsize=1)
def _warn_reward_model_on_cpu(policy_device: str) -> None:
    logger.warning("the reward model scores on the CPU while the policy runs on %s: set reward_model.device (e.g. "
                   "cuda, with dtype: bfloat16) in the reward spec, or device: cpu to keep it there", policy_device)


class RewardModelScorer:
    """Scores (prompt, completion) with any HF AutoModelForSequenceClassification reward model, batched.

    The conversation [user: prompt, assistant: completion] goes through the reward tokenizer's chat template
    when it has one (ArmoRM / Skywork style), else "prompt\\n\\ncompletion". The score is `outputs.score` when the
    model returns one (ArmoRM's custom head), else `logits[:, label_index]`.

    Loading from a path takes `revision` and `trust_remote_code` (model and tokenizer; ArmoRM ships its own
    modelling code, so it needs trust_remote_code: true, an opt-in since it runs that code), `dtype` (a name
    `adaptive_decoder.modeling.models.resolve_dtype` accepts, 'auto' its rule on the device the model goes to;
    None: transformers' default, float32) and `device_map` (placed while it loads). Placement: `device` moves
    the model there; `device_map` places it instead (give one of them); with neither, a model loaded from a path
    goes to `policy_device` (the policy LM's device, which `build_reward` passes), else to cuda when there is one,
    else stays on the CPU, and a given model object stays where it is. A reward model left on the CPU while the
    policy runs on CUDA, without `device: cpu` (or a CPU device_map) asking for it, is warned about once per
    process, naming `reward_model.device`: an 8B reward model scoring on the CPU is what slows a GPU collection.
    """

    name = "reward_model"
    allow_nonfinite = True  # a model may overflow in half precision: pairs.py drops such samples, counted

    def __init__(self, model_or_path, tokenizer=None, batch_size: int = 8, max_length: int = 2048, label_index: int = 0,
                 device=None, trust_remote_code: bool = False, dtype=None, device_map=None, revision: str | None = None,
                 policy_device=None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from ..modeling.models import resolve_dtype

        if device is not None and device_map is not None:
            raise ValueError(f"reward_model: device {str(device)!r} and device_map {device_map!r} both place the "
                             "reward model; give one of them")
        if isinstance(model_or_path, str):
            target = device if device is not None or device_map is not None else (
                policy_device if policy_device is not None else ("cuda" if torch.cuda.is_available() else None))
            hub = {k: v for k, v in (("revision", revision), ("trust_remote_code", trust_remote_code)) if v}
            opts = {} if device_map is None else {"device_map": device_map}
            model = AutoModelForSequenceClassification.from_pretrained(
                model_or_path, dtype=None if dtype is None else resolve_dtype(dtype, target), **hub, **opts)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_or_path, **hub)
        else:
            target, model = device, model_or_path
        if tokenizer is None:
            raise ValueError("RewardModelScorer needs the reward model's tokenizer when given a model object")
        model.eval().requires_grad_(False)
        if target is not None and device_map is None:
            model.to(target)
        _check_reward_model_placement(model, policy_device, asked_cpu=_is_cpu(device) or _is_cpu(device_map))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id  # HF seq-cls finds the last non-pad token with it
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_length, self.label_index = int(batch_size), int(max_length), int(label_index)

    def format(self, prompt: str, completion: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            conv = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            return self.tokenizer.apply_chat_template(conv, tokenize=False)
        return f"{prompt}\n\n{completion}"

    @torch.no_grad()
    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        _check_batch(completions, examples, self.name)
        texts = [self.format(_require(e, "prompt", self.name), c) for c, e in zip(completions, examples)]
        device = next(self.model.parameters()).device
        # The chat template already contains BOS etc.; don't add special tokens twice.
        add_special = not bool(getattr(self.tokenizer, "chat_template", None))
        out: list[float] = []
        for s in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[s : s + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length, add_special_tokens=add_special).to(device)
            res = self.model(**enc)
            scores = res.score if getattr(res, "score", None) is not None else res.logits[:, self.label_index]
            out.extend(float(x) for x in scores.float().reshape(len(enc["input_ids"]), -1)[:, 0].cpu())
        return out
