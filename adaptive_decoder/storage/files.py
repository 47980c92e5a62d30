"""Crash-safe file primitives: atomic whole-file writes and the one-writer directory lock.

Atomic writes: data goes to `<name>.tmp`, is fsync'ed, then renamed over `<name>` and the directory is fsync'ed,
so a reader (or a process restarted after kill -9) sees either the old file or the whole new one, never a part.

Directory lock: one writer per output directory. `lock_dir` takes an exclusive `flock` on `<dir>/.lock`; the
kernel drops it when the holder's file is closed or the process dies (kill -9 included), so a crash never leaves
a stale lock. The holder writes its pid and host into the file so that a refused second writer can name it; the
file is opened without truncating, or the refused process would erase the holder's name before reading it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

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
