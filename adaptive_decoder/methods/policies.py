"""Decoding policies: every method the evaluation compares, behind one interface (`adaptive_decoder.methods.base`).

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
    oracle                      best fixed setting per task, chosen on a held-out dev split (`OraclePolicy.fit`)
    min_p, typical_p, epsilon,  a training-free sampler tuned like the oracle (`TunedSamplerPolicy`): its parameter
    eta, top_h, top_nsigma, edt is chosen per task on the dev split from a grid of as many values as the fixed-
                                temperature grid has (equal tuning budget; `SAMPLER_GRIDS`), at temperature 1.0
    min_p_mix, ..., edt_mix     the same sampler with ONE value for the whole mix, chosen on the normalized dev
                                reward of all tasks (`MixSamplerPolicy`): what a user without per-task tuning sets
    best_joint                  the best (temperature, top_p, top_k) of the head's joint bins per task, chosen on
                                dev like the oracle (the strongest fixed baseline; its budget is the full product)
    meanshift                   a trained head's mean chosen temperature on the dev prompts of all tasks, rounded to
                                its nearest bin, as one fixed temperature for every prompt (`MeanShiftPolicy`)
`adaptive_decoder.hag.policy` registers "hag" and "hag_untrained" (HAGPolicy).
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

# method name -> (force key, its tuning grid, least to most aggressive where that is defined). Six values each,
# as many as DEFAULT_TEMPERATURES: a sampler gets the oracle's tuning budget. A smaller temperature grid takes
# evenly spaced values of these (`sampler_grid`); `values:` in method_options replaces one (same length).
SAMPLER_GRIDS = {
    "min_p": ("min_p", [0.02, 0.05, 0.1, 0.2, 0.3, 0.5]),                    # paper: 0.05-0.1 at T >= 1
    "typical_p": ("typical_p", [0.2, 0.5, 0.8, 0.9, 0.95, 0.99]),            # paper: 0.2 and 0.95
    "epsilon": ("epsilon_cutoff", [1e-4, 3e-4, 6e-4, 1e-3, 3e-3, 1e-2]),     # paper: 3e-4 to 9e-4
    "eta": ("eta_cutoff", [1e-4, 3e-4, 6e-4, 1e-3, 2e-3, 4e-3]),             # paper: 3e-4 to 4e-3
    "top_h": ("top_h", [0.2, 0.3, 0.4, 0.5, 0.7, 0.9]),                      # paper: 0.3-0.4
    "top_nsigma": ("top_nsigma", [0.5, 1.0, 1.5, 2.0, 3.0, 4.0]),            # paper: 1.0
    "edt": ("edt_theta", [0.1, 0.25, 0.5, 1.0, 2.0, 4.0]),                   # T = T0 * 0.8^(theta / H)
}

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


class OraclePolicy(DecodingPolicy):
    """The best fixed setting for a task, chosen on a held-out dev split (the bar AutoDeco compares to).

    `fit({candidate name: dev mean reward})` picks the best (ties -> the earlier candidate); then `generate`
    decodes exactly like that fixed policy. Use one OraclePolicy per task."""

    role = "oracle"

    def __init__(self, candidates: list, name: str = "oracle"):
        if not candidates:
            raise ValueError("OraclePolicy needs at least one fixed candidate")
        self.candidates = list(candidates)
        self.name = name
        self.chosen: FixedPolicy | None = None
        self.dev_scores: dict = {}

    def fit(self, dev_scores: dict) -> FixedPolicy:
        missing = [c.name for c in self.candidates if c.name not in dev_scores]
        if missing:
            raise ValueError(f"oracle: no dev score for candidates {missing}")
        self.dev_scores = {c.name: float(dev_scores[c.name]) for c in self.candidates}
        self.chosen = max(self.candidates, key=lambda c: (self.dev_scores[c.name], -self.candidates.index(c)))
        return self.chosen

    def generate(self, adm, prompts, *, num_samples, max_new_tokens, seed, chat=None, stop_when=None):
        if self.chosen is None:
            raise RuntimeError("OraclePolicy.fit(dev_scores) must run before generate")
        outs = self.chosen.generate(adm, prompts, num_samples=num_samples, max_new_tokens=max_new_tokens, seed=seed,
                                    chat=chat, stop_when=stop_when)
        for o in outs:
            o.extra["oracle_choice"] = self.chosen.name
        return outs

    def describe(self):
        return {**super().describe(), "candidates": [c.name for c in self.candidates],
                "chosen": self.chosen.describe() if self.chosen else None, "dev_scores": self.dev_scores}

    def fit_summary(self) -> dict:
        """What the reports say about the last fit."""
        return {"chosen": self.chosen.name, "dev_scores": self.dev_scores}


def sampler_grid(method: str, budget: int, values=None) -> list:
    """The `budget` values a tuned sampler chooses from: `values` (which must have exactly `budget` entries, so
    no sampler is tuned on more settings than the oracle), else evenly spaced entries of its SAMPLER_GRIDS row."""
    key, grid = SAMPLER_GRIDS[method]
    if values is not None:
        values = list(values)
        if len(values) != budget:
            raise ValueError(f"method {method!r}: values= has {len(values)} entries but the fixed-temperature grid has "
                             f"{budget}; an equal tuning budget needs the same number")
        return values
    if budget > len(grid):
        raise ValueError(f"method {method!r}: its grid has {len(grid)} values but the fixed-temperature grid has "
                         f"{budget}; give values= with {budget} {key} values in method_options")
    if budget == 1:
        return [grid[len(grid) // 2]]
    return [grid[round(i * (len(grid) - 1) / (budget - 1))] for i in range(budget)]


class TunedSamplerPolicy(OraclePolicy):
    """A training-free sampler with its parameter tuned per task on dev, exactly as the oracle tunes temperature:
    the candidates are fixed configs (temperature `temperature`, the sampler at each grid value), run on the same
    dev prompts with the same batch seeds, and the best mean dev reward decodes the test prompts."""

    role = "sampler"

    def __init__(self, method: str, budget: int, temperature: float = 1.0, values=None, name: str | None = None):
        if method not in SAMPLER_GRIDS:
            raise ValueError(f"unknown sampler method {method!r}; valid: {sorted(SAMPLER_GRIDS)}")
        self.key = SAMPLER_GRIDS[method][0]
        self.grid = sampler_grid(method, budget, values)
        super().__init__([FixedPolicy(temperature, **{self.key: v}) for v in self.grid], name=name or method)

    def describe(self):
        return {**super().describe(), "sampler": self.key, "grid": self.grid}


class MixSamplerPolicy(TunedSamplerPolicy):
    """A training-free sampler tuned ONCE for the whole task mix: the one value a user would set without per-task
    tuning, the sampler's counterpart of the bar's best single fixed temperature.

    Raw rewards of different tasks are on different scales (chrF 0-1, a writing reward 0-3), so the value is chosen
    on the normalized dev reward, mapped per task exactly as the scale-free report maps it (0 = the worst and 1 = the
    best of `anchors`, the fixed-temperature grid, on that task's dev prompts) and averaged over tasks with equal
    weight. A win of a learned head over per-task tuning that this method also gets needs no head."""

    pooled = True  # fitted once on the dev units of all tasks, not per task

    def __init__(self, method: str, budget: int, anchors: list, temperature: float = 1.0, values=None,
                 name: str | None = None):
        super().__init__(method, budget, temperature, values, name=name or f"{method}_mix")
        if not anchors:
            raise ValueError(f"{self.name}: the normalization needs the fixed-temperature grid (anchors=)")
        self.anchors = list(anchors)

    def fit(self, dev_scores: dict):
        raise TypeError(f"{self.name} is fitted on every task's dev rewards at once: use fit_mix(dev_rewards, normalizer)")

    def fit_mix(self, dev_rewards: dict, normalizer) -> FixedPolicy:
        """`dev_rewards`: {task: {policy name: {prompt_id: reward}}} holding every candidate and anchor;
        `normalizer(by_name, anchor_names)`: the task's map of a raw mean onto the normalized scale (the evaluation
        passes the scale-free report's, which this layer does not import)."""
        anchors = [a.name for a in self.anchors]
        scores = {c.name: [] for c in self.candidates}
        for t, by_name in dev_rewards.items():
            missing = [n for n in [*scores, *anchors] if not by_name.get(n)]
            if missing:
                raise ValueError(f"{self.name}: task {t!r} has no dev rewards for {missing}")
            norm = normalizer(by_name, anchors)
            for c in scores:
                scores[c].append(float(norm(sum(by_name[c].values()) / len(by_name[c]))))
        self.dev_scores = {c: sum(v) / len(v) for c, v in scores.items()}
        self.chosen = max(self.candidates, key=lambda c: (self.dev_scores[c.name], -self.candidates.index(c)))
        return self.chosen

    def fit_summary(self) -> dict:
        return {**super().fit_summary(), "pooled": True}

    def describe(self):
        return {**super().describe(), "pooled": True, "anchors": [a.name for a in self.anchors]}


def _nearest_bin(x: float, bins: list) -> float:
    return min(bins, key=lambda b: (abs(b - x), b))  # a tie goes to the lower (more conservative) temperature


class MeanShiftPolicy(OraclePolicy):
    """MeanShift (SimpleDeco, "Token-Level Control or Just a Better Mean?"): a trained head's average choice as one
    fixed operating point. Its one candidate is the head itself (`AdaptivePolicy`), run on the dev prompts of
    EVERY task; `fit_units` averages the temperature it applied over all those decisions (sequence level: one per
    sample; token level: one per generated token), rounds it to the head's nearest temperature bin and decodes
    every test prompt of every task with that temperature. top_p / top_k are the head's fixed values when it does
    not choose them, else off: only the temperature is averaged, so MeanShift isolates the temperature the head
    learned (SimpleDeco also averages top-p when its controller predicts it)."""

    role = "meanshift"
    pooled = True  # fitted once on the dev units of all tasks, not per task

    def __init__(self, head_path=None, head: AdaptiveDecoderHead | None = None, name: str | None = None, **kw):
        source = AdaptivePolicy(head_path=head_path, head=head, **kw)
        super().__init__([source], name=name or f"meanshift-{source.name}")
        self.source, self.mean_temperature = source, None

    def fit(self, dev_scores: dict):
        raise TypeError("MeanShiftPolicy is fitted on the head's applied values: use fit_units(dev_units)")

    def fit_units(self, units: list) -> FixedPolicy:
        temps = [x for u in units for smp in u["samples"] for x in _as_list(smp["values"].get("temperature"))
                 if x is not None and x == x]  # NaN marks steps after EOS
        if not temps:
            raise ValueError(f"{self.name}: the head made no decisions on the dev prompts")
        cfg = self.source.head.config
        self.mean_temperature = sum(temps) / len(temps)
        fixed = {f: cfg.fixed[f] for f in ("top_p", "top_k") if f not in cfg.factors and f in (cfg.fixed or {})}
        self.chosen = FixedPolicy(_nearest_bin(self.mean_temperature, list(cfg.bins("temperature"))), **fixed)
        return self.chosen

    def fit_summary(self) -> dict:
        return {"chosen": self.chosen.name, "mean_temperature": self.mean_temperature, "dev_scores": {}}

    def describe(self):
        return {**super().describe(), "head_path": self.source.head_path, "mean_temperature": self.mean_temperature}


def _as_list(v):
    return v if isinstance(v, list) else [v]


# ------------------------------------------------------------------------------------------------------------
@register_policy("greedy")
def _greedy(**kw) -> list:
    return [GreedyPolicy(**kw)]


@register_policy("fixed")
def _grid(temperatures=None, top_p: float = 1.0, top_k: int = 0, repetition_penalty: float | None = None) -> list:
    temps = DEFAULT_TEMPERATURES if temperatures is None else list(temperatures)
    if not temps:
        raise ValueError("the fixed grid needs at least one temperature")
    return [FixedPolicy(t, top_p, top_k, repetition_penalty) for t in temps]


@register_policy("random")
def _random(**kw) -> list:
    return [RandomPolicy(**kw)]


@register_policy("random_token")
def _random_token(**kw) -> list:
    return [TokenRandomPolicy(**kw)]


@register_policy("adaptive")
def _adaptive(head_path=None, head_paths=None, **kw) -> list:
    paths = ([head_path] if head_path else []) + list(head_paths or [])
    if not paths:
        raise ValueError("method 'adaptive' needs head_path= (or head_paths=[...]): a directory saved by "
                         "AdaptiveDecoderHead.save_pretrained")
    return [AdaptivePolicy(p, **kw) for p in paths]


@register_policy("oracle")
def _oracle(name="oracle", **kw) -> list:
    return [OraclePolicy(_grid(**kw), name=name)]


@register_policy("best_joint")
def _best_joint(name="best_joint", temperature_bins=None, top_p_bins=None, top_k_bins=None) -> list:
    d = AdaptiveDecoderConfig()
    temps, tops, ks = (list(b or getattr(d, f"{f}_bins")) for b, f in
                       ((temperature_bins, "temperature"), (top_p_bins, "top_p"), (top_k_bins, "top_k")))
    AdaptiveDecoderConfig(temperature_bins=temps, top_p_bins=tops, top_k_bins=ks)  # validates the bins
    return [OraclePolicy([FixedPolicy(t, p, int(k)) for t in temps for p in tops for k in ks], name=name)]


@register_policy("meanshift")
def _meanshift(head_path=None, head_paths=None, **kw) -> list:
    paths = ([head_path] if head_path else []) + list(head_paths or [])
    if not paths:
        raise ValueError("method 'meanshift' needs head_path= (or head_paths=[...]): the trained head to average")
    return [MeanShiftPolicy(p, **kw) for p in paths]


def _tuned_sampler(method: str):
    @register_policy(method)
    def build(budget=len(DEFAULT_TEMPERATURES), **kw) -> list:
        return [TunedSamplerPolicy(method, budget, **kw)]
    return build


def _mix_sampler(method: str):
    @register_policy(f"{method}_mix")
    def build(budget=len(DEFAULT_TEMPERATURES), temperatures=None, top_p: float = 1.0, top_k: int = 0, **kw) -> list:
        return [MixSamplerPolicy(method, budget, _grid(temperatures, top_p, top_k), **kw)]
    return build


MIX_SAMPLERS = {f"{m}_mix": m for m in SAMPLER_GRIDS}
for _method in SAMPLER_GRIDS:
    _tuned_sampler(_method)
    _mix_sampler(_method)
