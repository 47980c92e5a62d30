"""Reading task data: local JSONL / JSON files (with line-numbered errors), a dataset by id through `datasets`, and
the public datasets the shipped tasks name (`PUBLIC_DATASETS`) with their local-copy override."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

BAD_LINE_POLICIES = ("fail", "skip")
BUILTIN_DIR = Path(__file__).resolve().parent / "data"


class DataFormatError(ValueError):
    """A data file exists but a record is malformed (message names the file and line)."""


def read_jsonl(path, *, expected: str, on_bad_line: str = "fail", validate=None) -> list[tuple[int, dict]]:
    """Records of a JSONL file as (line_number, record), 1-based line numbers, blank lines ignored.

    `expected` describes the format for error messages. A line that is not a JSON object, or that `validate(record)`
    rejects (by raising ValueError), raises `DataFormatError` naming the line when on_bad_line="fail", or is skipped
    with a warning when on_bad_line="skip".
    """
    if on_bad_line not in BAD_LINE_POLICIES:
        raise ValueError(f"on_bad_line must be one of {BAD_LINE_POLICIES}, got {on_bad_line!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} not found; expected a JSONL file, one JSON object per line: {expected}")
    out, skipped = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError(f"a JSON {type(rec).__name__}, not an object")
                if validate is not None:
                    validate(rec)
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                msg = f"{path}:{lineno}: malformed record ({e}); expected {expected}"
                if on_bad_line == "fail":
                    raise DataFormatError(msg + " (pass on_bad_line='skip' to skip bad lines)") from None
                logger.warning("skipping %s", msg)
                skipped.append(lineno)
                continue
            out.append((lineno, rec))
    if skipped:
        logger.warning("%s: skipped %d malformed line(s): %s", path, len(skipped), skipped[:20])
    if not out:
        raise DataFormatError(f"{path} holds no valid record; expected {expected}")
    return out


DATA_ENV = "ADAPTIVE_DECODER_DATA"

_WMT22 = "haoranxu/WMT22-Test"  # the WMT22 general test set (reference A), one config per language pair
# Public datasets a task can name with `dataset: NAME`: where `datasets.load_dataset` finds them (hf_id, hf_config,
# hf_split, or a file `url` fetched into the datasets cache), and `local`: the same data as a file under a directory
# of $ADAPTIVE_DECODER_DATA, read instead when present (the layout of the project's local copies). Hub rows are
# brought to the local file's record format: `columns` renames (dotted paths into nested rows), `constants` adds
# fields, `unique` keeps the first row per value of that column.
PUBLIC_DATASETS = {
    "gsm8k": {"hf_id": "openai/gsm8k", "hf_config": "main", "hf_split": "test", "local": "gsm8k/test.jsonl"},
    "gsm8k.train": {"hf_id": "openai/gsm8k", "hf_config": "main", "hf_split": "train", "local": "gsm8k/train.jsonl"},
    **{f"wmt22.{s}-{t}": {"hf_id": _WMT22, "hf_config": f"{s}-{t}", "hf_split": "test",
                          "local": f"translation/wmt22.{s}-{t}.jsonl",
                          "columns": {"source": f"{s}-{t}.{s}", "reference": f"{s}-{t}.{t}"},
                          "constants": {"src_lang": s, "tgt_lang": t}}
       for s, t in (("en", "de"), ("de", "en"), ("en", "zh"), ("zh", "en"))},
    "commongen.dev": {"hf_id": "allenai/common_gen", "hf_split": "validation", "unique": "concept_set_idx",
                      "local": "creative_writing/commongen.dev.jsonl"},
    "eqbench.creative_writing": {
        "url": "https://raw.githubusercontent.com/EQ-bench/EQ-Bench/d28c60c514fe6667dc5818114ed10088f91f09f3/"
               "data/creative_writing_prompts.json",
        "local": "creative_writing/eqbench_creative_writing_prompts.json"},
}
DATASET_KEYS = ("hf_id", "hf_config", "hf_split", "hf_revision", "data_files", "url", "local", "columns", "constants",
                "unique")


class DatasetUnavailableError(RuntimeError):
    """A task's public dataset is neither in the local cache nor downloadable, and no local copy was given."""


