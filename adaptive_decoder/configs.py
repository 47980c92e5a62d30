"""Helpers for dataclass configs loaded from YAML and overridden on the command line.

Config deltas: a YAML config may name another one with `include: <path>` (lm-eval's convention), the path
relative to the including file's directory. The included file is read first (it may include another), then every
key of the including file replaces the included value whole, nested mappings included: `head: {...}` in a delta
is the complete head mapping, not a patch of the base's. That is how a mapping given on the command line
(`--head '{...}'`) overrides the file too, and it means a delta can drop a nested key (key-by-key merging could
not), so a delta reads as "the base, with these keys as written here". Nothing else in a file is rebased: data
paths inside a config stay relative to the working directory. A missing included file or an include cycle is a
one-line ConfigError.

Resume checks: a run directory records the settings its results depend on (a collection's manifest, an experiment
stage's fingerprint, an evaluation's or HAG search's config file), and a rerun refuses to add to it under other
settings. `changed_keys` and `describe_changes` are the one comparison those checks make, by top-level key or by
nested path with both values.

Field marks say who sets a config field, as `typing.Annotated` metadata of its type: `Managed[T]` (a driver running
several stages, the experiment, sets the field for all of them, so a stage's options may not) and
`Annotated[T, StageOf("module:Class")]` (the field holds a delta of that stage dataclass);
`adaptive_decoder.experiment.stage_configs` reads them with `field_marks`. In the type, not in `field(metadata=...)`:
`HfArgumentParser` (and so `TrlParser`) passes every metadata key on to argparse's `add_argument`, which refuses
unknown ones, and resolves the types without their Annotated extras, so a marked config still parses everywhere.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, TypeVar

_T = TypeVar("_T")
MANAGED = "managed"  # the Annotated mark of `Managed`
Managed = Annotated[_T, MANAGED]  # a field the experiment sets for every stage (module docstring)


@dataclass(frozen=True)
class StageOf:
    """The Annotated mark of a field that holds a delta of the stage dataclass `target` ("module:Class")."""

    target: str


def field_marks(cls) -> dict[str, tuple]:
    """{field name: the Annotated metadata of its type} of dataclass `cls` (empty tuples for unmarked fields)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: getattr(hints[f.name], "__metadata__", ()) for f in fields(cls)}


def as_mapping(name: str, value) -> dict:
    """The value of a config field that holds a mapping.

    From a YAML file the field arrives as a dict; from the command line (and from `wandb agent`, which passes
    `--head={'level': 'token'}`) it arrives as text, parsed here as YAML, a superset of JSON. None means empty.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        import yaml  # noqa: PLC0415

        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ValueError(f"{name} must be a mapping (YAML/JSON text on the command line), got {value!r} ({e})") from None
        value = parsed if parsed is not None else value
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a mapping, got {type(value).__name__}: {value!r}")
    return dict(value)


def check_backend(backend: str, vllm_options: dict | None = None) -> None:
    """The sampling backend of a stage ('hf' or 'vllm'), and its vLLM engine options, which only a vLLM engine reads:
    refused by name under another backend rather than ignored."""
    if backend not in ("hf", "vllm"):
        raise ValueError(f"backend must be 'hf' or 'vllm', got {backend!r}")
    if vllm_options and backend != "vllm":
        raise ValueError(f"vllm_options {vllm_options} given with backend {backend!r}; they apply to backend 'vllm'")


def changed_keys(old: dict, new: dict) -> list[str]:
    """The top-level keys whose values differ between recorded settings and the current ones (a key present on
    one side only counts), sorted."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def describe_changes(old, new, prefix: str = "") -> list[str]:
    """Every leaf where two nested mappings differ, as "a.b: stored X, now Y", in path order (mappings are
    compared key by key; anything else as a whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += describe_changes(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: stored {old!r}, now {new!r}"]


class ConfigError(ValueError):
    """A mistake in a recipe's YAML config or command line: recipes print it as one line and exit with status 2."""


INCLUDE_KEY = "include"


def load_config(path) -> dict:
    """The mapping a YAML config file holds, with its `include:` chain resolved (see the module docstring)."""
    return _load_config(Path(path), [])


