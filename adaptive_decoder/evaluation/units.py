"""Units of the suite's work: one (method, task, split, prompt) with its k samples, kept in an append-only,
fsync'ed JSONL log (`UnitStore`) so a killed run loses at most the batch in flight; and how a policy's output for
one prompt becomes a unit."""

from __future__ import annotations

import logging
from pathlib import Path

from ..storage import AppendLog


logger = logging.getLogger(__name__)


class UnitStore:
    """Append-only JSONL of finished units, keyed by (method, task, split, prompt_id).

    The log follows `storage.AppendLog`'s torn-line rule: a torn last line (the process died mid-write) is dropped
    with a warning and its unit recomputed; a broken line elsewhere raises ValueError naming it. Appends are
    flushed and fsync'ed per batch.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.log = AppendLog(self.path, redo="its unit is recomputed")
        self.units: dict = {}
        for u in self.log.read():
            self.units[self.key(u["method"], u["task"], u["split"], u["prompt_id"])] = u

    @staticmethod
    def key(method, task, split, prompt_id) -> tuple:
        return (method, task, split, str(prompt_id))

    def done(self, method, task, split, prompt_id) -> bool:
        return self.key(method, task, split, prompt_id) in self.units

    def get(self, method, task, split, prompt_id) -> dict:
        return self.units[self.key(method, task, split, prompt_id)]

    def add(self, units: list):
        self.log.append(units)
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
