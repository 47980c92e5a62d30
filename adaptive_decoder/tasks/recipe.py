"""The `tasks:` key of every recipe (collection, HAG search, evaluation, experiment), in one shape:

    tasks:
      gsm8k: {num_fewshot: 0, max_new_tokens: 256}          # a registered Python task or a task file, by name
      stories:                                              # any label, with `task:` naming what to build
        task: constrained_writing
        template: "Write a short story of two or three sentences that uses all of these words: {words}."
        reward: {concepts: {weight: 1.0}, repetition: {weight: 1.0, n: 2}}
        num_prompts: 16                                     # a recipe key: not passed to the task

Each entry maps a name (what results, prompt ids and collections are keyed by) to options. A task file given by
its path as the name (`/x/my_task.yaml: {}`) is keyed by the task's name (its `task:` key, else the file's stem),
so reports never show the path; two entries of one name are refused. The options are the task's own
(`get_task` options: path, hf_id, template, num_fewshot, reward, max_new_tokens, ...), `task:` and the keys
the recipe reads itself (collection: num_prompts / offset; HAG search: num_prompts / seed; experiment: the split
sizes). So a head's training prompts and its evaluation prompts come from the same `Task`, rendered by the same
template.
"""

from __future__ import annotations

from ..configs import as_mapping

COLLECT_KEYS = ("num_prompts", "offset")  # the collection's own keys of an entry: which of the task's examples

# a collect config's `source:` (its own prompt templates) and the task that renders the same prompts
REMOVED_SOURCES = {
    "arithmetic": "task: arithmetic (its `data_seed:` is the old `seed:`, its `template:` uses {question})",
    "gsm8k": "task: gsm8k (a GSM8K JSONL as `path:`; `instruction:` sets the text before the question)",
    "commongen": "task: constrained_writing (a CommonGen JSONL as `path:`; `template:` uses {words})",
    "translation": "task: translation (a WMT-style JSONL as `path:`; `template:` uses {src}, {tgt}, {source})",
    "prompts": "task: creative_writing (a {\"prompt\": ...} JSONL as `path:`)",
    "registry": "task: <the eval_task> with its task_options written beside it",
}


def task_entries(tasks, where: str = "tasks") -> dict[str, dict]:
    """`tasks:` as {name: options}; the list form and the collection's `source:` form are refused in one line."""
    if isinstance(tasks, str):  # from the command line: YAML / JSON text
        import yaml

        try:
            tasks = yaml.safe_load(tasks)
        except yaml.YAMLError as e:
            raise ValueError(f"{where} must be a mapping task name -> options (YAML/JSON text), got {tasks!r} ({e})") from None
    if isinstance(tasks, (list, tuple)):
        example = ", ".join(f"{t}: {{}}" for t in tasks[:2]) or "gsm8k: {}"
        raise ValueError(f"{where}: a list of names (with task_options) is no longer read: write a mapping task name "
                         f"-> options, each task's options under its name (tasks: {{{example}}})")
    out = {}
    for name, opts in as_mapping(where, tasks).items():
        opts = as_mapping(f"{where}.{name}", opts)
        if "source" in opts:
            src = opts["source"]
            hint = REMOVED_SOURCES.get(src, "task: <a task name or a task file>")
            if src == "registry" and opts.get("eval_task"):
                hint = f"task: {opts['eval_task']}"
            raise ValueError(f"{where}.{name}: `source: {src}` is gone: use `{hint}`, with num_prompts / offset / reward / "
                             "max_new_tokens beside it")
        if "eval_task" in opts or "task_options" in opts:
            raise ValueError(f"{where}.{name}: eval_task / task_options are gone: use `task: "
                             f"{opts.get('eval_task', '<name>')}` and write its options beside it")
        name = str(name)
        if name.endswith((".yaml", ".yml")) and "task" not in opts:
            from . import task_name

            name, opts = task_name(name), {"task": name, **opts}
        if name in out:
            raise ValueError(f"{where}: two entries are named {name!r} (a task file given by path is named by its "
                             "task: key, else its file name); give one of them another name with `task:` beside it")
        out[name] = opts
    return out


def task_id(name: str, opts: dict) -> str:
    """The registered task or task file that entry `name` builds."""
    return str(opts.get("task") or name)


def task_options(opts: dict, recipe_keys=()) -> dict:
    """The options of an entry that go to the task (without `task:` and the recipe's own keys)."""
    return {k: v for k, v in opts.items() if k != "task" and k not in recipe_keys}


def check_entries(entries: dict) -> None:
    """Every entry builds a known task (several entries may build one task under different names)."""
    from . import available_tasks, is_task

    unknown = sorted({t for t in map(task_id, entries, entries.values()) if not is_task(t)})
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; valid: {available_tasks()} (or a path to a task .yaml file)")


def build_task(name: str, opts: dict, recipe_keys=(), **extra):
    """The `Task` of entry `name` (see the module docstring); `extra` are options the recipe adds (on_bad_line).
    The task is named by the entry (`task.name == name`), so its units, seeds, prompt ids and results are keyed by
    one name even when `task:` builds another (`arith: {task: arithmetic}`); its subset draw stays keyed by the
    task it builds (`Task.split`), so two entries of one task draw the same prompts."""
    from . import get_task

    task = get_task(task_id(name, opts), **task_options(opts, recipe_keys), **extra)
    task.name = name
    return task


def task_prompts(name: str, task, num_prompts: int | None = None, offset: int = 0) -> list[dict]:
    """The task's examples as prompt records of entry `name`: the first `num_prompts` after `offset`, in the task's
    order, ids "<name>/<example id>" (stable across runs)."""
    exs = task.examples()[int(offset):]
    exs = exs if num_prompts is None else exs[: int(num_prompts)]
    if not exs:
        raise ValueError(f"task {name!r}: no prompts ({task.source} has {len(task.examples())} examples, "
                         f"offset={offset}, num_prompts={num_prompts})")
    return [{**ex, "id": f"{name}/{ex['id']}", "task": name} for ex in exs]


def load_task_prompts(name: str, opts: dict | None = None, **extra) -> list[dict]:
    """A collection entry's prompt records: build its task and take num_prompts after offset."""
    ((name, opts),) = task_entries({name: opts or {}}).items()
    task = build_task(name, opts, COLLECT_KEYS, **extra)
    return task_prompts(name, task, opts.get("num_prompts"), opts.get("offset", 0))
