"""Statistics for comparing decoding methods: bootstrap CIs and paired comparisons on per-prompt rewards.

Unit of analysis = the prompt: a method's per-prompt reward is the mean reward of its k samples for that prompt,
and two methods are compared on the SAME prompts (paired). Resampling is over prompts.

- `bootstrap_mean_ci(x)`: mean with a percentile-bootstrap (1 - alpha) CI.
- `paired_comparison(a, b)`: win / tie / loss rates of a vs b (each with a bootstrap CI: a win rate is never
  reported without its interval), the mean difference a - b with a paired-bootstrap CI, and a two-sided
  paired-bootstrap p-value for "mean difference = 0":
      p = min(1, 2 * min(#(d* <= 0) + 1, #(d* >= 0) + 1) / (B + 1)),
  where d* are the B bootstrap means of the per-prompt differences (the +1 keeps p > 0 with finite B; identical
  methods give p = 1).
- `two_level_bootstrap(per_seed)`: the interval of a mean over training seeds that counts the seeds as a source of
  variation: each resample draws the seeds with replacement, then, independently for every drawn seed, the prompts
  of each task with replacement within that task; a seed whose verdict differs from the others widens it.
- `adjust_pvalues(p, method)`: Holm (family-wise error) or Benjamini-Hochberg (false discovery rate) adjusted
  p-values for a family of tests, e.g. a head's win rates against every fixed setting.
"""

from __future__ import annotations

import math

import numpy as np