def _load_config(path: Path, chain: list) -> dict:
    import yaml  # noqa: PLC0415

    seen = [p.resolve() for p in chain]
    if path.resolve() in seen:
        loop = " -> ".join(str(p) for p in chain[seen.index(path.resolve()):] + [path])
        raise ConfigError(f"include cycle: {loop}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (f" (included by {chain[-1]})" if chain else ""))
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path} must hold a YAML mapping of option: value, got {type(cfg).__name__}")
    if INCLUDE_KEY not in cfg:
        return cfg
    include = cfg.pop(INCLUDE_KEY)
    if not isinstance(include, str) or not include:
        raise ConfigError(f"{path}: {INCLUDE_KEY} must be the path of one YAML file, got {include!r}")
    return {**_load_config(path.parent / include, chain + [path]), **cfg}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's usage examples as written and shows each option's default."""


def _suggest(name: str, known) -> str:
    """' (did you mean ...?)' for a misspelt or abbreviated name: the names it is a prefix of, else the closest."""
    known = sorted(known)
    close = [k for k in known if k.startswith(name)][:3] or difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def recipe_parser(dataclass_types, description: str | None = None):
    """A `trl.TrlParser` for a recipe: `--config FILE` plus one flag per dataclass field.

    Differences from a bare TrlParser, each a mistake a bare one lets through or hides: abbreviated flags are refused
    (argparse would take `--temp 0.3` as `--temperatures`), `--help` shows `--config` and the recipe's docstring,
    and a bool field's `--no_X` says what it does instead of repeating `--X`'s help.
    """
    from trl import TrlParser  # noqa: PLC0415  (trl is heavy: import it only in recipes)

    parser = TrlParser(dataclass_types, description=description, formatter_class=_HelpFormatter, allow_abbrev=False,
                       usage="%(prog)s [--config FILE] [--OPTION VALUE ...]")
    group = parser.add_argument_group("config file")
    # SUPPRESS: TrlParser takes --config out of argv before parsing, so this entry only documents it
    group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="YAML file whose keys set any of the options below; flags given here override it.")
    for action in parser._actions:
        for opt in action.option_strings:
            if opt.startswith("--no_") and action.const is False:
                action.help = f"Set {opt[len('--no_'):]} to False."
                action.default = argparse.SUPPRESS  # the --X action holds the field's default; no "(default: False)"
    return parser


def named_config(value: str, config_dir=None) -> str:
    """The file `--config value` means: `value` itself, unless no such file exists and `value` is a bare name (no
    directory, no .yaml) of a file `<config_dir>/<value>.yaml`, a config shipped with the recipe."""
    if config_dir is None or Path(value).exists() or not re.fullmatch(r"[A-Za-z0-9_\-]+", value):
        return value
    path = Path(config_dir) / f"{value}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in Path(config_dir).glob("*.yaml"))
        raise ConfigError(f"config file not found: {value} (a file path, or one of the packaged configs {names})")
    return str(path)


def parse_recipe_config(dataclass_types, argv=None, description: str | None = None, config_dir=None) -> tuple:
    """Parse `--config FILE` and command-line overrides into the recipe's dataclasses.

    Unknown YAML keys and unknown or abbreviated flags raise ConfigError naming them, with the closest valid name;
    so does a dataclass's own validation (`__post_init__`), so that every config mistake reaches the user the same
    way. See `run_recipe` for the one-line printing. `config_dir`: where `--config NAME` finds a packaged config
    (`named_config`).
    """
    parser = recipe_parser(dataclass_types, description)
    argv = list(sys.argv[1:] if argv is None else argv)
    dests = {a.dest for a in parser._actions if a.dest not in ("help", "config")}
    flags = {s for a in parser._actions for s in a.option_strings if s not in ("--config",)}
    cfg = {}
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file path")
        path = named_config(argv[i + 1], config_dir)
        del argv[i:i + 2]  # the resolved mapping (includes and all) replaces the file TrlParser would read
        cfg = load_config(path)
        for key in cfg:
            if key != "env" and key not in dests:
                raise ConfigError(f"{path}: unknown key {key!r}{_suggest(str(key), dests)}")
    for tok in argv:
        if tok.startswith("--") and tok != "--config":
            flag = tok.split("=", 1)[0]
            if flag not in flags:
                raise ConfigError(f"unknown flag {tok}{_suggest(flag, flags)}; flags are never abbreviated")
    try:
        if cfg:  # what TrlParser does with a --config file: set its env, then use its values as defaults
            env = cfg.pop("env", {})
            if not isinstance(env, dict):
                raise ConfigError(f"{path}: env must be a mapping of variable: value, got {env!r}")
            os.environ.update({k: str(v) for k, v in env.items()})
            parser.set_defaults_with_config(**cfg)
        return parser.parse_args_and_config(argv)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from e


def run_recipe(main, argv=None):
    """Run a recipe's `main(argv)`; a ConfigError becomes one `error: ...` line on stderr and exit status 2."""
    try:
        return main(argv)
    except ConfigError as e:
        prog = os.path.basename(sys.argv[0])
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
