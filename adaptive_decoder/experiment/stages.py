"""Stage bookkeeping: a finished stage records its settings fingerprint in `stage_done.json` (written atomically);
a rerun skips it, and a finished stage whose settings changed is refused by name rather than silently mixed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..configs import changed_keys
from ..storage import atomic_write_bytes


DONE = "stage_done.json"


def jsonable(x):
    """`x` as it reads back from JSON (tuples become lists, other objects their str): what a record compares."""
    return json.loads(json.dumps(x, default=str))


def stage_record(stage_dir: Path, fingerprint: dict, normalize=None) -> tuple[dict | None, list[str]]:
    """A stage's finished record (None if it has not finished) and the settings in which it differs from
    `fingerprint`. `normalize(old_fingerprint)` maps a record written by an older version."""
    path = Path(stage_dir) / DONE
    if not path.is_file():
        return None, []
    rec = json.loads(path.read_text())
    old = rec.get("fingerprint", {})
    return rec, changed_keys(normalize(old) if normalize else old, jsonable(fingerprint))


def stage_done(stage_dir: Path, fingerprint: dict, normalize=None) -> dict | None:
    """The stage's record if it finished with the same settings; None if it has not finished; error if it
    finished with other settings."""
    rec, diff = stage_record(stage_dir, fingerprint, normalize)
    if diff:
        raise ValueError(f"{stage_dir} finished with different settings ({', '.join(diff)} differ); "
                         "use a new run_dir (or delete that stage directory to redo it)")
    return rec


def mark_done(stage_dir: Path, fingerprint: dict, summary: dict, wall_s: float) -> dict:
    rec = {"fingerprint": jsonable(fingerprint), "summary": jsonable(summary), "wall_s": round(wall_s, 2),
           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_bytes(Path(stage_dir) / DONE, json.dumps(rec, indent=1).encode())
    return rec
