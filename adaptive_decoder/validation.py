"""Checks for plain option values (sizes, counts, rates) shared by configs and `generate`.

Sampling hyperparameters have their own, richer definition in `sampling.validate_sampling_value`; this module is
for the rest. Each check returns the value normalised to its Python type and otherwise raises ValueError with the
option's name and the offending value, so a bad value in a saved config or a keyword argument fails where it
enters instead of as a bare TypeError (or a silently truncated float) somewhere downstream.
"""

from __future__ import annotations

import math
import numbers
import operator


def positive_int(name: str, value) -> int:
    """`value` as an int >= 1. Floats are refused even when integral: 2.5 must not become 2 (or 3)."""
    if isinstance(value, bool):  # True is an int to Python, never a count to a user
        raise ValueError(f"{name} must be a positive integer, got {value!r} (bool)")
    try:
        n = operator.index(value)  # ints, numpy ints and integer 0-d tensors; not floats, not strings
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__})") from None
    if n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n}")
    return n


def fraction(name: str, value) -> float:
    """`value` as a float in [0, 1) (a rate such as dropout: 1 would drop everything)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r} ({type(value).__name__})")
    x = float(value)
    if not (math.isfinite(x) and 0.0 <= x < 1.0):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return x