def _as_array(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds non-finite values at positions {np.flatnonzero(~np.isfinite(a)).tolist()[:10]}")
    return a


def _indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _ci(boot: np.ndarray, alpha: float) -> tuple[float, float]:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_mean_ci(x, n_boot: int = 10000, alpha: float = 0.05, seed: int = 0) -> dict:
    """{"mean", "lo", "hi", "n"}: the sample mean and its percentile-bootstrap (1 - alpha) interval."""
    a = _as_array(x, "x")
    boot = a[_indices(a.size, n_boot, seed)].mean(axis=1)
    lo, hi = _ci(boot, alpha)
    return {"mean": float(a.mean()), "lo": lo, "hi": hi, "n": int(a.size)}


def paired_comparison(a, b, n_boot: int = 10000, alpha: float = 0.05, seed: int = 0, tie_tol: float = 1e-9) -> dict:
    """Compare method A to method B on the same prompts (a[i], b[i] = per-prompt rewards of prompt i).

    Returns {"n", "win", "tie", "loss" (rates, sum to 1), "win_lo", "win_hi" (bootstrap CI of the win rate),
    "mean_diff" (mean of a - b), "diff_lo", "diff_hi", "p_value"}. |a_i - b_i| <= tie_tol counts as a tie.
    """
    a, b = _as_array(a, "a"), _as_array(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same prompts on both sides: got {a.size} and {b.size} rewards")
    d = a - b
    win, loss = d > tie_tol, d < -tie_tol
    idx = _indices(d.size, n_boot, seed)
    boot_d = d[idx].mean(axis=1)
    boot_win = win[idx].mean(axis=1)
    diff_lo, diff_hi = _ci(boot_d, alpha)
    win_lo, win_hi = _ci(boot_win, alpha)
    p = _bootstrap_p(boot_d, 0.0, tie_tol)
    return {"n": int(d.size), "win": float(win.mean()), "tie": float(np.mean(~win & ~loss)),
            "loss": float(loss.mean()), "win_lo": win_lo, "win_hi": win_hi, "mean_diff": float(d.mean()),
            "diff_lo": diff_lo, "diff_hi": diff_hi, "p_value": float(p)}


def _bootstrap_p(boot: np.ndarray, null: float, tol: float = 1e-9) -> float:
    """Two-sided bootstrap p-value for "the statistic = null", as in `paired_comparison` (+1: p > 0 for finite B)."""
    le, ge = int(np.sum(boot <= null + tol)) + 1, int(np.sum(boot >= null - tol)) + 1
    return min(1.0, 2 * min(le, ge) / (boot.size + 1))


def two_level_bootstrap(per_seed: dict, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0,
                        null: float = 0.0) -> dict:
    """Mean over training seeds of a per-prompt quantity, with an interval that includes the seed-to-seed spread.

    `per_seed`: {training seed: {task: per-prompt values}} (e.g. a head's normalized reward minus a baseline's,
    prompt by prompt; every seed must hold the same tasks). A seed's value is the equally weighted mean over
    tasks of its task means; the point estimate is the mean of the seed values. Each of the `n_boot` resamples
    draws S seeds with replacement from the S seeds and, for each drawn seed on its own (one seed drawn twice gets
    two independent draws), the prompts of every task with replacement within that task; its statistic is the
    mean over the drawn seeds. With one seed this is the stratified prompt bootstrap; with the prompt values of
    every seed constant it is the bootstrap of the seed values alone. Draws come from
    `numpy.random.default_rng(seed)`: same inputs, same seed, same interval.

    Returns {"mean", "lo", "hi", "p_value" (two-sided, for "mean = null", as `paired_comparison`'s),
    "per_seed": {seed: its value}, "n_seeds", "n_boot", "alpha"}.
    """
    if not per_seed:
        raise ValueError("two_level_bootstrap needs at least one training seed")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    names = list(per_seed)
    tasks = sorted(per_seed[names[0]])
    for s in names:
        if sorted(per_seed[s]) != tasks:
            raise ValueError(f"seed {s!r} has tasks {sorted(per_seed[s])}, seed {names[0]!r} has {tasks}: "
                             "every seed must hold the same tasks")
    if not tasks:
        raise ValueError(f"seed {names[0]!r} holds no task")
    values = {s: {t: _as_array(per_seed[s][t], f"per_seed[{s!r}][{t!r}]") for t in tasks} for s in names}
    seed_value = {s: float(np.mean([v.mean() for v in values[s].values()])) for s in names}
    rng = np.random.default_rng(seed)
    n_seeds = len(names)
    picks = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    total = np.zeros(n_boot)
    for slot in range(n_seeds):  # every slot draws its own prompts, so a seed drawn twice is resampled twice
        by_seed = np.stack([np.mean([v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
                                     for v in values[s].values()], axis=0) for s in names])  # [S, n_boot]
        total += by_seed[picks[:, slot], np.arange(n_boot)]
    boot = total / n_seeds
    lo, hi = _ci(boot, alpha)
    return {"mean": float(np.mean(list(seed_value.values()))), "lo": lo, "hi": hi,
            "p_value": float(_bootstrap_p(boot, null)), "per_seed": seed_value, "n_seeds": n_seeds,
            "n_boot": int(n_boot), "alpha": float(alpha)}


ADJUSTMENTS = ("holm", "bh")


def adjust_pvalues(p_values, method: str = "holm"):
    """Adjusted p-values of one family of tests, in the container given (a list, or a dict {test: p}).

    "holm" (family-wise error rate, Holm 1979): with p_(1) <= ... <= p_(m) sorted,
        adj_(i) = max over j <= i of min(1, (m - j + 1) * p_(j));
    "bh" (false discovery rate, Benjamini-Hochberg 1995):
        adj_(i) = min over j >= i of min(1, m * p_(j) / j).
    A test is significant at level alpha in the family when its adjusted p-value is <= alpha.
    """
    if method not in ADJUSTMENTS:
        raise ValueError(f"method must be one of {ADJUSTMENTS}, got {method!r}")
    keys = list(p_values) if isinstance(p_values, dict) else None
    p = np.asarray([p_values[k] for k in keys] if keys is not None else list(p_values), dtype=float)
    if p.ndim != 1 or p.size == 0:
        raise ValueError("adjust_pvalues needs a non-empty family of p-values")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    else:
        adj = np.minimum.accumulate(np.minimum(1.0, m * ranked / np.arange(1, m + 1))[::-1])[::-1]
    out = np.empty(m)
    out[order] = adj
    return {k: float(v) for k, v in zip(keys, out)} if keys is not None else [float(v) for v in out]


def finite_mean(xs) -> float | None:
    """Mean of the finite numbers in `xs`, leaving out None, NaN, inf and anything not a number; None if none is left.

    For descriptive averages (token counts, timings, task metrics over seeds), where a missing value is normal;
    the statistics above refuse non-finite input instead, since they are about the numbers reported as results."""
    xs = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def format_ci(mean, lo, hi, digits: int = 3) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
