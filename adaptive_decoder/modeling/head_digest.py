"""The sha256 digest of a saved head's weights: written into its config.json, checked on every load.

Invariant: a head directory saved by `AdaptiveDecoderHead.save_pretrained` holds, in config.json under
`DIGEST_KEY`, the sha256 of the exact bytes of its model.safetensors. safetensors validates only the header, so
without the digest a file with overwritten tensor bytes (a torn copy, a disk error, a replaced file) loads as
a quietly different head. `verify_weights` refuses such a file; a head saved before digests were recorded has
none and still loads, with a warning.

The same digest identifies a head in run records (`head_fingerprint`, its first 16 hex digits: the value those
records have always stored), so "is this still the head that produced these units?" and "is this file intact?"
are one computation.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
DIGEST_KEY = "weights_sha256"
_CHUNK = 1 << 20


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):  # chunked: never the whole file in memory
            h.update(block)
    return h.hexdigest()


def weights_digest(head_dir) -> str | None:
    """sha256 (hex) of `head_dir`/model.safetensors; None when there is no such file."""
    p = Path(head_dir) / WEIGHTS_NAME
    return file_sha256(p) if p.is_file() else None


def head_fingerprint(head_dir) -> str | None:
    """A head's identity in run records: the first 16 hex digits of its weights digest (None: no weights)."""
    d = weights_digest(head_dir)
    return d[:16] if d else None


def recorded_digest(config_file) -> str | None:
    """The digest recorded in a head's config.json, or None (no file, no key: a head saved before digests)."""
    try:
        cfg = json.loads(Path(config_file).read_text())
    except (OSError, ValueError):
        return None
    d = cfg.get(DIGEST_KEY) if isinstance(cfg, dict) else None
    return d if isinstance(d, str) else None


def verify_weights(weights_file, recorded: str | None) -> None:
    """Raise ValueError naming `weights_file` if its bytes do not hash to `recorded`; warn if nothing is recorded."""
    if recorded is None:
        logger.warning("%s: config.json records no weights digest (saved before digests were recorded), so a "
                       "corrupted file cannot be detected; save the head again to add one", weights_file)
        return
    actual = file_sha256(weights_file)
    if actual != recorded.lower():
        raise ValueError(f"{weights_file}: weights do not match the digest in config.json: file corrupted or replaced "
                         f"(recorded sha256 {recorded[:16]}..., file has {actual[:16]}...)")
