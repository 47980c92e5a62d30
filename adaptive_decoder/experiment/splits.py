"""Splits: per task, a deterministic split of the examples into disjoint test / dev / train prompts (shuffled with
`split_seed`; test first, then dev, then train; a prompt text, or an EQ-Bench writing prompt, never in two splits)."""

from __future__ import annotations

import hashlib


from .config import ExperimentConfig


def prompt_group(example: dict) -> str:
    """What must not be shared between splits: the prompt text, except that EQ-Bench creative-writing examples
    ("<prompt key>:<seed index>", one writing prompt filled with different seed modifiers) group by their writing
    prompt, so train and test never hold variants of the same prompt."""
    pid = str(example.get("id", ""))
    if ":" in pid:
        return "key:" + pid.split(":")[0]
    return "prompt:" + example["prompt"]


def split_examples(examples: list[dict], num_test: int, num_dev: int, num_train: int, seed: int, name: str = "task",
                   group=prompt_group) -> dict:
    """Deterministic disjoint {"test", "dev", "train"} lists of examples: shuffle with (name, seed), then fill test,
    dev, train in that order. An example whose group (`prompt_group`: its prompt text, or its EQ-Bench writing
    prompt) already went to another split is skipped, so no prompt appears in two splits."""
    import random

    order = list(range(len(examples)))
    random.Random(f"experiment-split:{name}:{seed}").shuffle(order)
    pos = {i: k for k, i in enumerate(order)}
    groups: dict = {}  # group -> example indices (shuffled order, each prompt text once overall)
    texts: set = set()
    for i in order:
        if examples[i]["prompt"] in texts:
            continue
        texts.add(examples[i]["prompt"])
        groups.setdefault(group(examples[i]), []).append(i)
    glist = list(groups.values())
    want = {"test": num_test, "dev": num_dev, "train": num_train}
    out, g = {}, 0
    for split in ("test", "dev", "train"):  # whole groups go to one split
        chosen: list = []
        while len(chosen) < want[split] and g < len(glist):
            chosen.extend(glist[g])
            g += 1
        if len(chosen) < want[split]:
            raise ValueError(f"task {name!r}: asked for {num_test} test + {num_dev} dev + {num_train} train prompts but "
                             f"it has only {len(texts)} distinct prompts in {len(glist)} groups (a group never spans "
                             f"two splits); the {split} split got {len(chosen)}")
        out[split] = [examples[i] for i in sorted(chosen, key=pos.get)[: want[split]]]
    return out


def make_splits(cfg: ExperimentConfig) -> dict:
    """{task: {"test"|"dev"|"train": [example, ...]}} for the configured tasks (examples from the task registry),
    keyed and shuffled by each `tasks:` entry's name, as `Experiment` does."""
    out = {}
    for t in cfg.tasks:
        task = cfg.build_task(t)
        n = cfg.split_sizes(t)
        out[t] = split_examples(task.examples(), n["num_test"], n["num_dev"], n["num_train"], cfg.split_seed, t)
    return out


def splits_digest(splits: dict) -> dict:
    """JSON-able record of a split: ids and a hash of the prompts, per task and split."""
    rec = {}
    for t, parts in splits.items():
        rec[t] = {s: {"ids": [e["id"] for e in exs], "sha256": hashlib.sha256(
            "\n".join(e["prompt"] for e in exs).encode()).hexdigest()[:16]} for s, exs in parts.items()}
    return rec
