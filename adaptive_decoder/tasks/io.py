"""Reading task data: local JSONL / JSON files (with line-numbered errors) or a Hugging Face dataset id."""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

BAD_LINE_POLICIES = ("fail", "skip")
BUILTIN_DIR = Path(__file__).resolve().parent / "data"


class DataFormatError(ValueError):
    """A data file exists but a record is malformed (message names the file and line)."""


def read_jsonl(path, *, expected: str, on_bad_line: str = "fail", validate=None) -> list[tuple[int, dict]]:
    """Records of a JSONL file as (line_number, record), 1-based line numbers, blank lines ignored.

    `expected` describes the format for error messages. A line that is not a JSON object, or that `validate(record)`
    rejects (by raising ValueError), raises `DataFormatError` naming the line when on_bad_line="fail", or is skipped
    with a warning when on_bad_line="skip".
    """
    if on_bad_line not in BAD_LINE_POLICIES:
        raise ValueError(f"on_bad_line must be one of {BAD_LINE_POLICIES}, got {on_bad_line!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} not found; expected a JSONL file, one JSON object per line: {expected}")
    out, skipped = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError(f"a JSON {type(rec).__name__}, not an object")
                if validate is not None:
                    validate(rec)
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                msg = f"{path}:{lineno}: malformed record ({e}); expected {expected}"
                if on_bad_line == "fail":
                    raise DataFormatError(msg + " (pass on_bad_line='skip' to skip bad lines)") from None
                logger.warning("skipping %s", msg)
                skipped.append(lineno)
                continue
            out.append((lineno, rec))
    if skipped:
        logger.warning("%s: skipped %d malformed line(s): %s", path, len(skipped), skipped[:20])
    if not out:
        raise DataFormatError(f"{path} holds no valid record; expected {expected}")
    return out


def load_hf_dataset(hf_id: str, split: str, config: str | None = None) -> list[tuple[int, dict]]:
    """Rows of a Hugging Face dataset as (row_index, record). Needs the optional `datasets` package."""
    try:
        import datasets  # noqa: PLC0415  (optional dependency)
    except ImportError:
        raise ImportError(f"loading the HF dataset {hf_id!r} needs the `datasets` package: run `pip install datasets` "
                          "(or give a local JSONL file with path=...)") from None
    ds = datasets.load_dataset(hf_id, config, split=split)
    return [(i, dict(r)) for i, r in enumerate(ds)]
