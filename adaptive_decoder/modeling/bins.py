"""What a head's bins and fixed values may be: the factors, their bin conventions and the checks that normalise them.

Bin conventions (validated when an `AdaptiveDecoderConfig` is made):
  temperature: strictly ascending, >= 0; 0.0 means greedy (exact argmax).
  top_p:       in (0, 1], strictly descending (least to most restrictive); 1.0 means off.
  top_k:       integers >= 0, least to most restrictive; 0 means off and may only come first.
  min_p:       in [0, 1], strictly ascending (least to most restrictive); 0.0 means off.
The invariant: each factor's bins are distinct and in one fixed order, so a stored choice index names one setting
and sorting never reorders a configured list behind a head's back (a wrong order is refused, not fixed).

min_p is optional: it is a FACTOR (it can be learned or fixed), but not one of the DEFAULT_FACTORS, so a head
configured without mentioning it learns what it did before, and a saved config without `min_p_bins` / a
`fixed["min_p"]` loads with min-p off (fixed 0.0), which decodes bit-identically to a head that never had it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from .sampling import NEUTRAL, validate_sampling_value

FACTORS = ("temperature", "top_p", "top_k", "min_p")
DEFAULT_FACTORS = ("temperature", "top_p", "top_k")
FIXED_DEFAULTS = {f: NEUTRAL[f] for f in FACTORS}


def check_bins(factor: str, bins) -> list:
    """Validated, normalised bins: every value valid for its factor (`validate_sampling_value`), then the order."""
    if isinstance(bins, (str, bytes, dict)) or not isinstance(bins, Iterable):
        raise ValueError(f"{factor}_bins must be a list of numbers, got {bins!r} ({type(bins).__name__})")
    bins = list(bins)
    if not bins:
        raise ValueError(f"{factor}_bins is empty: give at least one value")
    validate_sampling_value(factor, bins, label=f"each of {factor}_bins")
    if len(set(bins)) != len(bins):
        raise ValueError(f"{factor}_bins has duplicated values: {bins}")
    if factor == "temperature":
        if bins != sorted(bins):
            raise ValueError(f"temperature_bins must be sorted ascending, got {bins}")
        return [float(b) for b in bins]
    if factor == "min_p":  # a larger min_p keeps fewer tokens; 0 (off) is the smallest, so it can only come first
        if bins != sorted(bins):
            raise ValueError(f"min_p_bins must be sorted ascending (least to most restrictive, 0 = off first), got {bins}")
        return [float(b) for b in bins]
    if factor == "top_p":
        if bins != sorted(bins, reverse=True):
            raise ValueError(f"top_p_bins must be sorted descending (least to most restrictive), got {bins}")
        return [float(b) for b in bins]
    # top_k: 0 (off) behaves like +inf, so it may only come first; the rest descend.
    bins = [int(b) for b in bins]
    as_inf = [math.inf if b == 0 else b for b in bins]
    if as_inf != sorted(as_inf, reverse=True):
        raise ValueError(f"top_k_bins must be sorted from least to most restrictive (0 = off first, then descending), got {bins}")
    return bins


def check_fixed(fixed) -> dict:
    """The values of inactive factors, defaults filled in, each validated like a forced value."""
    if not isinstance(fixed, Mapping):
        raise ValueError(f"fixed must be a mapping of factor -> value, got {fixed!r} ({type(fixed).__name__})")
    bad = [k for k in fixed if k not in FACTORS]
    if bad:
        raise ValueError(f"unknown keys in fixed: {bad}; valid: {list(FACTORS)}")
    out = {**FIXED_DEFAULTS, **dict(fixed)}
    for k, v in out.items():
        validate_sampling_value(k, v, label=f"fixed[{k!r}]")
        # plain Python numbers: config.json stays JSON and top_k stays an int (2.0 -> 2)
        out[k] = int(v) if k == "top_k" else float(v)
    return out


__all__ = ["DEFAULT_FACTORS", "FACTORS", "FIXED_DEFAULTS", "check_bins", "check_fixed"]