def public_dataset(name: str) -> dict:
    if name not in PUBLIC_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {sorted(PUBLIC_DATASETS)}")
    return dict(PUBLIC_DATASETS[name])


def data_dirs() -> list[Path]:
    return [Path(d) for d in os.environ.get(DATA_ENV, "").split(os.pathsep) if d]


def local_copy(rel: str | None) -> Path | None:
    """The file `rel` in the first directory of $ADAPTIVE_DECODER_DATA that has it, or None."""
    for d in data_dirs() if rel else ():
        if (d / rel).is_file():
            return d / rel
    return None


def how_to_provide(task: str, what: str, local: str | None) -> str:
    env = f" or set {DATA_ENV}=DIR with the file DIR/{local}" if local else ""
    return f"task {task!r}: {what}; give the task a local copy with the option `path: FILE`{env}"


def _unavailable(task, what, local, e) -> DatasetUnavailableError:
    reason = (str(e).strip().splitlines() or [""])[0][:200]
    return DatasetUnavailableError(how_to_provide(task, f"{what} is not in the local cache and could not be loaded "
                                                        f"({type(e).__name__}: {reason})", local))


def _datasets(what):
    try:
        import datasets  # noqa: PLC0415  (optional dependency)
    except ImportError:
        raise ImportError(f"loading {what} needs the `datasets` package: run `pip install datasets` "
                          "(or give a local JSONL file with path=...)") from None
    return datasets


def download_file(url: str, *, task: str = "", local: str | None = None) -> str:
    """A data file fetched into the `datasets` cache (offline: the cached copy), as a local path."""
    datasets = _datasets(url)
    try:
        return datasets.DownloadManager().download(url)
    except Exception as e:  # offline without a cached copy, no network, HTTP errors: one line naming the way out
        raise _unavailable(task, f"the data file {url}", local, e) from None


def _get(row: dict, dotted: str):
    v = row
    for part in dotted.split("."):
        if not isinstance(v, dict) or part not in v:
            raise ValueError(f"hub row lacks column {dotted!r} (has {sorted(row)})")
        v = v[part]
    return v


def load_hf_dataset(hf_id: str, split: str, config: str | None = None, *, revision: str | None = None,
                    data_files=None, task: str = "", local: str | None = None, columns: dict | None = None,
                    constants: dict | None = None, unique: str | None = None) -> list[tuple[int, dict]]:
    """Rows of a dataset loaded by `datasets.load_dataset(hf_id, config, split=, revision=, data_files=)` (which
    honours HF_DATASETS_OFFLINE / HF_HUB_OFFLINE and its cache) as (row_index, record). A dataset that cannot be
    loaded raises one line naming the task, the dataset and how to give a local copy (`local`: its file name
    under $ADAPTIVE_DECODER_DATA). `columns` / `constants` / `unique`: see PUBLIC_DATASETS."""
    what = f"dataset {hf_id!r}" + (f" (config {config!r})" if config else "") + f" split {split!r}"
    datasets = _datasets(what)
    try:
        ds = datasets.load_dataset(hf_id, config, split=split, revision=revision, data_files=data_files)
    except Exception as e:  # offline without a cache, unknown id or split, no network: one line
        raise _unavailable(task, what, local, e) from None
    out, seen = [], set()
    for i, r in enumerate(ds):
        r = dict(r)
        if unique is not None:
            if r.get(unique) in seen:
                continue
            seen.add(r.get(unique))
        if columns:
            r = {**{k: _get(r, src) for k, src in columns.items()}, **{k: v for k, v in r.items() if k not in columns}}
        out.append((i, {**r, **(constants or {})}))
    return out
