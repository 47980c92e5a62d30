"""The policies that decide without a fit: fixed configs, random choices and the trained heads.

    policy.generate(adm, prompts, num_samples=k, max_new_tokens=64, seed=0) -> [PolicyOutput per prompt]

Seeding (`modeling.noise.seeding`): one seed per prompt (row-seeded, batch-independent draws) or an int (seeds
torch's generator and the head's right before generate). Two policies called with the same prompts and seed
therefore see the same token randomness (common random numbers, which makes paired comparisons sharper).

Methods registered here (`build_policies(method, **options)`; one method name may expand to several policies):
    greedy                      temperature 0 (exact argmax)
    fixed                       one policy per temperature of a grid (default 0.0..1.0 step 0.2), optional
                                fixed top_p / top_k / repetition_penalty
    random                      a random (temperature, top_p, top_k) per prompt, drawn from the head's bins
    random_token                a new uniformly random choice from the same bins at every generated token (the
                                control for ADtok: mixing temperatures within a sequence without learning)
    adaptive                    ADseq / ADtok from saved heads (`head_path` or `head_paths`)
The dev-fitted methods (oracle, best_joint, meanshift) are in `adaptive_decoder.methods.fitted`, the tuned
training-free samplers in `adaptive_decoder.methods.samplers`, HAG in `adaptive_decoder.hag.policy`.
"""

from __future__ import annotations

import random

import torch

from ..modeling.generation import AdaptiveDecodingModel
from ..modeling.head import AdaptiveDecoderConfig, AdaptiveDecoderHead, same_base_model
from ..modeling.noise import seeding
from .base import DecodingPolicy, forced_generate, register_policy
# re-exported: callers build methods and read their outputs through this module
from .base import POLICIES, PolicyOutput, build_policies, split_output  # noqa: F401
from ..modeling.sampling import SAMPLER_OFF, validate_sampling_value

DEFAULT_TEMPERATURES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]

# ------------------------------------------------------------------------------------------------------------
class FixedPolicy(DecodingPolicy):
    """One fixed config for every prompt (the hand-tuned baseline)."""

    role = "fixed"

    def __init__(self, temperature: float, top_p: float = 1.0, top_k: int = 0, repetition_penalty: float | None = None,
                 name: str | None = None, **samplers):
        """`samplers`: `SAMPLER_OFF` keys (min_p=0.1, edt_theta=0.5, ...), in the config and the name."""
        unknown = sorted(set(samplers) - set(SAMPLER_OFF))
        if unknown:
            raise TypeError(f"FixedPolicy got unknown sampler(s) {unknown}; valid: {sorted(SAMPLER_OFF)}")
        self.config = {"temperature": float(temperature), "top_p": float(top_p), "top_k": int(top_k)}
        if repetition_penalty is not None:
            self.config["repetition_penalty"] = float(repetition_penalty)
        for k, v in samplers.items():  # checked here, so a bad grid fails when the method is built, not mid-run
            self.config[k] = float(validate_sampling_value(k, v, label=f"{k} of a fixed config"))
        self.temperature = float(temperature)
        if name is None:
            name = f"T={temperature:.1f}" if round(temperature, 1) == temperature else f"T={temperature:g}"
            if top_p != 1.0:
                name += f",p={top_p:g}"
            if top_k:
                name += f",k={top_k}"
            if repetition_penalty not in (None, 1.0):
                name += f",rp={repetition_penalty:g}"
            name += "".join(f",{k}={v:g}" for k, v in samplers.items())
        self.name = name

    def generate(self, adm, prompts, *, num_samples, max_new_tokens, seed, chat=None, stop_when=None):
        return forced_generate(adm, prompts, [self.config] * len(prompts), num_samples=num_samples,
                               max_new_tokens=max_new_tokens, seed=seed, chat=chat, stop_when=stop_when)

    def describe(self):
        return {**super().describe(), **self.config}

    def fixed_config(self) -> dict:
        return self.config


class GreedyPolicy(FixedPolicy):
    role = "greedy"

    def __init__(self, name: str = "greedy"):
        super().__init__(0.0, name=name)


