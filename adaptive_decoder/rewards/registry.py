"""How a reward spec becomes a reward: the registry (`@register_reward`, import paths, entry points), the adapter
of TRL-style functions, the check of every score, and the weighted composite (the package docstring,
`adaptive_decoder.rewards`, gives the rules)."""

from __future__ import annotations

import importlib
import inspect
import math


from .metrics import (BLEU, ChrF, ConceptCoverage, DistinctValid, ExactMatch, GSM8KCorrectness, Novelty, Repetition,
                      _check_batch)
from .lists import DistinctItems
from .scorers import Fluency, RewardModelScorer

# --------------------------------------------------------------------------------------------------------
# Rewards of the TRL convention, and the check of every score
# --------------------------------------------------------------------------------------------------------


def _call_params(fn) -> tuple[list[str], bool, list[str]]:
    """(keyword-passable parameter names, whether it takes **kwargs, the names without default) of a callable;
    for a class, of its constructor. A callable without a signature (a C builtin) counts as taking **kwargs."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return [], True, []
    names, var_kw, required = [], False, []
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.append(p.name)
            if p.default is p.empty:
                required.append(p.name)
    return names, var_kw, required


# the keywords a reward function receives from the call itself, never from an option or an example field
_CALL_KEYWORDS = ("completions", "prompts")


class FunctionReward:
    """A reward function in TRL's convention (`GRPOTrainer(reward_funcs=...)`) as a reward with `name` and `score`.

    `score(completions, examples)` calls `fn(completions=completions, prompts=[e["prompt"] ...], **columns,
    **fixed)`: every example field other than "prompt" becomes one keyword list aligned with the completions
    (None where an example lacks the field), the layout in which TRL passes a dataset's columns. A function with
    **kwargs receives every field, as in TRL; one without receives only those it names, and a parameter without
    a default that no field or option provides is an error naming the reward and the field, raised before the
    call. `fixed` (the spec's options) is passed on every call and replaces an example field of the same name.
    `needs_group` / `allow_nonfinite` are the function's attributes of that name, False when absent (the module
    docstring says what they declare). The returned list is checked by `CompositeReward.score_components`; TRL's
    None for "not applicable" is refused there, since a spec applies its rewards to every sample of its task.
    """

    def __init__(self, fn, name: str | None = None, **fixed):
        if not callable(fn):
            raise TypeError(f"reward {name!r}: {fn!r:.80} is not callable")
        self.fn, self.fixed = fn, fixed
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.needs_group = bool(getattr(fn, "needs_group", False))
        self.allow_nonfinite = bool(getattr(fn, "allow_nonfinite", False))
        params, self._var_kw, self._required = _call_params(fn)
        self._params = set(params)
        if "completions" not in self._params and not self._var_kw:
            raise TypeError(f"reward {self.name!r} takes no 'completions' argument; a reward function is called as "
                            "fn(completions=[...], prompts=[...], **example_fields)")
        bad = sorted(set(fixed) & set(_CALL_KEYWORDS)) or ([] if self._var_kw else sorted(set(fixed) - self._params))
        if bad:
            raise ValueError(f"unknown key(s) {bad} for reward {self.name!r}; valid: "
                             f"{sorted(self._params - set(_CALL_KEYWORDS))}")

    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        _check_batch(completions, examples, self.name)
        fields = list(dict.fromkeys(k for e in examples for k in e))
        kwargs = {k: [e.get(k) for e in examples] for k in fields if k not in ("prompt", *_CALL_KEYWORDS)}
        kwargs["prompts"] = [e.get("prompt") for e in examples]
        kwargs.update(self.fixed)
        if not self._var_kw:
            kwargs = {k: v for k, v in kwargs.items() if k in self._params}
        missing = [p for p in self._required if p != "completions" and p not in kwargs]
        if missing:
            raise ValueError(f"reward {self.name!r} needs the field {missing[0]!r} in every example; got fields {fields}")
        return self.fn(completions=list(completions), **kwargs)


def checked_scores(name: str, reward, values, n: int) -> list[float]:
    """`values` (what reward `name` returned for n completions) as n floats, or a one-line error naming the reward:
    TypeError for something that is not a list or holds a non-number (None, a string), ValueError for another
    length or for NaN / inf (unless the reward declares `allow_nonfinite`)."""
    try:
        if isinstance(values, (str, bytes, dict)):
            raise TypeError  # iterable, but never a list of scores
        vals = list(values)
    except TypeError:
        raise TypeError(f"reward {name!r} returned {type(values).__name__}, not a list of {n} numbers (one per "
                        "completion)") from None
    if len(vals) != n:
        raise ValueError(f"reward {name!r} returned {len(vals)} scores for {n} completions; it must return one number "
                         "per completion")
    allow = bool(getattr(reward, "allow_nonfinite", False))
    out = []
    for i, x in enumerate(vals):
        try:
            if x is None or isinstance(x, (str, bytes)):
                raise TypeError
            f = float(x)
        except (TypeError, ValueError):
            raise TypeError(f"reward {name!r} returned a non-number at index {i}: {x!r:.60} ({type(x).__name__}); it "
                            "must return one float per completion") from None
        if not math.isfinite(f) and not allow:
            raise ValueError(f"reward {name!r} returned {f} at index {i}; scores must be finite (or declare "
                             "allow_nonfinite: true to keep them and leave those samples out of the pairs)")
        out.append(f)
    return out


# --------------------------------------------------------------------------------------------------------
# Composite
# --------------------------------------------------------------------------------------------------------


class CompositeReward:
    """Weighted sum of named rewards: total = sum_k weight_k * reward_k. `components`: {name: (reward, weight)}.

    `score_components` is where every reward's scores are consumed (the collection, the evaluation and the HAG
    search all score through it), so it checks each component's list (`checked_scores`) before any total exists:
    a broken reward stops the batch before the caller writes it."""

    name = "composite"

    def __init__(self, components: dict):
        if not components:
            raise ValueError("CompositeReward needs at least one component")
        for key, val in components.items():
            if not (isinstance(val, tuple) and len(val) == 2 and hasattr(val[0], "score")):
                raise ValueError(f"component {key!r} must be a (reward, weight) tuple, got {val!r}")
            w = val[1]
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ValueError(f"component {key!r}: weight must be a finite number, got {w!r}")
        if "total" in components:
            raise ValueError("'total' is reserved for the weighted sum; rename that component")
        self.components = dict(components)

    def score_components(self, completions: list[str], examples: list[dict]) -> dict[str, list[float]]:
        _check_batch(completions, examples, self.name)
        n = len(completions)
        out = {k: checked_scores(k, r, r.score(completions, examples), n) for k, (r, _) in self.components.items()}
        out["total"] = [sum(self.components[k][1] * out[k][i] for k in self.components) for i in range(n)]
        return out

    def score(self, completions: list[str], examples: list[dict]) -> list[float]:
        return self.score_components(completions, examples)["total"]


# --------------------------------------------------------------------------------------------------------
# Registry: registered names, import paths, entry points
# --------------------------------------------------------------------------------------------------------

ENTRY_POINT_GROUP = "adaptive_decoder.rewards"
# spec options that declare what a reward is (see the module docstring), accepted by every reward
FLAG_OPTIONS = ("needs_group", "allow_nonfinite")
REWARDS: dict = {}  # name -> reward class, reward function or reward object
# Constructor arguments that come from build_reward's own arguments, not from the YAML spec.
_INJECTED = {"fluency": {"model", "tokenizer"}, "reward_model": {"policy_device"}}
_ALIASES = {"reward_model": {"path": "model_or_path"}}


def _qualname(obj) -> str:
    target = obj if hasattr(obj, "__qualname__") else type(obj)
    return f"{getattr(target, '__module__', '?')}.{target.__qualname__}"


def register_reward(name: str):
    """Decorator registering a reward class, reward function or reward object under `name`, so that a reward spec
    can name it (`@register_reward("keyword_bonus")` above `def keyword_bonus(completions, **kwargs)`).

    The registry is `REWARDS`, which also holds the built-ins. Registering the same object again (a module
    imported twice) is a no-op; another object under a taken name is an error, so a plugin cannot silently
    replace a built-in. Names never contain ':', which marks an import path."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"reward name must be a non-empty string without ':' (':' marks an import path), got {name!r}")

    def deco(obj):
        old = REWARDS.get(name)
        if old is not None and _qualname(old) != _qualname(obj):
            raise ValueError(f"reward name {name!r} is already registered to {_qualname(old)}; register "
                             f"{_qualname(obj)} under another name")
        REWARDS[name] = obj
        return obj

    return deco


