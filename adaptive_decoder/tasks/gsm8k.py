"""GSM8K-style math word problems: zero-shot chat prompt or k-shot from a train split; strict and flexible accuracy.

Source records: {"question": str, "answer": "<solution>\\n#### <number>"} (openai/grade-school-math JSONL, the HF
dataset "openai/gsm8k" config "main" = `dataset: gsm8k`, or the built-in generated set `tasks/data/arithmetic.jsonl`).
Metrics per sample: acc_strict (the number after "#### " equals the gold), acc_flexible (the last number in the
completion equals the gold); both use the lm-eval-harness extraction in `adaptive_decoder.rewards`.
Reward: acc_flexible (1.0 correct / 0.0 wrong), i.e. the spec {"gsm8k": {"mode": "flexible"}}.
"""

from __future__ import annotations

import random
import re

from ..rewards import extract_gsm8k_answer, gsm8k_gold, numbers_equal
from .base import Task, require
from .io import BUILTIN_DIR, load_hf_dataset, local_copy, public_dataset, read_jsonl

INSTRUCTION = ("Solve the following math problem step by step. At the end, write the final answer as a number "
               "on its own line in the form '#### <number>'.")
_CALC = re.compile(r"<<[^>]*>>")


def clean_solution(answer: str) -> str:
    """A GSM8K answer field without the <<calculator>> annotations (as shown in k-shot examples)."""
    return _CALC.sub("", answer).strip()


class GSM8K(Task):
    name = "gsm8k"
    expected = '{"question": str, "answer": "<worked solution> #### <number>"} (GSM8K)'
    builtin = "arithmetic.jsonl"
    default_reward = {"gsm8k": {"mode": "flexible"}}
    options = {"num_fewshot": 0, "fewshot_path": None, "fewshot_seed": 1234, "instruction": INSTRUCTION}

    def __init__(self, **kw):
        super().__init__(**kw)
        k = int(self.opts["num_fewshot"])
        if k < 0:
            raise ValueError(f"gsm8k num_fewshot must be >= 0, got {k}")
        self.shots = self._load_shots(k) if k else []

    def _load_shots(self, k: int) -> list[dict]:
        path = self.opts["fewshot_path"]
        if path is not None:
            rows = read_jsonl(path, expected=self.expected, on_bad_line=self.on_bad_line, validate=self._check)
        elif self.dataset_name == "gsm8k":  # the shots from the train split of the same public dataset
            train = public_dataset("gsm8k.train")
            copy = local_copy(train["local"])
            rows = (read_jsonl(copy, expected=self.expected) if copy else
                    load_hf_dataset(train["hf_id"], train["hf_split"], train["hf_config"], task=self.name,
                                    local=train["local"]))
        elif self.hf_id:
            rows = load_hf_dataset(self.hf_id, "train", self.hf_config, revision=self.data.get("hf_revision"),
                                   task=self.name)
        elif self.path is None:
            rows = read_jsonl(BUILTIN_DIR / "arithmetic_train.jsonl", expected=self.expected)
        else:
            raise ValueError("gsm8k num_fewshot > 0 needs fewshot_path= (a GSM8K train.jsonl) when path= is given")
        rows = [r for _, r in rows]
        if len(rows) < k:
            raise ValueError(f"gsm8k num_fewshot={k} but the few-shot source has only {len(rows)} examples")
        rng = random.Random(int(self.opts["fewshot_seed"]))
        return rng.sample(rows, k)

    @staticmethod
    def _check(rec: dict):
        require(rec, "question")
        gsm8k_gold(require(rec, "answer"))

    def to_examples(self, record: dict, index: int) -> list[dict]:
        self._check(record)
        q = record["question"].strip()
        parts = [self.opts["instruction"], ""]
        if self.shots:
            for s in self.shots:
                parts += [f"Question: {s['question'].strip()}", f"Answer: {clean_solution(s['answer'])}", ""]
            parts += [f"Question: {q}", "Answer:"]
        else:
            parts += [f"Question: {q}"]
        return [{"id": str(index), "prompt": "\n".join(parts), "question": q, "answer": record["answer"]}]

    def extra_sample_metrics(self, text: str, example: dict) -> dict:
        gold = gsm8k_gold(example["answer"])
        return {"acc_strict": float(numbers_equal(extract_gsm8k_answer(text, "strict"), gold)),
                "acc_flexible": float(numbers_equal(extract_gsm8k_answer(text, "flexible"), gold))}
