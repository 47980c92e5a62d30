"""Crash-safe file primitives shared by the collection, the evaluation store and the resume and metrics logs.

Atomic writes: data goes to `<name>.tmp`, is fsync'ed, then renamed over `<name>` and the directory is fsync'ed,
so a reader (or a process restarted after kill -9) sees either the old file or the whole new one, never a part.

Append-only logs: a JSONL file that grows by one appended line per record (a resume log, a metrics file) can end
in a torn line when a kill interrupts a write; `read_jsonl_log` drops that last line (the record it held is
redone by whoever resumes) and refuses a broken line anywhere else, which no interrupted append can produce.

Directory lock: one writer per output directory. `lock_dir` takes an exclusive `flock` on `<dir>/.lock`; the
kernel drops it when the holder's file is closed or the process dies (kill -9 included), so a crash never leaves
a stale lock. The holder writes its pid and host into the file so that a refused second writer can name it; the
file is opened without truncating, or the refused process would erase the holder's name before reading it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK = ".lock"


def fsync_dir(path: Path):
    """Make a rename inside `path` durable (best effort: some filesystems refuse to open or fsync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def jsonl_lines(text: str) -> list:
    """The lines of a JSONL text, split at "\n" only. `str.splitlines` would also split at U+2028, U+0085 and the
    other Unicode line breaks, which `json.dumps(..., ensure_ascii=False)` leaves raw inside a string: a sampled
    text holding one (a SmolLM2 sample at T=1.2 held U+2028) would tear its record in two."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def read_jsonl_log(path, redo: str | None = None) -> list:
    """The records of an append-only JSONL log, [] when there is no file (see the module docstring).

    A torn last line is dropped, with a warning when `redo` says what happens to its record (e.g. "its prompt is
    searched again"); any other line that is not JSON raises ValueError naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    out, lines = [], jsonl_lines(path.read_text(encoding="utf-8"))
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if n != len(lines):
                raise ValueError(f"{path}:{n} is not valid JSON; the file is corrupt (delete that line to resume)") from None
            if redo:
                logger.warning("%s: dropping a torn last line (interrupted write); %s", path, redo)
    return out


class DirectoryLockedError(RuntimeError):
    """Another process holds the lock of an output directory."""


def lock_dir(root, what: str):
    """Exclusive advisory lock on directory `root` for this process's lifetime; returns the open lock file
    (close it, or use it in a `with`, to release). `what` names the directory's role in the error message."""
    import fcntl

    root = Path(root)
    f = open(root / LOCK, "a+")  # noqa: SIM115 (held for the writer's lifetime; "a+": see the module docstring)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        raise DirectoryLockedError(
            f"another process is writing to the {what} {root} ({holder or 'holder unknown'}); "
            "wait for it to finish or use another output_dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f
