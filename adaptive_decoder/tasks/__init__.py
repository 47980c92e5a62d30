"""Evaluation tasks (lm-eval-harness style registry): `get_task("gsm8k", path=..., num_fewshot=...)`.

Each task loads examples from a local JSONL file (`path=`), a Hugging Face dataset id (`hf_id=`, needs the
optional `datasets` package) or, by default, a small prompt set shipped in `adaptive_decoder/tasks/data/`;
`Task.split(n_test, n_dev, seed)` draws a deterministic subset. `Task.score(texts, example)` returns per-sample
metrics with the scalar comparison "reward" and per-prompt diversity metrics. The reward of each task is
documented in its module docstring.
"""

from .arithmetic import Arithmetic
from .base import Task
from .data_task import DataTask, TaskFileError, file_task_names, find_task_file, load_task_spec, task_class
from .constrained_writing import ConstrainedWriting, strip_pos
from .creative_writing import CreativeWriting
from .gsm8k import GSM8K
from .io import DataFormatError, read_jsonl
from .translation import Translation

TASKS = {t.name: t for t in (GSM8K, Translation, ConstrainedWriting, CreativeWriting, Arithmetic)}


def available_tasks() -> list[str]:
    """Every task name `get_task` accepts (Python tasks, then task files; a path to a .yaml task file also works)."""
    return sorted(set(TASKS) | set(file_task_names()))


def is_task(name: str) -> bool:
    return name in TASKS or find_task_file(name) is not None


def get_task(name: str, **options) -> Task:
    """Build a registered task, or one defined by a task file (`adaptive_decoder.tasks.data_task`): a name found
    in configs/tasks/ or a path to a .yaml file; unknown names list the valid ones."""
    if name in TASKS:
        return TASKS[name](**options)
    path = find_task_file(name)
    if path is None:
        raise ValueError(f"unknown task {name!r}; valid: {available_tasks()} (or a path to a task .yaml file)")
    return task_class(path, name=name)(**options)


def check_tasks(names) -> None:
    unknown = sorted(t for t in names if not is_task(t))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; valid: {available_tasks()} (or a path to a task .yaml file)")


__all__ = ["TASKS", "Task", "get_task", "available_tasks", "is_task", "check_tasks", "DataTask", "TaskFileError",
           "task_class", "load_task_spec", "find_task_file", "GSM8K", "Arithmetic", "Translation", "ConstrainedWriting",
           "CreativeWriting",
           "DataFormatError", "read_jsonl", "strip_pos"]