for _builtin in (GSM8KCorrectness, ChrF, BLEU, ConceptCoverage, Repetition, Novelty, ExactMatch, DistinctValid,
                 DistinctItems, Fluency, RewardModelScorer):
    register_reward(_builtin.name)(_builtin)


def _entry_points() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_rewards() -> list[str]:
    """Every reward name a spec accepts without an import path: registered names and installed entry points."""
    return sorted(set(REWARDS) | set(_entry_points()))


def _unknown(name) -> str:
    return f"unknown reward {name!r}; valid: {available_rewards()} (or an import path 'module:attribute')"


def _import_path(path: str):
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"reward {path!r}: an import path is 'module:attribute', e.g. my_pkg.rewards:keyword_bonus")
    try:
        obj = importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise ValueError(f"reward {path!r}: cannot import {module!r} ({e}); install it or add its directory to "
                         "PYTHONPATH") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"reward {path!r}: module {module!r} has no attribute {attr!r}; check the name after ':'")
        obj = getattr(obj, part)
    return obj


def resolve_reward(name: str):
    """The class, function or object a reward spec key names: a registered name, else an import path
    'module:attribute', else an entry point of group `adaptive_decoder.rewards` (loaded on first use). Raises a
    one-line ValueError (unknown name, missing module or attribute) or TypeError (not callable) naming the key."""
    if not isinstance(name, str):
        raise ValueError(f"reward names must be strings, got {name!r}")
    if name in REWARDS:
        obj = REWARDS[name]
    elif ":" in name:
        obj = _import_path(name)
    else:
        eps = _entry_points()
        if name not in eps:
            raise ValueError(_unknown(name))
        try:
            obj = eps[name].load()
        except (ImportError, AttributeError) as e:
            raise ValueError(f"reward {name!r}: its entry point {eps[name].value!r} (group {ENTRY_POINT_GROUP}) does not "
                             f"load: {e}") from None
    if not (isinstance(obj, type) or hasattr(obj, "score") or callable(obj)):
        raise TypeError(f"reward {name!r}: {type(obj).__name__} {obj!r:.60} is not callable; name a reward class, a "
                        "reward function or an object with score(completions, examples)")
    return obj


