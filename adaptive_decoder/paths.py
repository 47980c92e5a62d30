"""Telling a local path from a Hugging Face Hub repo id, so that a missing local directory is reported as such.

Loaders accept both, and fall back to the Hub for anything that is not an existing directory. Without this
rule a mistyped local path reaches the Hub client, which answers with an `HFValidationError` about repo-id
syntax (or a network error), never with "no such directory".

The rule (`local_path`): a Hub repo id is `name` or `owner/name` made of letters, digits, "-", "_" and ".".
So a name *looks local* when it
  - is a `pathlib.Path` (or any other `os.PathLike`), or exists on disk;
  - starts with "/", "./", "../" or "~" (expanded to the home directory), or is "." or "..";
  - contains more than one "/", ends with "/", or contains the platform separator when that is not "/";
  - has a drive ("C:") or any character a repo id cannot contain (a space, "\\", ":", ...).
Anything else ("head", "runs/head") is treated as a repo id, unless it exists locally.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_REPO_ID_CHARS = re.compile(r"[A-Za-z0-9_.\-/]+")


def local_path(name) -> Path | None:
    """The (user-expanded) local path `name` means, or None when it reads as a Hub repo id."""
    if isinstance(name, os.PathLike):
        return Path(name).expanduser()
    name = str(name)
    path = Path(name).expanduser()
    if path.exists():
        return path
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    looks_local = (
        name.startswith(("/", "./", "../", "~")) or name in (".", "..")
        or name.count("/") > 1 or name.endswith(tuple(seps))
        or any(s in name for s in seps - {"/"})
        or bool(Path(name).drive) or not _REPO_ID_CHARS.fullmatch(name)
    )
    return path if looks_local else None


def missing_local_dir(name) -> FileNotFoundError | None:
    """The error to raise when `name` looks local but is not an existing directory (None when all is well)."""
    path = local_path(name)
    if path is None or path.is_dir():
        return None
    shown = shown_path(name, path)
    if path.exists():
        return FileNotFoundError(f"not a directory: {shown}")
    return FileNotFoundError(f"directory not found: {shown}")


def shown_path(name, path: Path) -> str:
    """`name` as the user wrote it ("./runs/head" stays so; pathlib would drop the "./"), "~" expanded."""
    return str(path) if str(name).startswith("~") else str(name)
