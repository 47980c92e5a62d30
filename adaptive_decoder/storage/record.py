"""The versioned run record: the one JSON file of a run directory that says what its results depend on.

Layout: `{"format_version": V, <identity keys>, <state keys>}`. A `RecordKind` names the file, the version this
library writes, its state keys (what the run has done so far: a collection's shard list, a stage's summary; they
change as the run goes on) and its migration table. Every other key is identity: the settings the results depend
on, compared on resume by `RunRecord.changes`, which is `configs.changed_keys` (the one "what changed" check).

Versions: a record without `format_version` was written before records carried one and is version 0.
`kind.migrations[v]` maps a record of version v onto version v+1, as a pure function of the record; `RunRecord.read`
applies them in order up to `kind.version`, so what an older layout meant lives in one table and the code that
compares sees only the current layout. A migration that would have to guess raises `NotMigratable(what)`, and the
read refuses in one line naming the file (so the run directory) and what cannot be migrated; so is a record of a
version with no migration, or one written by a newer library. Reading never rewrites the file: a resumed run
writes the current layout with its next `write`.

Invariant: a record holds every option at its value, off or default included, so the identity of a run never
depends on which options existed when it was written; an option added later comes with a new version whose
migration fills in the value every run had before the option existed.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from ..configs import changed_keys
from .files import atomic_write_bytes, lock_dir

VERSION_KEY = "format_version"


class NotMigratable(Exception):
    """Raised by a migration: the older record lacks something the current layout needs and no value is exact.
    Its text says what (e.g. "settings.prompts_per_batch was not recorded")."""


class RecordError(ValueError):
    """A run record that cannot be read as the current layout: damaged, too new, or not migratable."""


def jsonable(x):
    """`x` as it reads back from JSON (tuples become lists, keys strings, other objects their str), so a value
    compares equal to its own record."""
    return json.loads(json.dumps(x, default=str))


@dataclass(frozen=True)
class RecordKind:
    """What one kind of run record is: its `file` in the run directory, `what` the directory is (for messages:
    "evaluation output directory"), the `version` this library writes, its `state` keys, and `migrations`
    ({old_version: function(record) -> record of old_version + 1})."""

    file: str
    what: str
    version: int
    state: tuple = ()
    migrations: Mapping[int, Callable[[dict], dict]] = field(default_factory=dict)

    def __post_init__(self):
        gaps = [v for v in self.migrations if v + 1 != self.version and v + 1 not in self.migrations]
        if gaps or any(v >= self.version for v in self.migrations):
            raise ValueError(f"{self.file}: migrations {sorted(self.migrations)} do not lead to version {self.version}")

    def migrate(self, record: dict, where) -> dict:
        """`record` in the layout of `self.version` (see the module docstring); `where` names it in errors."""
        v = record.get(VERSION_KEY, 0)
        if not isinstance(v, int) or v > self.version:
            raise RecordError(f"{where}: {VERSION_KEY} {v!r}, this library reads {self.file} up to version "
                              f"{self.version} (written by a newer version?)")
        rec, start = copy.deepcopy(record), v
        while v < self.version:
            if v not in self.migrations:
                raise RecordError(f"{where}: version {v} cannot be migrated to version {self.version} (no migration "
                                  f"from version {v}); use a new output directory")
            try:
                rec = self.migrations[v](rec)
            except NotMigratable as e:
                raise RecordError(f"{where}: written by an older version (format {start}) and cannot be migrated to "
                                  f"format {self.version}: {e}; use a new output directory") from None
            v += 1
            rec[VERSION_KEY] = v
        return rec


class RunRecord:
    """The record of kind `kind` in directory `root`: `read()` (migrated; None before the first write),
    `changes(identity)` (the identity keys that differ from the stored ones), `write(identity, **state)` (atomic)
    and `lock()` (the directory's one-writer lock)."""

    def __init__(self, root, kind: RecordKind):
        self.root, self.kind = Path(root), kind
        self.path = self.root / kind.file

    def exists(self) -> bool:
        return self.path.is_file()

    def read(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            rec = json.loads(self.path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RecordError(f"{self.path} is not valid JSON ({e}); the record is damaged: use a new output "
                              "directory") from None
        if not isinstance(rec, dict):
            raise RecordError(f"{self.path} must hold a JSON object, got {type(rec).__name__}")
        return self.kind.migrate(rec, self.path)

    def identity(self, record: dict) -> dict:
        """The identity part of a record: every key but the version and the kind's state keys."""
        return {k: v for k, v in record.items() if k != VERSION_KEY and k not in self.kind.state}

    def changes(self, identity: dict, record: dict | None = None) -> list[str]:
        """The top-level identity keys in which `identity` differs from the stored record (or `record`, when
        given); [] when nothing is stored."""
        record = self.read() if record is None else record
        return [] if record is None else changed_keys(self.identity(record), jsonable(identity))

    def write(self, identity: dict, **state) -> dict:
        """Write `{format_version, **identity, **state}` atomically; returns the record as written."""
        unknown = sorted(set(state) - set(self.kind.state))
        clash = sorted(set(identity) & (set(self.kind.state) | {VERSION_KEY}))
        if unknown or clash:
            raise ValueError(f"{self.kind.file}: state keys {unknown} are not among {list(self.kind.state)}, or "
                             f"identity keys {clash} are reserved")
        rec = {VERSION_KEY: self.kind.version, **jsonable(identity), **jsonable(state)}
        atomic_write_bytes(self.path, json.dumps(rec, indent=1, ensure_ascii=False).encode())
        return rec

    def lock(self):
        """The one-writer lock of the directory (`storage.files.lock_dir`); close it (or use `with`) to release."""
        self.root.mkdir(parents=True, exist_ok=True)
        return lock_dir(self.root, self.kind.what)
