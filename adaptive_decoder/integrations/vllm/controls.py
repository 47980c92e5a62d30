"""Per-request control of a served head: what a client may ask through `SamplingParams.extra_args` (the OpenAI
server's `vllm_xargs`, whose values are flat strings and numbers).

    {"adaptive": "off"}                  the head leaves this request alone: plain logits, and vLLM applies the
                                         request's own sampling values (temperature, top_p, ...) as for any model
    {"adaptive_max_temperature": 0.7}    the head's temperature is capped at 0.7 (a greedy choice stays greedy)
    {"adaptive_temperature_bin": 0}      the head's choice of that factor is this bin (an index into the head's
     (and _top_p_bin, _top_k_bin,         bins of the factor), as a forced choice is on the HF path
      _min_p_bin)

Every key that starts with "adaptive" belongs to this package: an unknown one, a wrong type or an out-of-range
value refuses the request with one line (`RequestRows.validate_params`, at admission: HTTP 400 in the server,
ValueError in `LLM.generate`), so a typo never silently serves the head uncontrolled. Bin indices are checked
against the served head's bins where they are known at admission (`admission_bins`: recorded by the config hook
in the process that builds the engine's config, `attach`, and used when every head configured in this process has
the same bins, as in a server's one engine); the worker checks them again and ignores, with a warning, one that
slipped through.

Keys the package sets itself (the per-request specs of the sampling backend, a sequence-level decision) are
internal and allowed.
"""

from __future__ import annotations

FACTOR_BIN_KEYS = {f"adaptive_{f}_bin": f for f in ("temperature", "top_p", "top_k", "min_p")}
CONTROL_KEYS = ("adaptive", "adaptive_max_temperature", *FACTOR_BIN_KEYS)
INTERNAL_PREFIX = "adaptive_decoder_"
SERVED_BINS: dict[str, dict] = {}  # model dir -> {factor: number of bins} of each head configured in this process


def admission_bins() -> dict | None:
    """The bins to check controls against at admission: those of the heads configured in this process when they
    all agree (a server has one engine), else None (the worker checks)."""
    kinds = {tuple(sorted(b.items())) for b in SERVED_BINS.values()}
    return dict(kinds.pop()) if len(kinds) == 1 else None


def _refuse(msg: str):
    raise ValueError(f"adaptive-decoder request control: {msg}; valid keys: {list(CONTROL_KEYS)}")


def _number(key, v, integer=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        _refuse(f"{key} must be a finite number, got {v!r}")
    if integer and int(v) != v:
        _refuse(f"{key} must be an integer, got {v!r}")
    if v < 0:
        _refuse(f"{key} must be >= 0, got {v!r}")
    return int(v) if integer else float(v)


def request_controls(extra_args, bins: dict | None = None) -> dict | None:
    """The controls of one request ({"off": bool, "max_temperature": float | None, "bins": {factor: int}}), or
    None when it sets none. Raises ValueError (one line) for an unknown key, a bad value or, given `bins`
    (factor -> number of bins), a bin the head does not have or a factor it does not choose."""
    if not extra_args:
        return None
    ours = {k: v for k, v in extra_args.items() if isinstance(k, str) and k.startswith("adaptive")
            and not k.startswith(INTERNAL_PREFIX)}
    if not ours:
        return None
    unknown = sorted(set(ours) - set(CONTROL_KEYS))
    if unknown:
        _refuse(f"unknown key(s) {unknown}")
    out = {"off": False, "max_temperature": None, "bins": {}}
    if "adaptive" in ours:
        if ours["adaptive"] not in ("on", "off"):
            _refuse(f"adaptive must be 'on' or 'off', got {ours['adaptive']!r}")
        out["off"] = ours["adaptive"] == "off"
    if "adaptive_max_temperature" in ours:
        out["max_temperature"] = _number("adaptive_max_temperature", ours["adaptive_max_temperature"])
    for key, factor in FACTOR_BIN_KEYS.items():
        if key in ours:
            b = _number(key, ours[key], integer=True)
            if bins is not None:
                if factor not in bins:
                    _refuse(f"{key}: the served head does not choose {factor} (it chooses {sorted(bins)})")
                if b >= bins[factor]:
                    _refuse(f"{key} is {b}, but the served head has {bins[factor]} {factor} bins (0..{bins[factor] - 1})")
            out["bins"][factor] = b
    return out
