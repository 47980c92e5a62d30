"""What a task entry resolves to, as one digest: the identity a run records of each of its tasks.

A recipe's `tasks:` entry names a task and some options; what the task then does (its template, reward, filters,
generation length, which records it reads) lives partly in places the entry does not spell out: a task file's
contents, a Python task's option defaults, the data file. `task_contents(task)` gathers all of it from the BUILT
task, and `task_digest(task)` hashes it, so a run that records {task: digest} notices a task file edited (or a
data file replaced) between a run and its resume, which the entry's options alone never show.

What it covers: the task's kind (a Python task's class, a task file's validated contents but its `dataset:`
location, which the data's own identity stands for), every option at its
resolved value (defaults included), the reward spec, max_new_tokens, and the data: the sha256 of the local file
the records come from (a `path:`, a task file's dataset file, a built-in set, a public dataset's local copy),
else where a hub dataset or a URL points (hf_id, config, split, revision, data files). A Python task's code is
not covered (a library upgrade is not a task edit), nor a hub dataset's contents at an unpinned revision.

Invariant: the digest is a pure function of the files and options the task reads: the same entry on another
machine, or with the data under another directory, gives the same digest; a task file edited in any key that
loads gives another.

Resume rule (`content_changes`): a task recorded with another digest is refused by name; a task the record does not
hold was added since and only adds results; a record written before digests were recorded (None) cannot be
checked, and is accepted with one warning (see `content_changes` for why).
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path

from .io import BUILTIN_DIR

logger = logging.getLogger(__name__)

_HUB_KEYS = ("hf_id", "hf_config", "hf_split", "hf_revision", "data_files", "columns", "constants", "unique")


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    # keyed by size and mtime too: a file rewritten in place within one process is hashed again
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _data_identity(task) -> dict | None:
    # a URL without a local copy is named by its URL: after its first download `task.path` holds the cache file,
    # which must not change the digest between the run that downloads and the run that resumes
    if task.data.get("url"):
        return {"url": task.data["url"]}
    path = task.path or (BUILTIN_DIR / task.builtin if getattr(task, "builtin", None) and not task.hf_id else None)
    if path is not None and Path(path).is_file():
        st = Path(path).stat()
        return {"sha256": _file_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)}
    if task.hf_id:
        return {k: task.data.get(k) for k in _HUB_KEYS if task.data.get(k) is not None} | {"hf_split": task.hf_split}
    return None  # generated records (arithmetic): its options say which


def task_contents(task) -> dict:
    """The resolved recipe of a built `Task` (see the module docstring), JSON-ready."""
    cls = type(task)
    spec = getattr(cls, "spec", None)
    # a task file's `dataset:` names where its records are; "data" holds what they are
    kind = {"file": {k: v for k, v in spec.items() if k != "dataset"}} if spec else {
        "class": f"{cls.__module__}.{cls.__qualname__}"}
    return json.loads(json.dumps({**kind, "options": task.opts, "reward": task.reward_spec,
                                  "max_new_tokens": task.max_new_tokens, "data": _data_identity(task)},
                                 sort_keys=True, default=str))


def task_digest(task) -> str:
    """A short sha256 of `task_contents(task)`: what a run records of the task."""
    text = json.dumps(task_contents(task), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def content_changes(recorded: dict | None, current: dict, where) -> list[str]:
    """The tasks of `current` ({task: digest}) whose recorded digest differs, as "contents of task 'x'".

    `recorded` None: the record was written before task digests were recorded (its migration says so). Its tasks'
    contents then are unknown, and the run is accepted with one warning naming `where` and the tasks rather than
    refused: such a run's results were computed under the same rule (the options it recorded), most resumes of it
    only add methods or re-aggregate, and refusing would force recomputing every finished run for an edit that
    in most of them never happened. The caller then records the current digests."""
    if recorded is None:
        logger.warning("%s: recorded before task contents were recorded, so edits to the task file or data of %s "
                       "since that run cannot be detected; resuming with their current contents (if one changed, "
                       "use a new output directory)", where, sorted(current))
        return []
    return [f"contents of task {t!r}" for t in sorted(current) if t in recorded and recorded[t] != current[t]]


def unrecorded_contents(record: dict) -> dict:
    """The migration of a record written before task contents were recorded: `task_contents` None, which
    `content_changes` accepts with a warning."""
    return {**record, "task_contents": None}


def recorded_contents(record: dict, identity: dict, where) -> tuple[list[str], dict]:
    """(`content_changes` of a stored `record` and the current `identity`, the `task_contents` to record from now
    on: the stored ones, each task of `identity` at its current digest); an identity without the key has none."""
    recorded, current = record.get("task_contents"), identity.get("task_contents") or {}
    return content_changes(recorded, current, where), {**(recorded or {}), **current}


def changes_by_task(record, identity: dict, old: dict | None) -> list[str]:
    """`record.changes(identity, old)` (a `storage.RunRecord`) with the key `task_contents`, when `identity` has
    it, compared by task (`content_changes`), so a refusal names the task whose contents changed."""
    diff = record.changes(identity, old)
    if old is None or not isinstance(identity.get("task_contents"), dict):
        return diff
    return ([k for k in diff if k != "task_contents"]
            + content_changes(old.get("task_contents"), identity["task_contents"], record.path))
