"""The decoding-policy interface, the method registry with each method's traits, and the roles reports test.

A policy decides the decoding hyperparameters; the tokens always come from `AdaptiveDecodingModel.generate`
(`force=` for fixed configs, the head for AD), so differences between methods come only from the policy:

    policy.generate(adm, prompts, num_samples=k, max_new_tokens=64, seed=0) -> [PolicyOutput per prompt]

This module sits below every policy implementation (`policies`, `fitted`, `samplers`, `hag`): they import the
interface and `forced_generate` from here and register their method builders here, so no policy module imports
another one back. Importing any module of this package registers the built-in methods (the package's
`__init__`); `adaptive_decoder.hag.policy` registers HAG's.

Registry: `@register_policy("name", policy=Class, **traits)` on a function `(**options) -> [policies]` makes
`name` a method of `build_policies` and of the evaluation config (one name may expand to several policies, e.g. a
grid). A method describes itself in two places, each fact once:
- its policy class: `role` (what it is for in the comparisons), `needs_dev` (fitted on the dev split through
  `fit(DevResults)`: `adaptive_decoder.methods.fitted`) and `pooled` (that fit reads every task at once);
- its registration (`MethodTraits`): `takes_heads`, `uses_head_bins`, `is_control` and `run_options`, which
  differ between methods that share a class (the oracle is a control, best_joint is not).
The harness and the experiment read these traits (`method_traits`, `registered_methods`, `controls`) and never
test a class or a method name; `build_policies` refuses a builder whose policies are not of its declared class,
so the traits read before building are those of what runs.

Roles: `describe()` writes the role into results.json next to the class name, and reports select methods by role
(`role_of`), never by class name. A description without a role is read through the registered classes' roles
(`role_of_type`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..modeling.generation import AdaptiveDecodingModel
from ..modeling.noise import seeding
from ..modeling.sampling import NEUTRAL

# roles of the policies that decode one fixed config per task (nothing chosen per prompt or token): reports leave
# them out of the chosen-parameter distributions
FIXED_CONFIG_ROLES = ("fixed", "greedy", "oracle", "sampler", "meanshift")


@dataclass
class PolicyOutput:
    """The k samples of one prompt."""

    texts: list
    completion_ids: list
    values: list                     # per sample: {generation.VALUE_KEYS (+ forced samplers)} -> float
                                     # (token level: a list per step, real steps only)
    extra: dict = field(default_factory=dict)   # e.g. {"choices": [...]} for AD, {"config_text", "parse_failed"} for HAG


class DecodingPolicy:
    """Base class. Subclasses set `name` and `role` and implement `generate`.

    Class traits: `role` (see the module docstring); `needs_dev` and `pooled` are set by the dev-fitted policies
    (`adaptive_decoder.methods.fitted.DevFittedPolicy`), the only ones with a `fit`."""

    name: str = "policy"
    role: str = "policy"
    needs_dev: bool = False  # fitted on the dev split before it decodes a test prompt
    pooled: bool = False     # that fit reads the dev units of every task at once (else of one task)

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

    def fixed_config(self) -> dict | None:
        """The one config (temperature, top_p, ...) this policy decodes every prompt with through `forced_generate`,
        or None when it chooses per prompt or token. Two policies with equal fixed configs give the same samples for
        the same prompts and seed, which is what lets the harness copy units between them."""
        return None

    def output_extra(self) -> dict:
        """What `generate` adds to every output's `extra` beyond the samples (a copied unit gets it too)."""
        return {}

    def dev_policies(self) -> list:
        """The policies this one runs on the dev split before its fit (none unless `needs_dev`)."""
        return []

    def heads(self) -> dict:
        """{policy name: saved head directory} of the trained heads it decodes with (a resumed run checks their
        weights)."""
        return {}

    def check_model(self, adm: AdaptiveDecodingModel) -> None:
        """Refuse an evaluated model this policy cannot decode with, before any generation (a head trained on
        another base model); every model is accepted unless a subclass says otherwise."""


# ------------------------------------------------------------------------------------------------------------
RUN_OPTIONS = ("temperatures", "top_p", "top_k", "budget")


