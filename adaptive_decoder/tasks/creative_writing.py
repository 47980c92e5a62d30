"""Open creative writing: EQ-Bench creative-writing prompts (expanded with their seed modifiers) or any
{"prompt": str} JSONL; built-in: `tasks/data/story_prompts.jsonl`; `dataset: eqbench.creative_writing` names the
EQ-Bench file (fetched into the `datasets` cache, or its local copy under $ADAPTIVE_DECODER_DATA).

Per-sample metrics: repetition (1 - repeated 3-gram rate), fluency (mean token log-likelihood under the base
model, nats), reward_model (when `reward_model=` names a sequence-classification reward model); per prompt:
self-BLEU and distinct-1/2 over the k samples.
Reward: the reward-model score when one is configured; otherwise repetition + 0.1 * fluency (a cheap proxy that
penalises both loops and high-temperature gibberish; fluency is clamped at -20 nats, so it lies in [-2, 1]).
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import Task, require
from .io import DataFormatError


class CreativeWriting(Task):
    name = "creative_writing"
    expected = ('{"prompt": str} per line (JSONL), or the EQ-Bench creative_writing_prompts.json object '
                '{id: {"writing_prompt": "... <SEED> ...", "seed_modifiers": [str, ...]}}')
    builtin = "story_prompts.jsonl"
    metric_spec = {"repetition": {"n": 3}, "fluency": {}}
    options = {"reward_model": None, "seeds_per_prompt": None}
    diversity = True

    def _default_reward(self) -> dict:
        if self.opts["reward_model"]:
            return {"reward_model": {"path": self.opts["reward_model"]}}
        return {"repetition": {"weight": 1.0, "n": 3}, "fluency": {"weight": 0.1}}

    def _raw_records(self):
        # the EQ-Bench file is one JSON object (a downloaded copy keeps no suffix: its url says what it is)
        if self.data_file() is None or ".json" not in (Path(self.path).suffix, Path(self.data.get("url") or "").suffix):
            return super()._raw_records()
        path = Path(self.path)
        if not path.is_file():
            raise FileNotFoundError(f"data file {path} not found; expected {self.expected}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}: not valid JSON (line {e.lineno}: {e.msg}); expected {self.expected}") from None
        if not isinstance(data, dict):
            raise DataFormatError(f"{path}: expected a JSON object keyed by prompt id; expected {self.expected}")
        out = []
        for i, (key, rec) in enumerate(data.items()):
            rec = {**rec, "_key": key} if isinstance(rec, dict) else rec
            try:
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
                self.to_examples(rec, i)
            except ValueError as e:
                if self.on_bad_line == "fail":
                    raise DataFormatError(f"{path}: prompt {key!r}: malformed ({e}); expected {self.expected}") from None
                continue
            out.append((i, rec))
        return out

    def to_examples(self, record: dict, index: int) -> list[dict]:
        if "writing_prompt" in record:
            template = require(record, "writing_prompt")
            seeds = record.get("seed_modifiers") or [""]
            if not isinstance(seeds, list):
                raise ValueError("'seed_modifiers' must be a list of strings")
            n = self.opts["seeds_per_prompt"]
            seeds = seeds[: int(n)] if n else seeds
            key = record.get("_key", str(index))
            return [{"id": f"{key}:{j}", "prompt": template.replace("<SEED>", str(s)).strip()} for j, s in enumerate(seeds)]
        return [{"id": str(index), "prompt": require(record, "prompt").strip()}]
