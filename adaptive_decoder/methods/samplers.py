"""Training-free samplers tuned on the dev split with the oracle's tuning budget.

Methods registered here (`build_policies(method, **options)`):
    min_p, typical_p, epsilon,  a training-free sampler tuned like the oracle (`TunedSamplerPolicy`): its parameter
    eta, top_h, top_nsigma, edt is chosen per task on the dev split from a grid of as many values as the fixed-
                                temperature grid has (equal tuning budget; `SAMPLER_GRIDS`), at temperature 1.0
    min_p_mix, ..., edt_mix     the same sampler with ONE value for the whole mix, chosen on the normalized dev
                                reward of all tasks (`MixSamplerPolicy`): what a user without per-task tuning sets
"""

from __future__ import annotations

from .base import register_policy
from .fitted import OraclePolicy, PooledFit, check_anchors
from .policies import DEFAULT_TEMPERATURES, FixedPolicy, fixed_grid

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


def tuning_grid(method: str, grid: list, budget: int, values=None, option: str = "values",
                what: str = "values") -> list:
    """The `budget` candidates a tuned method chooses from: `values` (which must have exactly `budget` entries, so
    no method is tuned on more settings than the oracle), else evenly spaced entries of its default `grid`
    (indices round(i * (len(grid) - 1) / (budget - 1)); the middle entry for a budget of 1). The messages call
    the method option that gives `values` `option=` and its entries `what`."""
    if values is not None:
        values = list(values)
        if len(values) != budget:
            raise ValueError(f"method {method!r}: {option}= has {len(values)} entries but the fixed-temperature grid "
                             f"has {budget}; an equal tuning budget needs the same number")
        return values
    if budget > len(grid):
        raise ValueError(f"method {method!r}: its grid has {len(grid)} values but the fixed-temperature grid has "
                         f"{budget}; give {option}= with {budget} {what} in method_options")
    if budget == 1:
        return [grid[len(grid) // 2]]
    return [grid[round(i * (len(grid) - 1) / (budget - 1))] for i in range(budget)]


def sampler_grid(method: str, budget: int, values=None) -> list:
    """The `budget` values a tuned sampler chooses from (`tuning_grid` of its SAMPLER_GRIDS row)."""
    key, grid = SAMPLER_GRIDS[method]
    return tuning_grid(method, grid, budget, values, what=f"{key} values")


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


class MixSamplerPolicy(PooledFit, TunedSamplerPolicy):
    """A training-free sampler tuned ONCE for the whole task mix: the one value a user would set without per-task
    tuning, the sampler's counterpart of the bar's best single fixed temperature. Its score is the pooled,
    per-task-normalized dev reward (`PooledFit`). A win of a learned head over per-task tuning that this method
    also gets needs no head."""

    def __init__(self, method: str, budget: int, anchors: list, temperature: float = 1.0, values=None,
                 name: str | None = None):
        super().__init__(method, budget, temperature, values, name=name or f"{method}_mix")
        self.anchors = check_anchors(self.name, anchors)


# ------------------------------------------------------------------------------------------------------------
def _tuned_sampler(method: str):
    @register_policy(method, policy=TunedSamplerPolicy, run_options=("budget",))
    def build(budget=len(DEFAULT_TEMPERATURES), **kw) -> list:
        return [TunedSamplerPolicy(method, budget, **kw)]
    return build


def _mix_sampler(method: str):
    @register_policy(f"{method}_mix", policy=MixSamplerPolicy, run_options=("temperatures", "top_p", "top_k", "budget"))
    def build(budget=len(DEFAULT_TEMPERATURES), temperatures=None, top_p: float = 1.0, top_k: int = 0, **kw) -> list:
        return [MixSamplerPolicy(method, budget, fixed_grid(temperatures, top_p, top_k), **kw)]
    return build


for _method in SAMPLER_GRIDS:
    _tuned_sampler(_method)
    _mix_sampler(_method)
