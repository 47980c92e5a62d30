"""A collection split over independent jobs (a Slurm array, several machines), and the merge into one collection.

    adaptive-decoder collect --config C.yaml --shard 0/2 --output_dir runs/col/part-0     # array task 0
    adaptive-decoder collect --config C.yaml --shard 1/2 --output_dir runs/col/part-1     # array task 1
    adaptive-decoder merge runs/col/merged runs/col/part-0 runs/col/part-1                 # then train on merged

Shard `i/n` collects the prompts at positions i, i + n, i + 2n, ... of the config's prompt list (every task's
prompts, in the config's order), so the n parts are disjoint and together hold every prompt, whatever n is. Each
part is an ordinary collection directory: resumable on its own, its manifest recording the shard in its settings
(a resume with another shard is refused by name) and how many prompts it was given. A prompt's samples depend on
the prompts batched with it (their ids seed the batch), so a sharded collection holds other samples than an
unsharded one from the same config; it is drawn from the same distribution.

`merge_collections` checks that the parts are one collection cut in n: the same base model, head, task specs and
settings but for the shard (a difference is refused naming the key), every index 0..n-1 present once, each part
finished, no prompt in two parts; every shard file is verified against its checksum. It writes a new collection
directory whose manifest lists every part's shard files under new names, the files hard-linked (copied across
file systems), so LPO training reads it like any collection.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..configs import describe_changes
from ..storage import RunRecord
from .store import COLLECTION, _read_shard, _shard_files, read_manifest


def parse_shard(text: str) -> tuple[int, int]:
    """(index, count) of "i/n" with 0 <= i < n; ValueError (one line) otherwise."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard must be 'INDEX/COUNT' (e.g. 0/2, the first of two parts), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard {text!r}: need 0 <= INDEX < COUNT (indices start at 0)")
    return i, n


def shard_prompts(prompts: list[dict], shard: str | None) -> list[dict]:
    """The prompts shard `shard` ("i/n") collects: positions i, i + n, ...; all of them when `shard` is None."""
    if not shard:
        return list(prompts)
    i, n = parse_shard(shard)
    return list(prompts[i::n])


def _identity(m: dict) -> dict:
    settings = {k: v for k, v in m["settings"].items() if k != "shard"}
    return {"base_model": m.get("base_model"), "head": m.get("head"), "settings": settings, "tasks": m.get("tasks"),
            "task_contents": m.get("task_contents")}


def merge_collections(out, parts, *, copy: bool = False) -> Path:
    """Merge the collection directories `parts` (the n shards of one collect config) into `out` (new or empty);
    returns `out`. See the module docstring for what is checked."""
    out, parts = Path(out), [Path(p) for p in parts]
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory; give a new output directory")
    if not parts:
        raise ValueError("give the shard directories to merge")
    manifests = [read_manifest(p) for p in parts]
    shards = []
    for p, m in zip(parts, manifests):
        s = m["settings"].get("shard")
        if not s:
            raise ValueError(f"{p} was not collected as a shard (no settings.shard); merge only the parts of one "
                             "sharded collect config")
        shards.append(parse_shard(s))
    count = {n for _, n in shards}
    if len(count) != 1:
        raise ValueError(f"the parts were cut into different numbers of shards: {sorted(count)}")
    (n,) = count
    indices = sorted(i for i, _ in shards)
    if indices != list(range(n)):
        missing = sorted(set(range(n)) - set(indices))
        dup = sorted({i for i in indices if indices.count(i) > 1})
        raise ValueError(f"a merge needs each of the {n} shards once: missing {missing}, given twice {dup}")
    first = _identity(manifests[0])
    for p, m in zip(parts[1:], manifests[1:]):
        diffs = describe_changes(first, _identity(m))
        if diffs:
            raise ValueError(f"{p} is not a part of the same collection as {parts[0]}: " + "; ".join(diffs))
    seen: dict[str, Path] = {}
    for p, m in zip(parts, manifests):
        expected = m.get("prompts_expected")
        if expected is None or len(m["done"]) < expected:
            raise ValueError(f"{p} is not finished: {len(m['done'])} of {expected} prompts collected; rerun its "
                             "collect command (it resumes) before merging")
        for pid in m["done"]:
            if pid in seen:
                raise ValueError(f"prompt {pid!r} is in both {seen[pid]} and {p}")
            seen[pid] = p

    (out / "shards").mkdir(parents=True)
    (out / "hidden").mkdir()
    place = os.link if not copy else shutil.copyfile
    listed, number = [], 0
    try:
        for p, m in zip(parts, manifests):
            for shard in m["shards"]:
                _read_shard(p, shard, hidden_checksum=True)  # never merge a damaged file
                name = f"shard-{number:05d}"
                number += 1
                for src, dst in zip(_shard_files(p, shard["name"]), _shard_files(out, name)):
                    if src.exists():
                        try:
                            place(src, dst)
                        except OSError:  # another file system: hard links cannot cross it
                            shutil.copyfile(src, dst)
                listed.append({**shard, "name": name})
        identity = _identity(manifests[0])
        identity["settings"]["shard"] = None  # the merge holds every part
        RunRecord(out, COLLECTION).write(
            identity, shards=listed, done=[pid for m in manifests for pid in m["done"]],
            hidden_bytes=sum(m["hidden_bytes"] for m in manifests),
            prompts_expected=sum(m["prompts_expected"] for m in manifests),
            merged_from=[{"dir": str(p), "shard": m["settings"]["shard"]} for p, m in zip(parts, manifests)])
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # never leave a half-merged directory that looks like a collection
        raise
    return out
