"""Constrained writing (CommonGen concept sets): "write a short story that uses the words ...".

Source records: CommonGen {"concept_set": "field_N#look_V#stand_V", ...} (the `_N`/`_V` part-of-speech suffixes
are stripped), or {"concepts": [words]} (e.g. the HF dataset "allenai/common_gen": `dataset: commongen.dev`, one
prompt per concept set); built-in: `tasks/data/concept_sets.jsonl`.
Per-sample metrics: concepts (word coverage in [0, 1], simple inflections count), repetition (1 - repeated
3-gram rate), fluency (mean token log-likelihood under the base model, nats). Per prompt: self-BLEU (higher =
samples more alike) and distinct-1/2 over the k samples.
Reward: 0.5 * coverage + 0.5 * repetition (in [0, 1]): uses the words without looping.
"""

from __future__ import annotations

import re

from .base import Task

TEMPLATE = "Write a short story (three to five sentences) that uses all of these words: {words}."
_POS = re.compile(r"_[A-Z]+$")


def strip_pos(concept: str) -> str:
    """CommonGen concept without its part-of-speech suffix: "look_V" -> "look", "field_N" -> "field"."""
    return _POS.sub("", concept.strip())


class ConstrainedWriting(Task):
    name = "constrained_writing"
    expected = '{"concept_set": "word_N#word_V#..."} (CommonGen) or {"concepts": [str, ...]}'
    builtin = "concept_sets.jsonl"
    default_reward = {"concepts": {"weight": 0.5}, "repetition": {"weight": 0.5, "n": 3}}
    metric_spec = {"concepts": {}, "repetition": {"n": 3}, "fluency": {}}
    options = {"template": TEMPLATE}
    diversity = True

    def to_examples(self, record: dict, index: int) -> list[dict]:
        if isinstance(record.get("concept_set"), str):
            words = [strip_pos(c) for c in record["concept_set"].split("#")]
        elif isinstance(record.get("concepts"), list):
            words = [strip_pos(str(c)) for c in record["concepts"]]
        else:
            raise ValueError(f"needs 'concept_set' (str) or 'concepts' (list), has {sorted(record)}")
        if not words or any(not w for w in words):
            raise ValueError(f"empty concept in {record.get('concept_set', record.get('concepts'))!r}")
        return [{"id": str(index), "prompt": self.opts["template"].format(words=", ".join(words)), "concepts": words}]
