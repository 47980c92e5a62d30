"""Crash-safe storage of a run directory: atomic files and the directory lock (`files`), the append-only JSONL log
with its one torn-line rule (`log`), and the versioned run record with its migration table and its one
"what changed" check (`record`)."""

from .files import LOCK, DirectoryLockedError, atomic_write_bytes, fsync_dir, lock_dir
from .log import AppendLog, read_jsonl_log
from .record import NotMigratable, RecordError, RecordKind, RunRecord, jsonable

__all__ = ["LOCK", "AppendLog", "DirectoryLockedError", "NotMigratable", "RecordError", "RecordKind", "RunRecord",
           "atomic_write_bytes", "fsync_dir", "jsonable", "lock_dir", "read_jsonl_log"]
