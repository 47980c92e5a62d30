"""Tasks defined as data: one YAML file per task, no Python (in the spirit of lm-evaluation-harness task files).

    # configs/tasks/<name>.yaml (or a packaged adaptive_decoder/tasks/configs/<name>.yaml)
    task: control_copy                     # optional; default: the file name without .yaml. The task's name,
                                           #   which keys its results, however the file was found (name or path)
    description: copy a short text exactly # optional
    dataset:                               # where the records come from (one of path / builtin / public / hf_id)
      builtin: control_copy.jsonl          #   a file in adaptive_decoder/tasks/data/
      # path: ../../data/x.jsonl           #   a JSONL file, relative to this YAML file (or absolute)
      # public: wmt22.en-de                #   a public dataset of tasks.io.PUBLIC_DATASETS (its local copy under
                                           #   $ADAPTIVE_DECODER_DATA when present, else `datasets.load_dataset`)
      # hf_id: org/name                    #   datasets.load_dataset(hf_id, hf_config, split=hf_split,
                                           #   revision=hf_revision, data_files=...); `hf_id: json` with
                                           #   `data_files: x.jsonl` reads a local file through `datasets`
    fields: [text, answer]                 # record fields every example needs and keeps (a list, or a mapping
                                           #   {example field: record field} to rename)
    template: "Repeat exactly: {text}"     # the user message; str.format over the example fields (stripped)
    filter: [first_line]                   # optional answer extraction, applied in order: strip, first_line,
                                           #   lower, {regex: PATTERN, group: 1} (no match -> "")
    reward: {exact_match: {}}              # a build_reward spec: each key a built-in or registered reward name,
                                           #   an import path (my_pkg.rewards:keyword_bonus) or an entry point of
                                           #   group adaptive_decoder.rewards, each value its options
    max_new_tokens: 16                     # optional generation length of this task
    diversity: false                       # optional: report self-BLEU / distinct-n over a prompt's samples
    splits: {num_train: 32, num_dev: 8, num_test: 32}   # optional default split sizes for experiments
    select: {field: text, min_words: 20, max_words: 50} # optional: keep only records whose `field` (a record
                                           #   field) has that many whitespace-separated words (either bound optional)

A task file is found by name (`get_task("control_copy")`): in `configs/tasks/` under the working directory, then
among the task files shipped in the package (`PACKAGED_TASK_DIR`), then in the directories of
$ADAPTIVE_DECODER_TASK_PATH; or by a path ending in .yaml. Errors in a task file (a missing or unknown key, an
unknown reward or reward option, a reward import path that does not import, a record lacking a field, no records)
raise `TaskFileError` naming the file and the key. A task's `path:` option (in a recipe's `tasks:` entry) replaces
the file's dataset with a local file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from .base import Task
from .io import BUILTIN_DIR, PUBLIC_DATASETS
from .translation import first_line, first_line_complete

PACKAGED_TASK_DIR = Path(__file__).resolve().parent / "configs"
REQUIRED = ("dataset", "fields", "template", "reward")
OPTIONAL = ("task", "description", "filter", "max_new_tokens", "diversity", "splits", "select")
SELECT_KEYS = ("field", "min_words", "max_words")
DATASET_KEYS = ("path", "builtin", "public", "hf_id", "hf_split", "hf_config", "hf_revision", "data_files")
SPLIT_KEYS = ("num_train", "num_dev", "num_test")
FILTERS = ("strip", "first_line", "lower")


class TaskFileError(ValueError):
    """A task YAML file is malformed; the message names the file and the key."""


def task_dirs() -> list[Path]:
    dirs = [Path.cwd() / "configs" / "tasks", PACKAGED_TASK_DIR]
    dirs += [Path(d) for d in os.environ.get("ADAPTIVE_DECODER_TASK_PATH", "").split(os.pathsep) if d]
    out = []
    for d in dirs:
        if d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def find_task_file(name: str) -> Path | None:
    """The YAML file of task `name` (a path ending in .yaml/.yml, or a file name in `task_dirs()`), or None."""
    if name.endswith((".yaml", ".yml")):
        p = Path(name)
        return p if p.is_file() else None
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        return None
    for d in task_dirs():
        for ext in (".yaml", ".yml"):
            p = d / f"{name}{ext}"
            if p.is_file():
                return p
    return None


def file_task_names() -> list[str]:
    names = set()
    for d in task_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.y*ml"))
    return sorted(names)


def _err(path, key, msg):
    return TaskFileError(f"task file {path}: key {key!r}: {msg}")


def _check_reward(path, spec):
    from ..rewards import available_rewards, reward_options

    if not isinstance(spec, dict) or not spec:
        raise _err(path, "reward", f"must be a non-empty mapping of reward name -> options, got {spec!r}; "
                                   f"valid names: {available_rewards()}")
    for name, opts in spec.items():
        try:
            valid = reward_options(name)  # imports an import path / entry point now: a typo fails at load time
        except (ValueError, TypeError) as e:
            raise _err(path, "reward", str(e)) from None
        if opts is not None and not isinstance(opts, dict):
            raise _err(path, f"reward.{name}", f"options must be a mapping, got {opts!r}")
        bad = sorted(set(opts or {}) - set(valid)) if valid is not None else []
        if bad:
            raise _err(path, f"reward.{name}", f"unknown option(s) {bad}; valid: {valid}")


def _check_filter(path, steps):
    steps = [steps] if isinstance(steps, (str, dict)) else list(steps or [])
    for i, s in enumerate(steps):
        if isinstance(s, str) and s in FILTERS:
            continue
        if isinstance(s, dict) and set(s) <= {"regex", "group"} and "regex" in s:
            try:
                re.compile(s["regex"])
            except re.error as e:
                raise _err(path, f"filter[{i}].regex", f"not a valid regular expression ({e})") from None
            continue
        raise _err(path, f"filter[{i}]", f"unknown filter {s!r}; valid: {list(FILTERS)} or {{regex: PATTERN, group: N}}")
    return steps


def apply_filters(text: str, steps: list) -> str:
    for s in steps:
        if s == "strip":
            text = text.strip()
        elif s == "lower":
            text = text.lower()
        elif s == "first_line":
            text = first_line(text)
        else:
            m = re.search(s["regex"], text)
            text = m.group(int(s.get("group", 0))) if m else ""
            text = text or ""
    return text


def load_task_spec(path) -> dict:
    """The validated contents of a task file (raises TaskFileError naming the file and the key)."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise TaskFileError(f"task file {path}: not valid YAML ({e})") from None
    if not isinstance(spec, dict):
        raise TaskFileError(f"task file {path}: must be a mapping of keys {list(REQUIRED + OPTIONAL)}")
    for k in REQUIRED:
        if k not in spec or spec[k] in (None, "", [], {}):
            raise _err(path, k, "missing (required keys: " + ", ".join(REQUIRED) + ")")
    unknown = sorted(set(spec) - set(REQUIRED + OPTIONAL))
    if unknown:
        raise _err(path, unknown[0], f"unknown key; valid: {list(REQUIRED + OPTIONAL)}")
    ds = spec["dataset"]
    if not isinstance(ds, dict) or sorted(set(ds) - set(DATASET_KEYS)):
        raise _err(path, "dataset", f"must be a mapping with keys from {list(DATASET_KEYS)}, got {ds!r}")
    sources = [k for k in ("path", "builtin", "public", "hf_id") if ds.get(k)]
    if len(sources) != 1:
        raise _err(path, "dataset", f"give exactly one of path / builtin / public / hf_id, got {sources or 'none'}")
    if ds.get("public") and ds["public"] not in PUBLIC_DATASETS:
        raise _err(path, "dataset.public", f"unknown dataset {ds['public']!r}; valid: {sorted(PUBLIC_DATASETS)}")
    fields = spec["fields"]
    if isinstance(fields, list):
        fields = {str(f): str(f) for f in fields}
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        raise _err(path, "fields", f"must be a list of record fields or a mapping example field -> record field, got {fields!r}")
    if not isinstance(spec["template"], str):
        raise _err(path, "template", f"must be a string, got {spec['template']!r}")
    names = {f for _, f, _, _ in __import__("string").Formatter().parse(spec["template"]) if f}
    missing = sorted(names - set(fields))
    if missing:
        raise _err(path, "template", f"uses {missing}, which are not in 'fields' ({sorted(fields)})")
    _check_reward(path, spec["reward"])
    filters = _check_filter(path, spec.get("filter"))
    mnt = spec.get("max_new_tokens")
    if mnt is not None and (not isinstance(mnt, int) or mnt < 1):
        raise _err(path, "max_new_tokens", f"must be an integer >= 1, got {mnt!r}")
    splits = spec.get("splits") or {}
    if not isinstance(splits, dict) or sorted(set(splits) - set(SPLIT_KEYS)) or not all(
            isinstance(v, int) and v >= 0 for v in splits.values()):
        raise _err(path, "splits", f"must map {list(SPLIT_KEYS)} to integers >= 0, got {splits!r}")
    select = spec.get("select") or {}
    if select:
        if not isinstance(select, dict) or set(select) - set(SELECT_KEYS) or not isinstance(select.get("field"), str):
            raise _err(path, "select", f"must be a mapping with 'field' (a record field) and min_words / max_words, "
                                       f"got {select!r}")
        for k in ("min_words", "max_words"):
            if k in select and (not isinstance(select[k], int) or select[k] < 0):
                raise _err(path, f"select.{k}", f"must be an integer >= 0, got {select[k]!r}")
    return {**spec, "fields": fields, "filter": filters, "splits": splits, "dataset": ds, "select": select,
            "name": spec.get("task") or path.stem}


