"""A user cache of GGUF files converted to Hugging Face model directories, so a GGUF is converted once, not per run.

transformers reads a GGUF three times per `from_pretrained` pair (tokenizer, config, weights), each time parsing
every metadata field (SmolLM2's 49k-token vocabulary and its merges) through numpy memmaps, then maps tensor names
once per module: 16.5 s of a SmolLM2 load on the 2-core bench machine, against 1.2 s to load the same model from
safetensors (bench/vllm_natural_copy.md, "Fixed cost of a start"). `load_base_model` therefore saves what it converted
(`store`: the dequantized weights in the loaded dtype as safetensors, the config, the tokenizer and generation
config, all by `save_pretrained`) and later loads that directory instead (`lookup`).

Key (`fingerprint`): the sha256 of the GGUF file's bytes, the dtype, the transformers and gguf versions (the
conversion is theirs) and `FORMAT` (this module's layout; raise it when what is stored changes). A changed file,
dtype or converter is a miss, never a stale hit.

Location: `$ADAPTIVE_DECODER_CACHE/gguf/<key>`, else `$XDG_CACHE_HOME/adaptive-decoder/gguf/<key>`, else
`~/.cache/adaptive-decoder/gguf/<key>`; `ADAPTIVE_DECODER_CACHE=` (set and empty) turns the cache off.

Invariant: a directory is used only if it holds `COMPLETE` naming its own key. `store` writes everything into a
fresh temporary directory beside the entry, flushes it to disk, writes `COMPLETE` last and renames the directory
into place (atomic on one filesystem), so a crash, a power cut or a full disk leaves at most a temporary directory
that no lookup reads; an entry without its `COMPLETE` (cut by hand, say) is a miss and is replaced by the next store.
A killed store's temporary directory (a dequantized copy of the model: 0.5 GB for SmolLM2 in float32) is removed by
the next store once none of its files has been written for `STALE_S`: a live store writes its files continuously.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

ENV = "ADAPTIVE_DECODER_CACHE"
# 2: the stored tokenizer adds BOS / EOS as its GGUF says (models.apply_special_token_flags); a format-1 entry
# converted by transformers 5.19 holds a Gemma-3 tokenizer without BOS, and must not be served
FORMAT = 2
COMPLETE = "adaptive_decoder_cache.json"
# An hour without a write: a live store rewrites its weights file every few seconds even for a 7B model at disk
# speed, so only a killed store's directory gets this old (a cache shared by several machines needs no clock
# agreement beyond that)
STALE_S = 3600


def cache_root() -> Path | None:
    """The cache's root directory (see the module docstring); None when the cache is off."""
    if ENV in os.environ:
        value = os.environ[ENV]
        return Path(value).expanduser() if value else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "adaptive-decoder"


def fingerprint(gguf_path, dtype) -> str:
    """The entry key of `gguf_path` loaded in `dtype` (a torch dtype or its name): file bytes, dtype, converter."""
    import importlib.metadata

    h = hashlib.sha256()
    with open(gguf_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    # the installed distributions' versions: the gguf package has no __version__ attribute (0.19.0)
    versions = [importlib.metadata.version(name) for name in ("transformers", "gguf")]
    h.update(json.dumps([str(dtype).removeprefix("torch."), *versions, FORMAT]).encode())
    return h.hexdigest()[:32]


def lookup(key: str) -> Path | None:
    """The complete entry for `key`, or None (no cache, no entry, or an entry without its completion record)."""
    root = cache_root()
    if root is None:
        return None
    entry = root / "gguf" / key
    try:
        record = json.loads((entry / COMPLETE).read_text())
    except (OSError, ValueError):
        return None
    return entry if isinstance(record, dict) and record.get("key") == key else None


def store(key: str, model, tokenizer, source: str) -> Path | None:
    """Write `model` and `tokenizer` as the entry for `key` (see the module docstring); returns the entry, or None
    when the cache is off or could not be written (a warning: the run goes on with the model it has)."""
    root = cache_root()
    if root is None:
        return None
    entry = root / "gguf" / key
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(entry.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=entry.parent))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _flush(tmp)  # the files' bytes reach the disk before a record says they are complete
        (tmp / COMPLETE).write_text(json.dumps({"key": key, "source": source, "format": FORMAT}))
        _flush(tmp, [tmp / COMPLETE])
        if entry.exists() and lookup(key) is None:  # an incomplete entry: never read, so replace it
            shutil.rmtree(entry)
        os.rename(tmp, entry)
        tmp = None
        _flush(entry.parent, [])  # and the rename itself
    except FileExistsError:
        pass  # another process stored the same key first; its entry is as good
    # an OSError (Linux's rename gives ENOTEMPTY, not EEXIST, when another process's entry is in place: then it is
    # returned) or safetensors' SafetensorError for a failed weights write (a full disk)
    except Exception as e:
        if lookup(key) is None:
            logger.warning("could not write the GGUF conversion cache at %s (%s); set %s to another directory, or "
                           "to an empty value to turn the cache off", entry, e, ENV)
            return None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return entry


def _flush(directory: Path, files=None) -> None:
    """fsync `files` (default: every file in `directory`), then `directory` itself (its entries)."""
    for f in (sorted(p for p in directory.iterdir() if p.is_file()) if files is None else files):
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale(gguf_dir: Path) -> list[Path]:
    """Remove the temporary directories of killed stores under `gguf_dir` (named `.<key>-*`; see the module
    docstring): those whose newest file, or the directory itself when empty, is older than `STALE_S`. Returns them.
    Complete entries are never touched."""
    now = time.time()
    removed = []
    for tmp in gguf_dir.glob(".*-*"):
        try:
            newest = max([tmp.stat().st_mtime] + [p.stat().st_mtime for p in tmp.rglob("*")])
        except OSError:  # removed meanwhile (another store cleaning up, or its owner finishing)
            continue
        if tmp.is_dir() and now - newest > STALE_S:
            shutil.rmtree(tmp, ignore_errors=True)
            logger.info("removed %s, the temporary directory of a store that did not finish", tmp)
            removed.append(tmp)
    return removed
