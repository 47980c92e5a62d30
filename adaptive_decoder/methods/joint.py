"""One joint decoding config for the whole task mix, tuned on dev without task labels.

Method registered here (`build_policies("best_joint_mix", **options)`):
    best_joint_mix   ONE (temperature, top_p, top_k, min_p) for every prompt of every task, chosen on the pooled,
                     per-task-normalized dev reward (`JointMixPolicy`): what a serving user with mixed traffic and
                     no task labels can tune at most, the joint counterpart of `min_p_mix` and of the bar's best
                     single temperature. The per-task `best_joint` (`adaptive_decoder.methods.fitted`) needs labels.

Budget: every tuned baseline gets as many dev-scored candidates as the fixed-temperature grid has (the harness
passes `budget`), so this method scores `budget` joint configs, not the product of four grids. `JOINT_GRID` is the
documented default: six configs (as many as DEFAULT_TEMPERATURES), ordered from conservative to exploratory, each
moving several factors at once the way users pair them (a warmer temperature with a tighter truncation); a smaller
budget takes evenly spaced entries (`joint_grid`), and `configs:` in method_options replaces it (exactly `budget`
dicts of FixedPolicy keys).
"""

from __future__ import annotations

from .base import register_policy
from .fitted import OraclePolicy, PooledFit, check_anchors
from .policies import DEFAULT_TEMPERATURES, FixedPolicy, fixed_grid
from .samplers import tuning_grid

# Values come from the head's default bins (top_p 1.0/0.95/0.9, top_k 0/50/20, min_p 0/0.05/0.1/0.2), so a head
# and this baseline choose from the same vocabulary. A budget of 4 (the experiments' grid) takes entries 0, 2, 3, 5:
# greedy, a mild sampled config, and two warm ones kept on-topic by min-p 0.2 / 0.1.
JOINT_GRID = [
    {"temperature": 0.0},                                                   # greedy (the others are then irrelevant)
    {"temperature": 0.4, "top_p": 0.9, "top_k": 20},                        # near-greedy sampling, no min-p
    {"temperature": 0.7, "top_p": 0.95, "top_k": 50, "min_p": 0.1},         # moderate
    {"temperature": 1.0, "top_p": 0.9, "top_k": 0, "min_p": 0.2},           # warm, strongly truncated
    {"temperature": 1.0, "top_p": 0.95, "top_k": 50, "min_p": 0.05},        # warm, lightly truncated
    {"temperature": 1.2, "top_p": 1.0, "top_k": 0, "min_p": 0.1},           # hot, min-p only
]


def joint_grid(budget: int, configs=None) -> list:
    """The `budget` joint configs (dicts of FixedPolicy keyword arguments) the method chooses from: `configs`
    (exactly `budget` of them), else evenly spaced entries of JOINT_GRID."""
    chosen = tuning_grid("best_joint_mix", JOINT_GRID, budget, configs, option="configs", what="joint configs")
    bad = [c for c in chosen if not isinstance(c, dict) or "temperature" not in c]
    if bad:
        raise ValueError(f"method 'best_joint_mix': every config needs a temperature (a dict of temperature, top_p, "
                         f"top_k, min_p), got {bad[0]!r}")
    return [dict(c) for c in chosen]


class JointMixPolicy(PooledFit, OraclePolicy):
    """The best single joint config for the whole mix: candidates are fixed joint configs run on every task's dev
    prompts (with the same prompt seeds as the grid), scored by their pooled normalized dev reward (`PooledFit`);
    the winner decodes every test prompt of every task. Per task it may lose to that task's own best, but it never
    needs to know which task a prompt came from."""

    role = "sampler"  # a training-free setting tuned on dev, decoded as one fixed config (FIXED_CONFIG_ROLES)

    def __init__(self, configs: list, anchors: list, name: str = "best_joint_mix"):
        super().__init__([FixedPolicy(**c) for c in configs], name=name)
        self.anchors = check_anchors(self.name, anchors)

    def describe(self):
        return {**super().describe(), "grid": [c.config for c in self.candidates]}


# ------------------------------------------------------------------------------------------------------------
@register_policy("best_joint_mix", policy=JointMixPolicy, run_options=("temperatures", "top_p", "top_k", "budget"))
def _best_joint_mix(budget=len(DEFAULT_TEMPERATURES), temperatures=None, top_p: float = 1.0, top_k: int = 0,
                    configs=None, name: str = "best_joint_mix") -> list:
    # the grid options are the anchors (the normalization's fixed grid), not candidates
    return [JointMixPolicy(joint_grid(budget, configs), fixed_grid(temperatures, top_p, top_k), name=name)]
