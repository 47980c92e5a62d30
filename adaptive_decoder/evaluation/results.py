"""What the suite's results and the experiment's summary are made of, shared by the code that fills them in
(`adaptive_decoder.evaluation.harness`, `adaptive_decoder.experiment.pipeline`) and the code that renders them
(`adaptive_decoder.evaluation.report`), so that neither side imports the other.

- the names a result is keyed by: `OVERALL` (the experiment's row pooling every task) and `LEVEL_METHOD` (the
  method name each trained head level is reported under);
- how a chosen decoding value is counted: `value_key` ("0.2", "1", "50"), `value_order` (numbers ascending) and
  `FALLBACK`, the key of a value HAG's config text failed to give;
- the tallies both producers take: over units, `chosen_values` and `parse_failed_rate` (together: `choices`);
  over per-prompt rewards, `compare_with_baselines` (the comparison records, each a `Comparison`);
- the records: `MethodTaskResult` (one method on one task) and `Comparison` (one paired comparison);
- `same_decoding`: which methods decode exactly like a fixed-grid setting, so reports show them once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..methods.base import role_of
from ..stats import adjust_pvalues, paired_comparison

# the pooled row of the experiment's summary: every task's test prompts together, on their raw scales
OVERALL = "overall"
LEVEL_METHOD = {"sequence": "adseq", "token": "adtok"}


# the key a sample is counted under when HAG's config text gave no valid value for that factor: the default was
# applied because parsing failed, which is not a choice, so plots and tables show it apart from the values
FALLBACK = "fallback"


def value_key(x) -> str:
    """A decoding value as chosen_values counts it: "0.2", "1", "50"."""
    return f"{x:g}" if isinstance(x, float) else str(x)


def value_order(key: str):
    """Sort key for chosen_values keys: numbers ascending, FALLBACK last."""
    return (1, 0.0) if key == FALLBACK else (0, float(key))


def parse_failed_rate(units: list) -> float | None:
    """HAG: the share of units whose config text could not be parsed (the default config decoded them); None for a
    method that writes no config text."""
    flags = [u["extra"]["parse_failed"] for u in units if "parse_failed" in u.get("extra", {})]
    return sum(map(bool, flags)) / len(flags) if flags else None


def chosen_values(units: list) -> dict:
    """{factor: {value: count}} over all samples (token level: over all real steps) of some units; a factor HAG
    could not parse for a prompt (`parse_problems`) is counted under FALLBACK."""
    out = {}
    for u in units:
        fell_back = set((u.get("extra") or {}).get("parse_problems") or {})
        for s in u["samples"]:
            for k, v in s["values"].items():
                for x in (v if isinstance(v, list) else [v]):
                    if x is None or (isinstance(x, float) and math.isnan(x)):
                        continue
                    key = FALLBACK if k in fell_back else value_key(x)
                    out.setdefault(k, {})
                    out[k][key] = out[k].get(key, 0) + 1
    return out


def choices(units: list) -> dict:
    """What a method chose over some units: {"chosen": chosen_values}, and "parse_failed_rate" where it wrote config
    text (HAG)."""
    out = {"chosen": chosen_values(units)}
    if (rate := parse_failed_rate(units)) is not None:
        out["parse_failed_rate"] = rate
    return out


# a MethodTaskResult field its producer does not fill: left out of the record (None is a value: "no finite mean")
_UNSET = object()


@dataclass(frozen=True)
class MethodTaskResult:
    """One method on one task, as results.json (one seed) and summary.json (over seeds) record it under
    `tasks[task]["methods"][method]`: the mean reward with its 95% CI, the task's own metrics, the decoding values the
    method chose (`choices`) and, in the suite, generation length and speed. A producer fills what it measures; the
    rest is left out of the record, so both files keep one vocabulary."""

    reward: dict
    metrics: dict = field(default=_UNSET)
    mean_new_tokens: float | None = field(default=_UNSET)
    gen_seconds_per_prompt: float | None = field(default=_UNSET)
    chosen: dict = field(default=_UNSET)
    parse_failed_rate: float = field(default=_UNSET)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if getattr(self, k) is not _UNSET}


@dataclass(frozen=True)
class Comparison:
    """One paired comparison as results.json and summary.json record it: `method` against `baseline` on the
    per-prompt rewards of `task` (the numbers of `adaptive_decoder.stats.paired_comparison`); the fields in the
    order the files hold them. `p_holm`: `p_value` adjusted by Holm's step-down over the family of `method`'s
    comparisons on `task` (one per baseline), so "some baseline is beaten" keeps its 5% error rate however many
    baselines a method meets; None in records written before it was computed."""

    task: str
    method: str
    baseline: str
    baseline_temperature: float | None
    n: int
    win: float
    tie: float
    loss: float
    win_lo: float
    win_hi: float
    mean_diff: float
    diff_lo: float
    diff_hi: float
    p_value: float
    p_holm: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def compare_with_baselines(task: str, rewards: dict, baselines: dict, methods: dict, n_boot: int, seed: int) -> list[dict]:
    """The comparison records on `task`: each method paired with each of its `baselines[method]` on per-prompt
    rewards (`rewards[m]`: one list per method, in one prompt order); `methods`: the method descriptions. A method's
    comparisons on the task are one family of tests, Holm-adjusted together (`Comparison.p_holm`)."""
    out = []
    for m, fs in baselines.items():
        family = [paired_comparison(rewards[m], rewards[f], n_boot=n_boot, seed=seed) for f in fs]
        holm = adjust_pvalues([c["p_value"] for c in family], "holm") if family else []
        out += [Comparison(task, m, f, methods[f].get("temperature"), **c, p_holm=h).to_dict()
                for f, c, h in zip(fs, family, holm)]
    return out


def same_decoding(methods: dict) -> dict:
    """{greedy method: the fixed temperature it equals}: greedy and T=0.0 decode with one config, so the evaluator
    gives them identical samples; reports show such a pair once (as the grid setting, which the bar uses)."""
    keys = ("temperature", "top_p", "top_k", "repetition_penalty")
    fixed = [m for m, d in methods.items() if role_of(d) == "fixed"]
    out = {}
    for m, d in methods.items():
        if role_of(d) == "greedy":
            twin = next((f for f in fixed if all(methods[f].get(k) == d.get(k) for k in keys)), None)
            if twin is not None:
                out[m] = twin
    return out
