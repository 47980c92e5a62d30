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


def _task_file(name: str):
    path = find_task_file(name)
    if path is None:
        raise ValueError(f"unknown task {name!r}; valid: {available_tasks()} (or a path to a task .yaml file)")
    return path


def get_task(name: str, **options) -> Task:
    """Build a registered task, or one defined by a task file (`adaptive_decoder.tasks.data_task`): a name found
    in configs/tasks/ or a path to a .yaml file; unknown names list the valid ones. A task file's task is named
    by its `task:` key (else the file's stem) however it was found, so `get_task("/x/my_task.yaml").name` is
    "my_task" and results are keyed the same whether a config names the task or its path (`task_name`).
    A `reward=` option is validated here (`check_reward_spec`), before anything is run with it."""
    if options.get("reward"):
        from ..rewards import check_reward_spec

        try:
            check_reward_spec(options["reward"])
        except (ValueError, TypeError) as e:
            raise type(e)(f"task {name!r}, option 'reward': {e}") from None
    if name in TASKS:
        return TASKS[name](**options)
    return task_class(_task_file(name))(**options)


def task_name(name: str) -> str:
    """The name `get_task(name)` builds its task under (without building it): a registered task's own name, a
    task file's `task:` key or stem. Results, splits and collections are keyed by it, a config by what it wrote."""
    if name in TASKS:
        return name
    return load_task_spec(_task_file(name))["name"]


def check_tasks(names) -> None:
    """Every entry names a task, and no two entries (say two paths) name tasks of the same `task_name`, which
    would share their results."""
    unknown = sorted(t for t in names if not is_task(t))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; valid: {available_tasks()} (or a path to a task .yaml file)")
    seen: dict = {}
    for t in names:
        n = task_name(t)
        if n in seen:
            raise ValueError(f"tasks {seen[n]!r} and {t!r} are both named {n!r} (a task file's task: key, else its file "
                             "name); give one another task: key")
        seen[n] = t


__all__ = ["TASKS", "Task", "get_task", "task_name", "available_tasks", "is_task", "check_tasks", "DataTask",
           "TaskFileError", "task_class", "load_task_spec", "find_task_file", "GSM8K", "Arithmetic", "Translation",
           "ConstrainedWriting", "CreativeWriting",
           "DataFormatError", "read_jsonl", "strip_pos"]
