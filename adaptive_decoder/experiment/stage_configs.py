"""Each stage's typed config, composed from the experiment's: the one place where an `ExperimentConfig` becomes the
`CollectionSettings` of a collect stage, the `LPOConfig` of a train stage or the `EvalConfig` of an eval stage.

TRL's pattern (one parser, several typed dataclasses), with the experiment in the parser's place. The experiment's
YAML holds one delta per stage dataclass (`collect:`, `lpo:`, `eval:`); the `ExperimentConfig` field holding it
names the dataclass in its type (`Annotated[..., StageOf("module:Class")]`), and the delta is checked against that
dataclass's fields when the config is built. The experiment sets some fields of every stage itself, from its
top-level options (the seed, the run directory's paths, the generation length, the chat template, the sampling
backend, the base LM): those are the stage dataclass's fields typed `Managed[...]` (`adaptive_decoder.configs`),
plus, in a stage that is a `ModelArguments`, every base-LM field (one experiment runs one LM). A delta may not set a
managed field.

`stage_config` builds a stage's dataclass from three layers, later ones winning: the user's delta, the values the
experiment derives from it and its other options (a default it picks where the delta is silent, a mapping of the
delta it extends), the managed values. A managed value for a field that is not marked managed is
refused (`compose`): the marks are the one list of what the experiment owns, and the values it writes cannot drift
from them.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import fields
from pathlib import Path

from ..configs import MANAGED, StageOf, field_marks
from ..methods.base import registered_methods

STAGE_OPTIONS = {"collect": "collect", "train": "lpo", "eval": "eval"}  # stage kind -> the field with its delta


def stage_fields(cfg) -> dict[str, str]:
    """{field of the experiment config: the "module:Class" of the stage dataclass it holds a delta of}."""
    return {name: m.target for name, marks in field_marks(type(cfg)).items() for m in marks if isinstance(m, StageOf)}


def stage_class(cfg, name: str) -> type:
    """The stage dataclass the experiment config's field `name` (collect, lpo, eval) holds a delta of."""
    module, cls = stage_fields(cfg)[name].split(":")
    return getattr(importlib.import_module(module), cls)


def managed_fields(cls) -> set[str]:
    """The fields of stage dataclass `cls` the experiment sets itself (module docstring)."""
    from ..modeling.model_args import ModelArguments

    model = {f.name for f in fields(ModelArguments)} if issubclass(cls, ModelArguments) else set()
    return model | {name for name, marks in field_marks(cls).items() if MANAGED in marks}


def check_delta(name: str, cls, opts: dict) -> None:
    """Refuse, in one line naming them, keys of the `name` delta that `cls` lacks or that the experiment sets."""
    valid = {f.name for f in fields(cls)}
    managed = managed_fields(cls)
    settable = sorted(valid - managed)
    taken = sorted(set(opts) & managed)
    if taken:
        raise ValueError(f"{name}: {taken} are set by the experiment itself (use the top-level options); "
                         f"settable here: {settable}")
    unknown = sorted(set(opts) - valid)
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {unknown}; valid: {settable}")


def compose(cls, delta: dict, managed: dict, derived: dict | None = None):
    """`cls(**{**delta, **derived, **managed})`, once every key of `managed` is a managed field of `cls`."""
    stray = sorted(set(managed) - managed_fields(cls))
    if stray:
        raise TypeError(f"{cls.__name__}: the experiment sets {stray}, which are not marked managed")
    return cls(**{**delta, **(derived or {}), **managed})


def option(cfg, name: str, key: str):
    """A stage option's value: the one in the `name` delta, else the stage dataclass's default."""
    if key in getattr(cfg, name):
        return getattr(cfg, name)[key]
    f = {f.name: f for f in fields(stage_class(cfg, name))}[key]
    return f.default_factory() if callable(f.default_factory) else f.default


def stage_dir(run_dir, seed: int, kind: str, level: str | None = None) -> Path:
    """run_dir/seed-<seed>/<kind>[-<level>]: where a stage writes."""
    return Path(run_dir) / f"seed-{seed}" / (f"{kind}-{level}" if level else kind)


def head_path(run_dir, seed: int, level: str) -> Path:
    """The head a train stage saves (and the eval stage evaluates)."""
    return stage_dir(run_dir, seed, "train", level) / "head"


