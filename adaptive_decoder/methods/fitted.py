"""Dev-fitted methods: policies that run candidates on a held-out dev split, fit one fixed config on their dev
units, then decode every test prompt with it.

One contract for all of them (`DevFittedPolicy`): `dev_policies()` are run on the dev prompts first, then
`fit(DevResults)` sets `chosen`, the `FixedPolicy` that `generate` decodes with. A per-task fit (`pooled` False)
reads `dev.task`'s units and is refitted for each task; a pooled fit reads every task's and gives one config for
the whole mix. The evaluation harness builds the `DevResults` from its unit store and never needs to know which
subclass it fits.

Methods registered here:
    oracle       best fixed setting per task, chosen on the dev split from the fixed-temperature grid (`OraclePolicy`)
    best_joint   the best (temperature, top_p, top_k) of the head's joint bins per task, chosen on dev like the oracle
                 (the strongest fixed baseline; its budget is the full product)
    meanshift    a trained head's mean chosen temperature on the dev prompts of all tasks, rounded to its nearest
                 bin, as one fixed temperature for every prompt (`MeanShiftPolicy`)
`PooledFit` is the pooled fit of the label-free tuned settings (`min_p_mix` and co., `best_joint_mix`): one
candidate for the whole mix, scored on the per-task-normalized dev reward of every task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..modeling.head import AdaptiveDecoderConfig, AdaptiveDecoderHead
from ..stats import finite_mean
from .base import DecodingPolicy, register_policy
from .policies import AdaptivePolicy, FixedPolicy, fixed_grid


@dataclass
class DevResults:
    """What a dev-fitted policy is fitted on.

    `units(name, task)` gives the dev units (dicts with "prompt_id", "reward", "samples") of the policy `name` on
    `task`'s dev prompts, in prompt order; it is only asked for names of `dev_policies()`. `normalizer`, when given,
    maps a task's raw rewards onto the scale-free report's scale: `normalizer({name: {prompt_id: reward}},
    anchor_names)` returns the map of a raw mean (this layer does not import the report, so the caller passes it)."""

    task: str
    tasks: list
    units: Callable[[str, str], list]
    normalizer: Callable | None = None

    def rewards(self, name: str, task: str) -> dict:
        """{prompt_id: reward} of `name` on `task`'s dev prompts."""
        return {u["prompt_id"]: u["reward"] for u in self.units(name, task)}


class DevFittedPolicy(DecodingPolicy):
    """Base of the dev-fitted policies: `fit(dev)` sets `chosen`, which `generate` then decodes with.

    Subclasses implement `fit` (returning `chosen`) and may widen `dev_policies`; `candidates` are the policies
    the fit reads (run on the dev split)."""

    needs_dev = True

    def __init__(self, candidates: list, name: str):
        if not candidates:
            raise ValueError(f"{type(self).__name__} needs at least one candidate")
        self.candidates = list(candidates)
        self.name = name
        self.chosen: FixedPolicy | None = None
        self.dev_scores: dict = {}

    def fit(self, dev: DevResults) -> FixedPolicy:
        raise NotImplementedError

    def dev_policies(self) -> list:
        return list(self.candidates)

    def fixed_config(self) -> dict | None:
        return self.chosen.config if self.chosen is not None else None

    def output_extra(self) -> dict:
        return {"oracle_choice": self.chosen.name}

    def heads(self) -> dict:
        return {n: p for c in self.dev_policies() for n, p in c.heads().items()}

    def check_model(self, adm):
        for c in self.dev_policies():
            c.check_model(adm)

    def generate(self, adm, prompts, *, num_samples, max_new_tokens, seed, chat=None, stop_when=None):
        if self.chosen is None:
            raise RuntimeError(f"{type(self).__name__}.fit(dev) must run before generate")
        outs = self.chosen.generate(adm, prompts, num_samples=num_samples, max_new_tokens=max_new_tokens, seed=seed,
                                    chat=chat, stop_when=stop_when)
        for o in outs:
            o.extra.update(self.output_extra())
        return outs

    def describe(self):
        return {**super().describe(), "candidates": [c.name for c in self.candidates],
                "chosen": self.chosen.describe() if self.chosen else None, "dev_scores": self.dev_scores}

    def fit_summary(self) -> dict:
        """What the reports say about the last fit."""
        return {"chosen": self.chosen.name, "dev_scores": self.dev_scores}


class OraclePolicy(DevFittedPolicy):
    """The best fixed setting for a task, chosen on a held-out dev split (the bar AutoDeco compares to).

    `fit(dev)` scores each candidate (`scores`: its mean dev reward on `dev.task`) and picks the best (ties -> the
    earlier candidate); then `generate` decodes exactly like that fixed policy. One fit per task."""

    role = "oracle"

    def __init__(self, candidates: list, name: str = "oracle"):
        super().__init__(candidates, name)

    def scores(self, dev: DevResults) -> dict:
        """{candidate name: dev score}; the candidate with the highest one is chosen."""
        return {c.name: finite_mean(dev.rewards(c.name, dev.task).values()) for c in self.candidates}

    def fit(self, dev: DevResults) -> FixedPolicy:
        scores = self.scores(dev)
        missing = [c.name for c in self.candidates if scores.get(c.name) is None]
        if missing:
            raise ValueError(f"{self.name}: no dev score for candidates {missing}")
        self.dev_scores = {c.name: float(scores[c.name]) for c in self.candidates}
        self.chosen = max(self.candidates, key=lambda c: (self.dev_scores[c.name], -self.candidates.index(c)))
        return self.chosen


