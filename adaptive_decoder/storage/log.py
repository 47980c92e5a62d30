"""The append-only JSONL log: one record per line, appended and fsync'ed, read back whole on resume.

Torn-line rule (the one rule every log of the library follows): an append that a kill interrupts can leave only
the LAST line incomplete, so a last line that is not JSON (or has no final newline) is dropped with a warning and
its record is redone by whoever resumes; before the next append it is cut from the file, so new records start on
a fresh line. A broken line anywhere else cannot come from an interrupted append (the file was damaged or edited)
and raises ValueError naming `file:line`.

Lines are split at the byte "\\n" only: `json.dumps(..., ensure_ascii=False)` leaves U+2028, U+0085 and the other
Unicode line breaks raw inside a string, where `str.splitlines` would tear a record in two (a SmolLM2 sample at
T=1.2 held U+2028).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

_UNREAD = object()


class AppendLog:
    """An append-only JSONL file at `path`. `redo` says what happens to the record of a torn last line (e.g. "its
    prompt is searched again"); it is the text of the warning.

    `read()` returns the complete records; `append(records)` writes them (after cutting a torn last line), flushes
    and fsyncs, so the records of a returned `append` survive a kill -9. One writer per file (the directory lock).
    """

    def __init__(self, path, redo: str = "its record is redone"):
        self.path, self.redo = Path(path), redo
        self._cut = _UNREAD  # where a torn last line starts (None: no torn line), once the file has been parsed

    def _parse(self) -> tuple[list, int | None]:
        """(complete records, byte offset where a torn last line starts or None)."""
        if not self.path.exists():
            return [], None
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with its newline; else an append cut before its "\n"
        out, start = [], 0
        for n, line in enumerate(lines, 1):
            try:
                if line.strip():
                    out.append(json.loads(line.decode("utf-8")))
            except ValueError:  # JSONDecodeError, or a multi-byte character cut in half
                if n < len(lines) or tail:
                    raise ValueError(f"{self.path}:{n} is not valid JSON; the file is damaged (an interrupted write "
                                     f"can tear only the last line): delete line {n} to resume") from None
                return self._torn(out, start)
            start += len(line) + 1
        return self._torn(out, start) if tail else (out, None)

    def _torn(self, records: list, start: int) -> tuple[list, int]:
        logger.warning("%s: dropping a torn last line (interrupted write); %s", self.path, self.redo)
        return records, start

    def read(self) -> list:
        """The records of the log, [] when there is no file (the torn-line rule: see the module docstring)."""
        records, self._cut = self._parse()
        return records

    def append(self, records: list) -> None:
        """Append `records`, one line each, flushed and fsync'ed. A torn last line is cut first: the file is parsed
        once per `AppendLog` (by `read` or by the first append), since only its writer appends to it."""
        if not records:
            return
        if self._cut is _UNREAD:
            self.read()
        if self._cut is not None:
            with open(self.path, "r+b") as f:
                f.truncate(self._cut)
            self._cut = None
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def read_jsonl_log(path, redo: str = "its record is redone") -> list:
    """The records of the append-only JSONL log at `path` (`AppendLog.read`)."""
    return AppendLog(path, redo).read()
