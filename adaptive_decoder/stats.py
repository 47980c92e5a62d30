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
    le = int(np.sum(boot_d <= tie_tol)) + 1
    ge = int(np.sum(boot_d >= -tie_tol)) + 1
    p = min(1.0, 2 * min(le, ge) / (n_boot + 1))
    return {"n": int(d.size), "win": float(win.mean()), "tie": float(np.mean(~win & ~loss)),
            "loss": float(loss.mean()), "win_lo": win_lo, "win_hi": win_hi, "mean_diff": float(d.mean()),
            "diff_lo": diff_lo, "diff_hi": diff_hi, "p_value": float(p)}


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
