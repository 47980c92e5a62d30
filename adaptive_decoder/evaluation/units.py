"""Units of the suite's work: one (method, task, split, prompt) with its k samples, kept in an append-only,
fsync'ed JSONL log (`UnitStore`) so a killed run loses at most the batch in flight; and how a policy's output for
one prompt becomes a unit."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..storage import jsonl_lines


logger = logging.getLogger(__name__)


class UnitStore:
    """Append-only JSONL of finished units, keyed by (method, task, split, prompt_id).

    A torn last line (the process died mid-write) is cut off on open; a garbled line elsewhere is dropped with a
    warning (its unit is recomputed). Appends are flushed and fsync'ed per batch.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.units: dict = {}
        if self.path.exists():
            self._load()

    @staticmethod
    def key(method, task, split, prompt_id) -> tuple:
        return (method, task, split, str(prompt_id))

    def _load(self):
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            cut = raw.rfind(b"\n") + 1
            logger.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run", self.path, len(raw) - cut)
            raw = raw[:cut]
            self.path.write_bytes(raw)
        bad = []
        for lineno, line in enumerate(jsonl_lines(raw.decode("utf-8")), 1):
            if not line.strip():
                continue
            try:
                u = json.loads(line)
                self.units[self.key(u["method"], u["task"], u["split"], u["prompt_id"])] = u
            except (ValueError, KeyError, TypeError):
                bad.append(lineno)
        if bad:
            logger.warning("%s: ignoring %d unreadable line(s) %s; those units will be recomputed", self.path, len(bad), bad[:10])

    def done(self, method, task, split, prompt_id) -> bool:
        return self.key(method, task, split, prompt_id) in self.units

    def get(self, method, task, split, prompt_id) -> dict:
        return self.units[self.key(method, task, split, prompt_id)]

    def add(self, units: list):
        if not units:
            return
        data = "".join(json.dumps(u, ensure_ascii=False) + "\n" for u in units)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        for u in units:
            self.units[self.key(u["method"], u["task"], u["split"], u["prompt_id"])] = u


def _build_unit(policy_name, task, split, example, out, seed, seconds) -> dict:
    """One unit from a policy's output for one prompt; `seed` is the prompt's seed (`noise.prompt_seed`)."""
    samples_metrics, prompt_metrics = task.score(out.texts, example)
    samples = []
    for j, text in enumerate(out.texts):
        s = {"text": text, "num_tokens": len(out.completion_ids[j]), "values": out.values[j], "metrics": samples_metrics[j]}
        if "choices" in out.extra:
            s["choices"] = out.extra["choices"][j]
        samples.append(s)
    extra = {k: v for k, v in out.extra.items() if k != "choices"}
    rewards = [m["reward"] for m in samples_metrics]
    return {"method": policy_name, "task": task.name, "split": split, "prompt_id": example["id"],
            "seed": seed, "example": example, "samples": samples, "prompt_metrics": prompt_metrics,
            "reward": sum(rewards) / len(rewards), "extra": extra, "gen_seconds": seconds}