def _option_keys(name: str, obj) -> list[str] | None:
    if not isinstance(obj, type) and hasattr(obj, "score"):
        return ["weight", *FLAG_OPTIONS]  # a ready object: nothing to construct
    params, var_kw, _ = _call_params(obj)
    if var_kw:
        return None
    params = [p for p in params if p not in _INJECTED.get(name, set()) and p not in _CALL_KEYWORDS]
    aliases = {v: k for k, v in _ALIASES.get(name, {}).items()}
    return ["weight"] + [aliases.get(p, p) for p in params] + list(FLAG_OPTIONS)


def reward_options(name: str) -> list[str] | None:
    """The option keys the spec entry of reward `name` accepts: weight, the class's constructor arguments or the
    function's parameters, and the FLAG_OPTIONS; None when it takes **kwargs (any key)."""
    return _option_keys(name, resolve_reward(name))


def spec_needs_group(name: str, opts: dict | None) -> bool:
    """Whether the spec entry `name: opts` compares the samples of a prompt (`needs_group`), without building it:
    the option when given, else the class's or function's attribute."""
    opts = opts or {}
    if "needs_group" in opts:
        return bool(opts["needs_group"])
    return bool(getattr(resolve_reward(name), "needs_group", False))


def _instantiate(name: str, obj, opts: dict):
    flags = {k: opts.pop(k) for k in FLAG_OPTIONS if k in opts}
    for k, v in flags.items():
        if not isinstance(v, bool):
            raise ValueError(f"reward {name!r}: {k} must be true or false, got {v!r}")
    if isinstance(obj, type):
        reward = obj(**opts)
        if not hasattr(reward, "score"):
            if not callable(reward):
                raise TypeError(f"reward {name!r}: {_qualname(obj)} instances have neither score(completions, "
                                "examples) nor __call__")
            reward = FunctionReward(reward, name)  # a callable class of the TRL convention
    elif hasattr(obj, "score"):
        reward = obj
    else:
        reward = FunctionReward(obj, name, **opts)
    for k, v in flags.items():
        setattr(reward, k, v)
    return reward


