"""Evaluation tasks (lm-eval-harness style registry): `get_task("gsm8k", path=..., num_fewshot=...)`.

Each task loads examples from a local JSONL file (`path=`), a Hugging Face dataset id (`hf_id=`, needs the
optional `datasets` package) or, by default, a small prompt set shipped in `adaptive_decoder/tasks/data/`;
`Task.split(n_test, n_dev, seed)` draws a deterministic subset. `Task.score(texts, example)` returns per-sample
metrics with the scalar comparison "reward" and per-prompt diversity metrics. The reward of each task is
documented in its module docstring.
"""

from .base import Task
from .constrained_writing import ConstrainedWriting, strip_pos
from .creative_writing import CreativeWriting
from .gsm8k import GSM8K
from .io import DataFormatError, read_jsonl
from .translation import Translation

TASKS = {t.name: t for t in (GSM8K, Translation, ConstrainedWriting, CreativeWriting)}


def get_task(name: str, **options) -> Task:
    """Build a registered task; unknown names list the valid ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {sorted(TASKS)}")
    return TASKS[name](**options)


__all__ = ["TASKS", "Task", "get_task", "GSM8K", "Translation", "ConstrainedWriting", "CreativeWriting",
           "DataFormatError", "read_jsonl", "strip_pos"]