class DataTask(Task):
    """A task built from a task file (`task_class(path)` makes the subclass; see the module docstring)."""

    spec: dict = {}
    file: Path | None = None

    def __init__(self, path=None, hf_id=None, dataset=None, **options):
        ds = self.spec["dataset"]
        if path is None and hf_id is None and dataset is None:
            if ds.get("path"):
                p = Path(ds["path"])
                path = str(p if p.is_absolute() else (self.file.parent / p))
            elif ds.get("builtin"):
                path = str(BUILTIN_DIR / ds["builtin"])
            elif ds.get("public"):
                dataset = ds["public"]
            else:
                hf_id = ds["hf_id"]
                files = ds.get("data_files")
                if isinstance(files, str) and "://" not in files and not Path(files).is_absolute():
                    files = str(self.file.parent / files)  # like `path`, relative to the task file
                for k, v in (("hf_split", ds.get("hf_split")), ("hf_config", ds.get("hf_config")),
                             ("hf_revision", ds.get("hf_revision")), ("data_files", files)):
                    options.setdefault(k, v)
        if "max_new_tokens" not in options and self.spec.get("max_new_tokens"):
            options["max_new_tokens"] = self.spec["max_new_tokens"]
        super().__init__(path=path, hf_id=hf_id, dataset=dataset, **options)

    def _raw_records(self):
        from .io import DataFormatError

        try:
            return super()._raw_records()
        except (DataFormatError, FileNotFoundError, ValueError) as e:
            raise TaskFileError(f"task file {self.file}: key 'dataset': {e}") from None

    def to_examples(self, record: dict, index: int) -> list[dict]:
        sel = self.spec["select"]
        if sel:
            if sel["field"] not in record:
                raise ValueError(f"missing field {sel['field']!r} (has {sorted(record)}; task file key 'select.field')")
            # the record keeps its file index as id, so a selection never renumbers the prompts it keeps
            n = len(str(record[sel["field"]]).split())
            if n < sel.get("min_words", 0) or n > sel.get("max_words", n):
                return []
        ex = {"id": str(index)}
        for name, src in self.spec["fields"].items():
            if src not in record:
                raise ValueError(f"missing field {src!r} (has {sorted(record)}; task file key 'fields')")
            ex[name] = record[src]
        fmt = {k: (v.strip() if isinstance(v, str) else v) for k, v in ex.items()}
        ex["prompt"] = self.opts["template"].format(**fmt)
        return [ex]

    def postprocess(self, text: str) -> str:
        return apply_filters(text, self.spec["filter"])

    def stop_predicate(self):
        steps = self.spec["filter"]
        if "first_line" not in steps:
            return None
        # strip and lower keep every line break in place; a regex before first_line may read past the first line
        if any(s not in ("strip", "lower") for s in steps[:steps.index("first_line")]):
            return None
        return first_line_complete


def task_class(path, name: str | None = None) -> type:
    """The Task subclass defined by the task file at `path`; `name` (default: the file's `task:` or its stem, never
    the path it was loaded by) is the name results are keyed by."""
    path = Path(path)
    spec = load_task_spec(path)
    name = name or spec["name"]
    fields = spec["fields"]
    expected = "{" + ", ".join(f'"{f}": ...' for f in fields.values()) + f"}} (task file {path})"
    cls_name = "DataTask_" + re.sub(r"\W", "_", name)
    return type(cls_name, (DataTask,), {
        "name": name, "spec": spec, "file": path, "expected": expected,
        "default_reward": spec["reward"], "options": {"template": spec["template"]},
        "diversity": bool(spec.get("diversity", False))})