class PooledFit:
    """Mixin for an `OraclePolicy` subclass that is fitted ONCE for the whole task mix (`pooled`): the one setting
    a user without task labels would pick, e.g. one min-p (`MixSamplerPolicy`) or one joint config
    (`adaptive_decoder.methods.joint`). The subclass sets `anchors`, the fixed-temperature grid.

    Raw rewards of different tasks are on different scales (chrF 0-1, a writing reward 0-3), so a candidate's score
    is its normalized dev reward, mapped per task exactly as the scale-free report maps it (`dev.normalizer`: 0 = the
    worst and 1 = the best of `anchors` on that task's dev prompts) and averaged over every task with equal weight;
    the best score wins as in `OraclePolicy.fit` (ties -> the earlier candidate). The anchors run on dev too, so the
    scale is the one the bar reports on."""

    pooled = True
    anchors: list

    def dev_policies(self) -> list:
        return [*self.candidates, *self.anchors]

    def scores(self, dev: DevResults) -> dict:
        if dev.normalizer is None:
            raise ValueError(f"{self.name}: its fit needs dev.normalizer (the scale-free report's per-task map)")
        anchors = [a.name for a in self.anchors]
        scores = {c.name: [] for c in self.candidates}
        for t in dev.tasks:
            by_name = {n: dev.rewards(n, t) for n in [*scores, *anchors]}
            missing = [n for n, r in by_name.items() if not r]
            if missing:
                raise ValueError(f"{self.name}: task {t!r} has no dev rewards for {missing}")
            norm = dev.normalizer(by_name, anchors)
            for c in scores:
                scores[c].append(float(norm(sum(by_name[c].values()) / len(by_name[c]))))
        return {c: sum(v) / len(v) for c, v in scores.items()}

    def fit_summary(self) -> dict:
        return {**super().fit_summary(), "pooled": True}

    def describe(self):
        return {**super().describe(), "pooled": True, "anchors": [a.name for a in self.anchors]}


def check_anchors(name: str, anchors: list) -> list:
    """The fixed grid a pooled fit normalizes by, refused when empty."""
    if not anchors:
        raise ValueError(f"{name}: the normalization needs the fixed-temperature grid (anchors=)")
    return list(anchors)


def _nearest_bin(x: float, bins: list) -> float:
    return min(bins, key=lambda b: (abs(b - x), b))  # a tie goes to the lower (more conservative) temperature


class MeanShiftPolicy(DevFittedPolicy):
    """MeanShift (SimpleDeco, "Token-Level Control or Just a Better Mean?"): a trained head's average choice as one
    fixed operating point. Its one candidate is the head itself (`AdaptivePolicy`), run on the dev prompts of
    EVERY task; `fit` averages the temperature it applied over all those decisions (sequence level: one per
    sample; token level: one per generated token), rounds it to the head's nearest temperature bin and decodes
    every test prompt of every task with that temperature. top_p / top_k are the head's fixed values when it does
    not choose them, else off: only the temperature is averaged, so MeanShift isolates the temperature the head
    learned (SimpleDeco also averages top-p when its controller predicts it)."""

    role = "meanshift"
    pooled = True

    def __init__(self, head_path=None, head: AdaptiveDecoderHead | None = None, name: str | None = None, **kw):
        source = AdaptivePolicy(head_path=head_path, head=head, **kw)
        super().__init__([source], name=name or f"meanshift-{source.name}")
        self.source, self.mean_temperature = source, None

    def fit(self, dev: DevResults) -> FixedPolicy:
        units = [u for t in dev.tasks for c in self.candidates for u in dev.units(c.name, t)]
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
@register_policy("oracle", policy=OraclePolicy, is_control=True, run_options=("temperatures", "top_p", "top_k"))
def _oracle(name="oracle", **kw) -> list:
    return [OraclePolicy(fixed_grid(**kw), name=name)]


@register_policy("best_joint", policy=OraclePolicy, uses_head_bins=True)
def _best_joint(name="best_joint", temperature_bins=None, top_p_bins=None, top_k_bins=None) -> list:
    d = AdaptiveDecoderConfig()
    temps, tops, ks = (list(b or getattr(d, f"{f}_bins")) for b, f in
                       ((temperature_bins, "temperature"), (top_p_bins, "top_p"), (top_k_bins, "top_k")))
    AdaptiveDecoderConfig(temperature_bins=temps, top_p_bins=tops, top_k_bins=ks)  # validates the bins
    return [OraclePolicy([FixedPolicy(t, p, int(k)) for t in temps for p in tops for k in ks], name=name)]


@register_policy("meanshift", policy=MeanShiftPolicy, takes_heads=True)
def _meanshift(head_path=None, head_paths=None, **kw) -> list:
    paths = ([head_path] if head_path else []) + list(head_paths or [])
    if not paths:
        raise ValueError("method 'meanshift' needs head_path= (or head_paths=[...]): the trained head to average")
    return [MeanShiftPolicy(p, **kw) for p in paths]
