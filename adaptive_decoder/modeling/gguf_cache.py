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
fresh temporary directory beside the entry, writes `COMPLETE` last and renames the directory into place (atomic
on one filesystem), so a crash or a full disk leaves at most a temporary directory that no lookup reads; an entry
without its `COMPLETE` (cut by hand, say) is a miss and is replaced by the next store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

ENV = "ADAPTIVE_DECODER_CACHE"
FORMAT = 1
COMPLETE = "adaptive_decoder_cache.json"


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
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=entry.parent))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / COMPLETE).write_text(json.dumps({"key": key, "source": source, "format": FORMAT}))
        if entry.exists() and lookup(key) is None:  # an incomplete entry: never read, so replace it
            shutil.rmtree(entry)
        os.rename(tmp, entry)
        tmp = None
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