class RandomPolicy(DecodingPolicy):
    """A uniformly random (temperature, top_p, top_k) per prompt, shared by its k samples.

    The draw depends only on (the prompt's seed, prompt text), so it does not change with batching or on resume."""

    role = "random"

    def __init__(self, temperature_bins=None, top_p_bins=None, top_k_bins=None, name: str = "random"):
        d = AdaptiveDecoderConfig()
        self.bins = {"temperature": list(temperature_bins or d.temperature_bins),
                     "top_p": list(top_p_bins or d.top_p_bins), "top_k": [int(k) for k in (top_k_bins or d.top_k_bins)]}
        AdaptiveDecoderConfig(**{f"{k}_bins": v for k, v in self.bins.items()})  # validates the bins
        self.name = name

    def config_for(self, prompt: str, seed: int) -> dict:
        rng = random.Random(f"{seed}:{prompt}")
        return {k: rng.choice(v) for k, v in self.bins.items()}

    def generate(self, adm, prompts, *, num_samples, max_new_tokens, seed, chat=None, stop_when=None):
        seeds = seed if isinstance(seed, (list, tuple)) else [seed] * len(prompts)  # per prompt, or one for all
        configs = [self.config_for(p, s) for p, s in zip(prompts, seeds)]
        return forced_generate(adm, prompts, configs, num_samples=num_samples, max_new_tokens=max_new_tokens,
                               seed=seed, chat=chat, stop_when=stop_when)

    def describe(self):
        return {**super().describe(), "bins": self.bins}


class TokenRandomPolicy(RandomPolicy):
    """A uniformly random (temperature, top_p, top_k) at every generated token, drawn from the same bins.

    It is ADtok's own decoding path (`AdaptivePolicy` with selection="sample") with a head whose logits are all
    zero (a uniform distribution), so it differs from ADtok only in that nothing was learned. The head's
    generator is seeded with `seed`, like ADtok's sampled selection."""

    role = "random_token"

    def __init__(self, temperature_bins=None, top_p_bins=None, top_k_bins=None, name: str = "random_token"):
        super().__init__(temperature_bins, top_p_bins, top_k_bins, name=name)
        if not any(len(b) > 1 for b in self.bins.values()):
            raise ValueError(f"{self.name}: every factor has a single bin {self.bins}; nothing to randomize")
        self._model, self._policy = None, None

    def _uniform_head(self, model) -> AdaptiveDecoderHead:
        from ..modeling.head import model_hidden_size

        active = [f for f, b in self.bins.items() if len(b) > 1]
        fixed = {f: b[0] for f, b in self.bins.items() if len(b) == 1}
        cfg = AdaptiveDecoderConfig(hidden_size=model_hidden_size(model), level="token", selection="sample",
                                    factors=active, fixed=fixed,
                                    **{f"{f}_bins": b for f, b in self.bins.items() if f in active})
        head = AdaptiveDecoderHead(cfg)
        with torch.no_grad():
            for p in head.parameters():
                p.zero_()  # zero logits for every factor: uniform over its bins, whatever the hidden state
        return head

    def generate(self, adm, prompts, *, num_samples, max_new_tokens, seed, chat=None, stop_when=None):
        if self._model is not adm.model:  # the head's input size is the model's hidden size
            self._model = adm.model
            self._policy = AdaptivePolicy(head=self._uniform_head(adm.model), name=self.name, selection="sample",
                                          strict_base_model=False)
        return self._policy.generate(adm, prompts, num_samples=num_samples, max_new_tokens=max_new_tokens,
                                     seed=seed, chat=chat, stop_when=stop_when)


def check_base_model(head: AdaptiveDecoderHead, model, requested: str | None = None, source: str = "head") -> None:
    """Refuse a head trained for another base model: hidden size (always) and the recorded base-model identity
    (`adaptive_decoder.modeling.head.same_base_model`)."""
    head.check_compatible(model, requested=requested)
    if same_base_model(head.config.base_model, model, requested):
        return
    have = getattr(model.config, "_name_or_path", "") or ""
    raise ValueError(f"{source} was trained for base model {head.config.base_model!r} but the evaluated model is {have!r}"
                     f"{f' (requested as {requested!r})' if requested else ''}; a head only works on the LM whose hidden "
                     "states it was trained on. If this is the same model under another name, pass strict_base_model=False.")


