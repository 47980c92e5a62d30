"""Synthetic arithmetic: "What is 17 + 25? Reply with the number only." (no data file: drawn from a seeded RNG).

Records: {"question": "a op b", "answer": "#### <result>"} with a in [2, 60], b in [2, 40], op + or -, the i-th
drawn from `random.Random(data_seed)`, so every example keeps its id and text whatever `num_examples` is.
Reward: the GSM8K-style answer extraction ({"gsm8k": {"mode": "flexible"}}), the last number of the reply.
"""

from __future__ import annotations

import random

from .base import Task

TEMPLATE = "What is {question}? Reply with the number only."


class Arithmetic(Task):
    name = "arithmetic"
    expected = '{"question": "a + b", "answer": "#### <number>"} (generated)'
    default_reward = {"gsm8k": {"mode": "flexible"}}
    options = {"data_seed": 0, "num_examples": 1000, "template": TEMPLATE}

    @property
    def source(self) -> str:
        return f"arithmetic(data_seed={self.opts['data_seed']}, num_examples={self.opts['num_examples']})"

    def _raw_records(self) -> list[tuple[int, dict]]:
        if self.path or self.hf_id:
            return super()._raw_records()
        rng = random.Random(int(self.opts["data_seed"]))
        out = []
        for i in range(int(self.opts["num_examples"])):
            a, b = rng.randint(2, 60), rng.randint(2, 40)
            op = rng.choice("+-")
            out.append((i, {"question": f"{a} {op} {b}", "answer": f"#### {a + b if op == '+' else a - b}"}))
        return out

    def to_examples(self, record: dict, index: int) -> list[dict]:
        for k in ("question", "answer"):
            if k not in record:
                raise ValueError(f"missing field {k!r} (has {sorted(record)})")
        try:
            prompt = self.opts["template"].format(**record)
        except KeyError as e:
            raise ValueError(f"template field {e} is not in the record (has {sorted(record)})") from None
        return [{"id": str(index), "prompt": prompt, "question": record["question"], "answer": record["answer"]}]
