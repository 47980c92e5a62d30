"""Start a run from another run's samples: `reuse_from` for ablations of training (an LPO pairing, beta, epochs).

An ablation of what happens after collection should change only that. Collecting again would redraw the samples
(another draw of noise in the comparison) and cost most of the run: the SmolLM2 control's three seeds took 1 h 40 min,
and their all-pairs ablation, which needed only its training and its own head's units, 6 min.

What is copied from the source run into a new run_dir, per seed, before any stage runs:
  - each finished `collect-<level>` stage, whole, if it finished with this run's collection fingerprint (model,
    dtype, head bins, collect settings, train prompts, rewards, seed);
  - the evaluation units of every method that does not read a trained head (greedy, the grid, random, the oracle,
    HAG, ...), if the source's evaluation finished with this run's evaluation fingerprint (and test/dev splits).
With `reuse_collections: false` the collections are not copied (this run collects its own: an ablation of the
head or of collection, e.g. a min-p factor); the evaluation units still are, since no collection setting changes
them. Never copied: the train stages, and the units of any method whose results name a `head_path` (ADseq, ADtok,
MeanShift, which is fitted on the head's dev units): they are what the ablation changes, and this run computes them.

Invariant: every copied file is one this run would have written itself, so a reused run's results equal those of
the same config run from scratch with the same seeds (bit for bit, as resume is). A source stage with other settings is
refused by name; one that has not finished is not copied (a collection then stops the run; evaluation units are
simply computed). Each source stage is checked (`collection_to_copy`, `eval_units_to_copy`) before the first copy, so a
refusal leaves this run as it was. The source is only read, and a stage this run already has is never overwritten
(rerunning an ablation resumes it).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from ..evaluation.config import RUN_CONFIG
from ..evaluation.units import UnitStore
from ..storage import RunRecord
from .stages import DONE, stage_record

logger = logging.getLogger(__name__)


def _checked(src_stage: Path, fingerprint: dict) -> dict | None:
    """The source stage's record if it finished with `fingerprint`, None if it did not finish; a clear error if it
    finished with other settings."""
    rec, diff = stage_record(src_stage, fingerprint)
    if diff:
        raise ValueError(f"reuse_from: {src_stage} ran with other settings than this run ({', '.join(diff)} differ), "
                         "so its samples are not this run's; reuse a run with the same collection and evaluation "
                         "settings, or drop reuse_from")
    return rec


def collection_to_copy(src_stage: Path, dst_stage: Path, fingerprint: dict) -> bool:
    """Whether the source's collection stage is copied: True if it finished with `fingerprint`, False if this run has
    that stage directory already; a clear error if it finished with other settings or has not finished."""
    if dst_stage.exists():
        return False
    if _checked(src_stage, fingerprint) is None:
        raise ValueError(f"reuse_from: {src_stage} has no finished collection ({DONE} missing); finish that run "
                         "first (rerun its command) or drop reuse_from")
    return True


def copy_collection(src_stage: Path, dst_stage: Path, fingerprint: dict) -> bool:
    """Copy a finished collection stage (samples, cached head inputs, collecting head, stage record); False if this
    run has that stage directory already (`collection_to_copy`)."""
    if not collection_to_copy(src_stage, dst_stage, fingerprint):
        return False
    tmp = dst_stage.with_name(dst_stage.name + ".copying")
    shutil.rmtree(tmp, ignore_errors=True)  # a copy interrupted before its rename
    shutil.copytree(src_stage, tmp)
    tmp.rename(dst_stage)  # atomic: the stage appears whole or not at all
    return True


def head_methods(results: dict) -> set[str]:
    """Names of the evaluated methods that read a trained head: their results record its `head_path`."""
    return {name for name, m in results.get("methods", {}).items() if m.get("head_path")}


def eval_units_to_copy(src_eval: Path, dst_eval: Path, fingerprint: dict) -> bool:
    """Whether units of the source's evaluation are copied: True if it finished with `fingerprint`; False if this run
    has begun its own evaluation, or the source's has not finished (logged: every unit is then computed here); a
    clear error if it finished with other settings."""
    if dst_eval.exists():
        return False
    if _checked(src_eval, fingerprint) is None:
        logger.warning("reuse_from: %s has not finished; every evaluation unit is computed here", src_eval)
        return False
    return True


def copy_eval_units(src_eval: Path, dst_eval: Path, fingerprint: dict) -> int:
    """Copy the units of the methods without a trained head from a finished evaluation, through the evaluation's
    own record and unit log (the record migrated to the current format, as the evaluator reads it); the number
    copied (0 where `eval_units_to_copy` says no)."""
    if not eval_units_to_copy(src_eval, dst_eval, fingerprint):
        return 0
    drop = head_methods(json.loads((src_eval / "results.json").read_text()))
    units = [u for u in UnitStore(src_eval / "units.jsonl").units.values() if u["method"] not in drop]
    src = RunRecord(src_eval, RUN_CONFIG)
    rec = src.read()
    dst_eval.mkdir(parents=True)
    # the evaluator checks these on resume: its settings, and the options of each method that has units
    RunRecord(dst_eval, RUN_CONFIG).write(src.identity(rec), methods=rec["methods"],
                                          heads={n: d for n, d in rec["heads"].items() if n not in drop})
    UnitStore(dst_eval / "units.jsonl").add(units)
    return len(units)
