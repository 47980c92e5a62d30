"""The decoding-policy interface, the method registry and the roles reports test.

A policy decides the decoding hyperparameters; the tokens always come from `AdaptiveDecodingModel.generate`
(`force=` for fixed configs, the head for AD), so differences between methods come only from the policy:

    policy.generate(adm, prompts, num_samples=k, max_new_tokens=64, seed=0) -> [PolicyOutput per prompt]

This module sits below every policy implementation (`policies`, `hag`): they import the interface and
`forced_generate` from here and register their method builders here, so no policy module imports another
one back.

Registry: `@register_policy("name")` on a function `(**options) -> [DecodingPolicy, ...]` makes `name` a method
of `build_policies` and of the evaluation config (one name may expand to several policies, e.g. a grid). The
harness (`adaptive_decoder.evaluation.harness`) imports the modules whose methods it offers, so the registry is complete
whenever a config is validated.

Roles: each policy class sets `role`, what it is for in the comparisons ("fixed", "greedy", "random",
"random_token", "adaptive", "oracle", "sampler", "meanshift", "hag"); `describe()` writes it into results.json
next to the class name, and reports select methods by role (`role_of`), never by class name. A results.json
without a role (written by an older version) is read through `ROLE_OF_TYPE`, so resumed runs and summaries of
such files keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..modeling.generation import AdaptiveDecodingModel
from ..modeling.noise import seeding
from ..modeling.sampling import NEUTRAL

# class name (describe()["type"]) -> role, for descriptions that carry no "role"
ROLE_OF_TYPE = {"FixedPolicy": "fixed", "GreedyPolicy": "greedy", "RandomPolicy": "random",
                "TokenRandomPolicy": "random_token", "AdaptivePolicy": "adaptive", "OraclePolicy": "oracle",
                "TunedSamplerPolicy": "sampler", "MixSamplerPolicy": "sampler", "MeanShiftPolicy": "meanshift",
                "HAGPolicy": "hag"}
# roles of the policies that decode one fixed config per task (nothing chosen per prompt or token): reports leave
# them out of the chosen-parameter distributions
FIXED_CONFIG_ROLES = ("fixed", "greedy", "oracle", "sampler", "meanshift")


def role_of(description: dict) -> str:
    """The role of a method from its `describe()` dict: its "role", else the one its class name stands for
    ("policy" for a class this library does not know, which reports treat like any other chooser)."""
    return description.get("role") or ROLE_OF_TYPE.get(description.get("type"), DecodingPolicy.role)


@dataclass
class PolicyOutput:
    """The k samples of one prompt."""

    texts: list
    completion_ids: list
    values: list                     # per sample: {generation.VALUE_KEYS (+ forced samplers)} -> float
                                     # (token level: a list per step, real steps only)
    extra: dict = field(default_factory=dict)   # e.g. {"choices": [...]} for AD, {"config_text", "parse_failed"} for HAG


class DecodingPolicy:
    """Base class. Subclasses set `name` and `role` and implement `generate`."""

    name: str = "policy"
    role: str = "policy"

    def generate(self, adm: AdaptiveDecodingModel, prompts: list, *, num_samples: int, max_new_tokens: int,
                 seed, chat: bool | None = None, stop_when=None) -> list:
        """k samples per prompt; `stop_when` (a task's `stop_predicate()`) goes to `adm.generate` unchanged.
        `seed`: one `noise.prompt_seed` per prompt (row-seeded draws: a prompt's samples do not depend on its
        batch), or an int seeding torch's generator before the call (`noise.seeding` turns either into generate's
        keywords)."""
        raise NotImplementedError

    def describe(self) -> dict:
        """JSON-able description stored in results.json."""
        return {"name": self.name, "role": self.role, "type": type(self).__name__}


# ------------------------------------------------------------------------------------------------------------
POLICIES: dict[str, Callable[..., list]] = {}


def register_policy(*names: str):
    """Decorator: register a builder `(**options) -> [policies]` under each of `names`."""
    def deco(fn):
        for n in names:
            if n in POLICIES and POLICIES[n] is not fn:
                raise ValueError(f"method {n!r} is already registered by {POLICIES[n].__module__}."
                                 f"{POLICIES[n].__qualname__}")
            POLICIES[n] = fn
        return fn
    return deco


def build_policies(method: str, **options) -> list:
    """Policies for one method name of the registry (a grid method expands to several)."""
    if method not in POLICIES:
        raise ValueError(f"unknown method {method!r}; valid: {sorted(POLICIES)}")
    try:
        return POLICIES[method](**options)
    except TypeError as e:  # an unexpected keyword from a config file
        raise ValueError(f"bad options for method {method!r}: {e}") from None


# ------------------------------------------------------------------------------------------------------------
def split_output(out, n_prompts: int, k: int, replicate: bool = False, extra: list | None = None) -> list:
    """Cut an `AdaptiveGenerateOutput` (HF row order: prompt i, sample j -> row i*k+j) into PolicyOutputs.

    replicate=True: `out` holds ONE row per prompt (greedy), copied k times.
    """
    per = 1 if replicate else k
    rows = out.completion_ids
    texts = out.texts if out.texts is not None else [""] * len(rows)
    res = []
    for i in range(n_prompts):
        idx = [i * per + (0 if replicate else j) for j in range(k)]
        vals = [_row_values(out.values, out.step_mask, r, per_step=out.level == "token") for r in idx]
        ex = dict(extra[i]) if extra else {}
        if out.choices:
            ex["choices"] = [_row_values(out.choices, out.step_mask, r) for r in idx]
        if replicate:
            ex["replicated"] = True
        res.append(PolicyOutput(texts=[texts[r] for r in idx], completion_ids=[list(rows[r]) for r in idx],
                                values=vals, extra=ex))
    return res


def _row_values(d: dict, step_mask, r: int, per_step: bool = True) -> dict:
    """Row r of `d` as numbers: a [n] entry as one number; a [n, t] entry as the list over real steps, or with
    per_step=False (a value decided once per row) as its first real step's value (None if the row has none)."""
    out = {}
    for k, v in d.items():
        v = v[r]
        if v.dim() == 0:
            out[k] = _clean(v.item())
            continue
        real = [_clean(x) for x in v[step_mask[r].to(v.device)].tolist()]
        out[k] = real if per_step else (real[0] if real else None)
    return out


def _clean(x):
    # float32 bin values (0.4000000059604645) stored as the number the user configured
    return round(x, 6) if isinstance(x, float) else x


def forced_generate(adm: AdaptiveDecodingModel, prompts: list, configs: list, *, num_samples: int,
                    max_new_tokens: int, seed: int, chat: bool | None = None, extra: list | None = None,
                    stop_when=None) -> list:
    """Generate k samples per prompt with one fixed config per prompt (dict of temperature/top_p/top_k/
    repetition_penalty), all through `adm.generate(force=...)`. When every config is greedy (temperature 0) the
    k samples are identical by construction, so one row per prompt is generated and replicated."""
    if len(configs) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(configs)} configs")
    greedy = all(float(c.get("temperature", 1.0)) == 0.0 for c in configs)
    per = 1 if greedy else num_samples
    keys = sorted({k for c in configs for k in c})
    force = {k: [c.get(k, NEUTRAL.get(k)) for c in configs for _ in range(per)] for k in keys}
    out = adm.generate_text(list(prompts), chat=chat, max_new_tokens=max_new_tokens, num_return_sequences=per,
                            force=force, stop_when=stop_when, **seeding(seed, per))
    return split_output(out, len(prompts), num_samples, replicate=greedy, extra=extra)
