"""The scored-sampling engine: which prompts are still to do, in which batches, with which seeds.

Collection (`lpo.collection`), evaluation (`evaluation.harness`) and HAG search (`hag.search`) all draw k scored
samples per prompt and append them to a log they resume from. What differs between them is what one batch does
(collection caches head inputs and token tables, evaluation builds units from a policy's samples, search walks a
config search) and where it is written; those are the caller's two hooks:

    draw(batch, seeds) -> result     generate and score the batch; seeds[i] is batch[i]'s prompt seed, which
                                     the caller turns into row seeds (`modeling.noise.row_seeds`, or a policy's
                                     `seed=`) for every generate call it makes
    append(batch, result)            write the result to the caller's log (and count progress)

The engine owns the rest, once for all three: prompts already in the log (`done`, their ids) are skipped, the
others are batched in their given order, within a task (one reward, one answer length per batch) unless the
caller splits mixed batches itself (`group_tasks=False`: HAG search), and every prompt's seed is
`noise.prompt_seed(seed, task, prompt id)`.

Invariant: a prompt's seed, hence every random draw of its samples, is a function of (seed, task, prompt id) and
the sample index and step only: the batch size, the batch order, the other prompts of its batch and a resume
that skips some of them do not change it. The same prompt gets the same noise in collection, evaluation and
search (common random numbers across the three, and across the HF and vLLM backends).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from ..modeling.noise import prompt_seed
from ..validation import positive_int


class ScoredSampling:
    """Batches the pending prompts of a run and hands each batch, with its prompts' seeds, to the caller's hooks.

    `task_of(prompt)` names a prompt's task (default: its "task" field); prompts are dicts with a unique "id"."""

    def __init__(self, seed: int, batch_size: int, task_of: Callable[[dict], str | None] | None = None,
                 group_tasks: bool = True):
        self.seed = int(seed)
        self.batch_size = positive_int("batch_size", batch_size)
        self.task_of = task_of or (lambda p: p.get("task"))
        self.group_tasks = group_tasks

    def prompt_seeds(self, batch: list) -> list[int]:
        return [prompt_seed(self.seed, self.task_of(p), p["id"]) for p in batch]

    def batches(self, prompts: list, done=()) -> list[list]:
        """The prompts not in `done` (ids), in batches of at most batch_size, each of one task (tasks in the
        order they first appear, prompts in their given order; with group_tasks=False the given order only)."""
        dup = sorted(str(i) for i, c in Counter(p["id"] for p in prompts).items() if c > 1)
        if dup:
            raise ValueError(f"duplicated prompt ids {dup[:5]}: an id is what a prompt's seed and its resume key are made of")
        done = set(done)
        by_task: dict = {}
        for p in prompts:
            if p["id"] not in done:
                by_task.setdefault(self.task_of(p) if self.group_tasks else None, []).append(p)
        return [group[i:i + self.batch_size] for group in by_task.values() for i in range(0, len(group), self.batch_size)]

    def run(self, prompts: list, *, draw: Callable, append: Callable, done=()) -> int:
        """Draw and append every pending batch (see the module docstring); returns the number of prompts drawn."""
        n = 0
        for batch in self.batches(prompts, done):
            append(batch, draw(batch, self.prompt_seeds(batch)))
            n += len(batch)
        return n
