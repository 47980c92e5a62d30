"""Stage bookkeeping: a finished stage writes its run record `stage_done.json` (`storage.RunRecord`: the settings
fingerprint as identity; its summary, wall time and finish time as state), last and atomically; a rerun skips it,
and a finished stage whose settings changed is refused by name rather than silently mixed.

Format 0 (records without `format_version`) held the fingerprint under "fingerprint", with options recorded only
when on; `_stage_v0` migrates each stage's shape (collect, train, eval) exactly, see its docstring."""

from __future__ import annotations

import time
from pathlib import Path

from ..storage import RecordKind, RunRecord, jsonable


# what a collect fingerprint of format 0 meant by leaving an option out: the option was off
_COLLECT_ABSENT_IN_V0 = {"stop_when_scored": False, "load": {}}


def _collect_v0(fp: dict) -> dict:
    return {**jsonable(_COLLECT_ABSENT_IN_V0), **fp}


def _eval_v0(fp: dict, summary: dict) -> tuple[dict, dict]:
    """An eval stage of format 0: its "eval" fingerprint in the current layout (`evaluation.config.fingerprint_v0`;
    a record that held the whole EvalConfig keeps its result fields), and the methods, their options and the head
    weights it covered in the summary (older records kept them in the fingerprint)."""
    from ..evaluation.config import fingerprint_v0

    ev = fp.get("eval", {})
    summary = {**summary, "methods": summary.get("methods") or {k: ev.get(k) for k in ("methods", "method_options")},
               "heads": summary.get("heads") or fp.get("heads") or {}}
    return {**{k: v for k, v in fp.items() if k != "heads"}, "eval": fingerprint_v0(ev)}, summary


def _stage_v0(rec: dict) -> dict:
    """Format 0 -> 1: the fingerprint moves to the top level, and each shape gets the options it left out."""
    fp, summary = rec.get("fingerprint", {}), rec.get("summary") or {}
    if "eval" in fp and "splits" in fp:
        fp, summary = _eval_v0(fp, summary)
    elif "lpo" in fp and "collect" in fp:  # a train stage: its collect fingerprint with its LPO options
        fp = {**fp, "collect": _collect_v0(fp["collect"])}
    elif "level" in fp and "train_ids" in fp:
        fp = _collect_v0(fp)
    return {**fp, "summary": summary, "wall_s": rec.get("wall_s", 0.0), "finished_at": rec.get("finished_at")}


def _contents_part(fp: dict) -> str | None:
    """Where a stage's fingerprint holds its tasks' contents, by its shape: at its top (collect: "" ), in its collect
    part (train), in its eval part (eval); None for another shape."""
    if "train_ids" in fp:
        return ""
    part = "collect" if "lpo" in fp else "eval" if "eval" in fp else None
    return part if part and isinstance(fp.get(part), dict) else None


def _with_contents(fp: dict, part: str, contents) -> dict:
    return {**fp, "task_contents": contents} if part == "" else {**fp, part: {**fp[part], "task_contents": contents}}


def _stage_v1(rec: dict) -> dict:
    """Format 1 -> 2: a collect, train or eval fingerprint gains the digests of its tasks' contents, which format 1
    did not record: None, accepted on resume with a warning (`tasks.identity.content_changes`)."""
    part = _contents_part(rec)
    return rec if part is None else _with_contents(rec, part, None)


def _stage_v2(rec: dict) -> dict:
    """Format 2 -> 3: a collect fingerprint (a train stage's collect part) gains the sampling backend, which every
    collection of format 2 drew with HF generate ("hf"); an eval fingerprint already held its own."""
    if "train_ids" in rec:
        return {**rec, "backend": "hf"}
    if "lpo" in rec and isinstance(rec.get("collect"), dict):
        return {**rec, "collect": {**rec["collect"], "backend": "hf"}}
    return rec


DONE = "stage_done.json"
STAGE = RecordKind(DONE, "experiment stage", version=3, state=("summary", "wall_s", "finished_at"),
                   migrations={0: _stage_v0, 1: _stage_v1, 2: _stage_v2})


def stage_record(stage_dir: Path, fingerprint: dict) -> tuple[dict | None, list[str]]:
    """A stage's finished record (None if it has not finished) and the settings in which it differs from
    `fingerprint`."""
    from ..tasks.identity import content_changes

    record = RunRecord(stage_dir, STAGE)
    rec = record.read()
    part = _contents_part(fingerprint)
    now = None if part is None else (fingerprint if part == "" else fingerprint[part]).get("task_contents")
    if rec is None or not isinstance(now, dict) or _contents_part(rec) != part:
        return rec, record.changes(fingerprint, rec)
    # task contents are compared by task, naming the one that changed; the rest as a whole
    old = (rec if part == "" else rec[part]).get("task_contents")
    diff = content_changes(old, now, stage_dir)
    return rec, record.changes(fingerprint, _with_contents(rec, part, now)) + diff


def stage_done(stage_dir: Path, fingerprint: dict) -> dict | None:
    """The stage's record if it finished with the same settings; None if it has not finished; error if it
    finished with other settings."""
    rec, diff = stage_record(stage_dir, fingerprint)
    if diff:
        raise ValueError(f"{stage_dir} finished with different settings ({', '.join(diff)} differ); "
                         "use a new run_dir (or delete that stage directory to redo it)")
    return rec


def mark_done(stage_dir: Path, fingerprint: dict, summary: dict, wall_s: float) -> dict:
    return RunRecord(stage_dir, STAGE).write(fingerprint, summary=summary, wall_s=round(wall_s, 2),
                                             finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