def stage_config(cfg, kind: str, seed: int, level: str | None = None):
    """The typed config of stage `kind` (collect, train, eval) of `seed` (and head `level`: collect, train)."""
    if kind not in STAGE_OPTIONS:
        raise ValueError(f"stage kind must be one of {sorted(STAGE_OPTIONS)}, got {kind!r}")
    name = STAGE_OPTIONS[kind]
    cls = stage_class(cfg, name)
    build = {"collect": _collect, "train": _train, "eval": _eval}[kind]
    managed, derived = build(cfg, seed, level)
    return compose(cls, getattr(cfg, name), managed, derived)


def _collect(cfg, seed, level) -> tuple[dict, dict]:
    # pairs beyond best-vs-worst use other samples too: cache them all, or every LPO epoch would recompute
    # their head inputs with the LM (a small MLP epoch becoming an LM forward per sample)
    wide = "cache_which" not in cfg.collect and option(cfg, "lpo", "pair_mode") != "best_vs_worst"
    return {"seed": seed, "max_new_tokens": cfg.max_new_tokens, "chat": cfg.chat,
            "stop_when_scored": cfg.stop_when_scored, "backend": cfg.backend}, {"cache_which": "all"} if wide else {}


def _train(cfg, seed, level) -> tuple[dict, dict]:
    collection = stage_dir(cfg.run_dir, seed, "collect", level)
    return {"output_dir": str(stage_dir(cfg.run_dir, seed, "train", level)), "collection_dir": str(collection),
            "head_path": str(collection / "collect_head"), "seed": seed, "resume": True,
            "torch_threads": cfg.torch_threads, "progress": cfg.progress, "report_to": cfg.report_to,
            "base_model": cfg.model}, {}


def _eval(cfg, seed, level) -> tuple[dict, dict]:
    from ..modeling.model_args import MODEL_LOAD_FIELDS

    sizes = [cfg.split_sizes(t) for t in cfg.tasks]  # split_examples returns exactly these sizes
    return {"model": cfg.model, "dtype": cfg.dtype, "device": cfg.device, "torch_threads": cfg.torch_threads,
            **{k: getattr(cfg, k) for k in MODEL_LOAD_FIELDS}, "chat": cfg.chat,
            "tasks": {t: cfg.task_options(t) for t in cfg.tasks},
            # the experiment's splits replace the evaluator's own; these only have to be valid for every task
            "num_prompts": min(s["num_test"] for s in sizes), "num_dev_prompts": min(s["num_dev"] for s in sizes),
            "methods": list(cfg.methods), "temperatures": list(cfg.temperatures),
            "head_paths": [str(head_path(cfg.run_dir, seed, lv)) for lv in cfg.levels],
            "output_dir": str(stage_dir(cfg.run_dir, seed, "eval")), "seed": seed, "max_new_tokens": cfg.max_new_tokens,
            "progress": cfg.progress, "report_to": cfg.report_to, "n_bootstrap": cfg.n_bootstrap,
            "stop_when_scored": cfg.stop_when_scored, "backend": cfg.backend}, {"method_options": _method_options(cfg)}


def _method_options(cfg) -> dict:
    """The eval delta's method_options, plus what the experiment derives: the head's bins for the methods that
    draw from them (random, best-joint: the active factors' bins, the fixed value otherwise) and HAG's model."""
    mo = option(cfg, "eval", "method_options") or {}
    mo = dict(json.loads(mo) if isinstance(mo, str) else mo)
    random_methods = [m for m in registered_methods(uses_head_bins=True) if m in cfg.methods]
    if random_methods:
        from ..modeling.head import AdaptiveDecoderConfig

        hc = AdaptiveDecoderConfig.from_dict({**cfg.head, "hidden_size": 1})
        bins = {f"{f}_bins": hc.bins(f) if f in hc.factors else [hc.fixed[f]] for f in ("temperature", "top_p", "top_k")}
        for m in random_methods:
            mo[m] = {**bins, **dict(mo.get(m) or {})}
    if cfg.hag_model_path:
        mo["hag"] = {"model_path": cfg.hag_model_path, **dict(mo.get("hag") or {})}
    return mo