class AdaptivePolicy(DecodingPolicy):
    """ADseq / ADtok: the saved head chooses the decoding hyperparameters (argmax unless `selection` says)."""

    role = "adaptive"

    def __init__(self, head_path=None, head: AdaptiveDecoderHead | None = None, name: str | None = None,
                 selection: str | None = None, strict_base_model: bool = True, model_name: str | None = None):
        if (head_path is None) == (head is None):
            raise ValueError("AdaptivePolicy needs exactly one of head_path= or head=")
        self.head_path = str(head_path) if head_path is not None else None
        self.head = head if head is not None else AdaptiveDecoderHead.from_pretrained(head_path)
        self.selection, self.strict, self.model_name = selection, strict_base_model, model_name
        self.name = name or ("adseq" if self.head.config.level == "sequence" else "adtok")
        self._adm = None

    def _bound(self, adm: AdaptiveDecodingModel) -> AdaptiveDecodingModel:
        # rebound for another LM or another backend (an HF and a vLLM decoding model may share one LM)
        if self._adm is None or self._adm.model is not adm.model or getattr(self._adm, "engine", None) is not getattr(
                adm, "engine", None):
            src = f"head {self.head_path}" if self.head_path else "head"
            try:
                if self.strict:
                    check_base_model(self.head, adm.model, self.model_name, src)
                else:
                    self.head.check_compatible(adm.model)
            except ValueError as e:
                raise ValueError(f"{src} cannot be used: {e}") from None
            self._adm = adm.with_head(self.head)  # same LM and backend; adm itself is left untouched
        return self._adm

    def check_model(self, adm):
        self._bound(adm)

    def heads(self) -> dict:
        return {self.name: self.head_path} if self.head_path else {}

    def generate(self, adm, prompts, *, num_samples, max_new_tokens, seed, chat=None, stop_when=None):
        local = self._bound(adm)
        out = local.generate_text(list(prompts), chat=chat, max_new_tokens=max_new_tokens,
                                  num_return_sequences=num_samples, selection=self.selection, stop_when=stop_when,
                                  **seeding(seed, num_samples))
        return split_output(out, len(prompts), num_samples)

    def describe(self):
        return {**super().describe(), "head_path": self.head_path, "level": self.head.config.level,
                "selection": self.selection or self.head.config.selection, "factors": list(self.head.factors),
                "bins": {f: list(self.head.config.bins(f)) for f in self.head.factors}}


# ------------------------------------------------------------------------------------------------------------
@register_policy("greedy", policy=GreedyPolicy)
def _greedy(**kw) -> list:
    return [GreedyPolicy(**kw)]


@register_policy("fixed", policy=FixedPolicy, run_options=("temperatures", "top_p", "top_k"))
def fixed_grid(temperatures=None, top_p: float = 1.0, top_k: int = 0, repetition_penalty: float | None = None) -> list:
    """One FixedPolicy per temperature: method 'fixed', the oracle's candidates and the mix samplers' anchors."""
    temps = DEFAULT_TEMPERATURES if temperatures is None else list(temperatures)
    if not temps:
        raise ValueError("the fixed grid needs at least one temperature")
    return [FixedPolicy(t, top_p, top_k, repetition_penalty) for t in temps]


@register_policy("random", policy=RandomPolicy, uses_head_bins=True, is_control=True)
def _random(**kw) -> list:
    return [RandomPolicy(**kw)]


@register_policy("random_token", policy=TokenRandomPolicy, uses_head_bins=True, is_control=True)
def _random_token(**kw) -> list:
    return [TokenRandomPolicy(**kw)]


@register_policy("adaptive", policy=AdaptivePolicy, takes_heads=True)
def _adaptive(head_path=None, head_paths=None, **kw) -> list:
    paths = ([head_path] if head_path else []) + list(head_paths or [])
    if not paths:
        raise ValueError("method 'adaptive' needs head_path= (or head_paths=[...]): a directory saved by "
                         "AdaptiveDecoderHead.save_pretrained")
    return [AdaptivePolicy(p, **kw) for p in paths]