def group_components(reward) -> list[str]:
    """Names of the components of a reward (a CompositeReward, or an object wrapping one as `.reward`) whose value
    for a sample depends on the other samples of its prompt (`needs_group`, e.g. novelty)."""
    inner = getattr(reward, "reward", reward)
    comps = getattr(inner, "components", None)
    if comps is None:
        return [getattr(inner, "name", "reward")] if getattr(inner, "needs_group", False) else []
    return [k for k, (c, _) in comps.items() if getattr(c, "needs_group", False)]


def needs_group(reward) -> bool:
    return bool(group_components(reward))


def check_reward_spec(spec) -> dict:
    """Validate a reward spec without building it: every key resolves (`resolve_reward`: unknown names are listed
    with the valid ones, a key that does not import names what is missing) and every option is one its reward
    takes. Returns {key: the resolved object}. `build_reward` runs it first; a config that carries a spec (a
    task's `reward:` option) runs it on load, so a typo stops the run before its first stage."""
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"reward spec must be a non-empty mapping of reward name -> options, got {spec!r}; valid names: "
                         f"{available_rewards()}")
    unknown = [k for k in spec if not (isinstance(k, str) and (k in REWARDS or ":" in k))]
    if unknown:
        eps = _entry_points()
        unknown = [k for k in unknown if k not in eps]
    if unknown:
        raise ValueError(f"unknown reward name(s) {unknown}; valid: {available_rewards()} (or an import path "
                         "'module:attribute')")
    objs = {}
    for name, opts in spec.items():
        if opts is not None and not isinstance(opts, dict):
            raise ValueError(f"reward {name!r}: options must be a mapping, got {opts!r}")
        objs[name] = obj = resolve_reward(name)
        valid = _option_keys(name, obj)
        bad = [k for k in (opts or {}) if valid is not None and k not in valid]
        if bad:
            raise ValueError(f"unknown key(s) {bad} for reward {name!r}; valid: {valid}")
    return objs


def build_reward(spec: dict, model=None, tokenizer=None) -> CompositeReward:
    """Composite reward from a YAML-style dict {reward: {"weight": w, **options}}; each key is resolved by
    `resolve_reward` (a registered name, an import path 'module:attribute' or an entry point).

    Options go to a class's constructor, or to a plain function as fixed keywords of every call (`FunctionReward`);
    `needs_group` / `allow_nonfinite` set those attributes on the built reward. `model`/`tokenizer` are the scorer
    LM for "fluency" (normally the frozen base model); `model`'s device is where a reward_model goes unless its
    `device:` / `device_map:` say otherwise. A reward_model entry takes `path:` (a local dir or hub id) plus
    batch_size / max_length / label_index / device / device_map / dtype / revision / trust_remote_code (see
    RewardModelScorer). Unknown reward names or keys raise ValueError naming them and listing the valid ones; a key
    that does not import raises naming the key and what is missing.
    """
    objs = check_reward_spec(spec)
    comps = {}
    for name, opts in spec.items():
        obj, opts = objs[name], dict(opts or {})
        weight = opts.pop("weight", 1.0)
        for alias, real in _ALIASES.get(name, {}).items():
            if alias in opts:
                opts[real] = opts.pop(alias)
        opts.update({k: v for k, v in (("model", model), ("tokenizer", tokenizer)) if k in _INJECTED.get(name, ())})
        if name == "reward_model" and model is not None:  # its default place, and the CPU-placement warning
            opts["policy_device"] = next(model.parameters()).device
        if name == "reward_model" and "model_or_path" not in opts:
            raise ValueError("reward 'reward_model' needs 'path:' (local dir or hub id of a sequence-classification model)")
        comps[name] = (_instantiate(name, obj, opts), weight)
    return CompositeReward(comps)