@dataclass(frozen=True)
class MethodTraits:
    """What a registered method is, read before it is built. `needs_dev`, `pooled` and `role` are its policy class's."""

    policy: type = DecodingPolicy  # the class of every policy its builder returns
    takes_heads: bool = False      # gets the evaluation's trained heads (head_paths, strict_base_model, model_name)
    uses_head_bins: bool = False   # the experiment gives it its head's bins (temperature_bins, top_p_bins, top_k_bins)
    is_control: bool = False       # a reference an adaptive head is paired with: does it beat choosing without learning?
    run_options: tuple = ()        # RUN_OPTIONS it takes from the evaluation: the fixed grid (temperatures, top_p,
                                   # top_k) and budget, its size (a tuned method gets as many candidates as it has)

    def __post_init__(self):
        bad = sorted(set(self.run_options) - set(RUN_OPTIONS))
        if bad:
            raise ValueError(f"unknown run option(s) {bad}; valid: {list(RUN_OPTIONS)}")
        if not (isinstance(self.policy, type) and issubclass(self.policy, DecodingPolicy)):
            raise TypeError(f"policy= must be a DecodingPolicy subclass, got {self.policy!r}")

    @property
    def needs_dev(self) -> bool:
        return self.policy.needs_dev

    @property
    def pooled(self) -> bool:
        return self.policy.pooled

    @property
    def role(self) -> str:
        return self.policy.role


POLICIES: dict[str, Callable[..., list]] = {}
TRAITS: dict[str, MethodTraits] = {}


def register_policy(*names: str, policy: type = DecodingPolicy, **traits):
    """Decorator: register a builder `(**options) -> [policies of class `policy`]` under each of `names`, with the
    method's `MethodTraits` (`takes_heads=`, `uses_head_bins=`, `is_control=`, `run_options=`)."""
    described = MethodTraits(policy=policy, **traits)

    def deco(fn):
        for n in names:
            if n in POLICIES and POLICIES[n] is not fn:
                raise ValueError(f"method {n!r} is already registered by {POLICIES[n].__module__}."
                                 f"{POLICIES[n].__qualname__}")
            POLICIES[n], TRAITS[n] = fn, described
        return fn
    return deco


def method_traits(method: str) -> MethodTraits:
    """The traits of a registered method."""
    if method not in TRAITS:
        raise ValueError(f"unknown method {method!r}; valid: {sorted(POLICIES)}")
    return TRAITS[method]


def registered_methods(**where) -> list:
    """The registered methods whose traits equal `where` (e.g. needs_dev=True), in registration order."""
    return [m for m, t in TRAITS.items() if all(getattr(t, k) == v for k, v in where.items())]


def controls(names) -> list:
    """The controls among `names` (method names; a policy carries its method's name unless renamed): the references
    an adaptive head is paired with besides the fixed grid."""
    return [n for n in names if n in TRAITS and TRAITS[n].is_control]


def role_of_type() -> dict:
    """{class name: role} of every registered method's policy class."""
    return {t.policy.__name__: t.policy.role for t in TRAITS.values()}


def role_of(description: dict) -> str:
    """The role of a method from its `describe()` dict: its "role", else its registered class's ("policy" for a
    class no registered method builds, which reports treat like any other chooser)."""
    return description.get("role") or role_of_type().get(description.get("type"), DecodingPolicy.role)


def build_policies(method: str, **options) -> list:
    """Policies for one method name of the registry (a grid method expands to several)."""
    if method not in POLICIES:
        raise ValueError(f"unknown method {method!r}; valid: {sorted(POLICIES)}")
    try:
        built = POLICIES[method](**options)
    except TypeError as e:  # an unexpected keyword from a config file
        raise ValueError(f"bad options for method {method!r}: {e}") from None
    cls = TRAITS[method].policy
    wrong = [type(p).__name__ for p in built if not isinstance(p, cls)]
    if wrong:
        raise TypeError(f"method {method!r} is registered with policy={cls.__name__} but built {wrong}; register it "
                        "with the class it builds (its traits are read from that class)")
    return built


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
