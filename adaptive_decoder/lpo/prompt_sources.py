"""The collection's prompt sources: `TaskSpec` (one task of a collect config) and `load_task_prompts`.

Source 'registry' takes an `adaptive_decoder.tasks` task's examples. The file formats beside it build their prompts
with templates of their own, which differ from the registry tasks' (CommonGen's story length and part-of-speech
stripping, GSM8K's instruction), so they stay: the collections and presets made with them keep their prompts.
A prompt record: {"id", "task", "prompt", + the fields its reward reads: "answer" | "concepts" | "reference"}."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields


from ..tasks.io import read_jsonl
from ..tasks.translation import LANGS


SOURCES = ("gsm8k", "commongen", "translation", "prompts", "arithmetic", "registry")
DEFAULT_TEMPLATES = {
    "gsm8k": "{question}\nSolve it step by step and write the final answer after '####'.",
    "commongen": "Write a short story of two or three sentences that uses all of these words: {concepts}.",
    "translation": "Translate the following text into {tgt_lang}. Reply with the translation only.\n\n{source}",
    "prompts": "{prompt}",
    "arithmetic": "What is {question}? Reply with the number only.",
}


@dataclass
class TaskSpec:
    """One task of a collection run, as written under `tasks:` in the collect YAML."""

    source: str = field(metadata={
        "help": f"Prompt source format: one of {SOURCES}; 'registry' = an adaptive_decoder.tasks task."})
    reward: dict | None = field(default=None, metadata={
        "help": "Reward spec for adaptive_decoder.rewards.build_reward (registry tasks default to the task's reward)."})
    path: str | None = field(default=None, metadata={"help": "JSONL file (not needed for 'arithmetic')."})
    num_prompts: int | None = field(default=None, metadata={"help": "Use the first N prompts (after offset); None = all."})
    offset: int = field(default=0, metadata={"help": "Skip this many records first."})
    template: str | None = field(default=None, metadata={
        "help": "Prompt template with {field} placeholders; default per source."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Per-task generation length (default: the run's)."})
    seed: int = field(default=0, metadata={"help": "Seed of the synthetic 'arithmetic' source."})
    eval_task: str | None = field(default=None, metadata={
        "help": "source 'registry': the adaptive_decoder.tasks name (gsm8k, translation, ...)."})
    task_options: dict = field(default_factory=dict, metadata={
        "help": "source 'registry': options of that task (num_fewshot, template, ...)."})

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "TaskSpec":
        if not isinstance(d, dict):
            raise ValueError(f"task {name!r}: expected a mapping of options, got {d!r}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"task {name!r}: unknown key(s) {unknown}; valid: {valid}")
        if "source" not in d:
            raise ValueError(f"task {name!r}: missing required key 'source'")
        spec = cls(**d)
        if spec.source not in SOURCES:
            raise ValueError(f"task {name!r}: unknown source {spec.source!r}; valid: {list(SOURCES)}")
        if spec.source == "registry":
            if not spec.eval_task:
                raise ValueError(f"task {name!r}: source 'registry' needs eval_task: (e.g. gsm8k, constrained_writing)")
            if spec.template:
                raise ValueError(f"task {name!r}: registry tasks build their own prompts; set template under task_options")
            if spec.reward is None:  # the registry task's own reward, recorded explicitly in the manifest
                spec.reward = _registry_task(spec).reward_spec
        elif spec.eval_task or spec.task_options:
            raise ValueError(f"task {name!r}: eval_task / task_options only apply to source 'registry'")
        if spec.reward is None:
            raise ValueError(f"task {name!r}: missing required key 'reward'")
        if spec.source not in ("arithmetic", "registry") and not spec.path:
            raise ValueError(f"task {name!r}: source {spec.source!r} needs path: (a JSONL file)")
        if spec.source == "arithmetic" and not spec.num_prompts:
            raise ValueError(f"task {name!r}: the synthetic 'arithmetic' source needs num_prompts")
        return spec


def _need(rec: dict, key: str, where: str):
    if key not in rec:
        raise ValueError(f"{where}: record lacks field {key!r} (has {sorted(rec)})")
    return rec[key]


def _registry_task(spec: TaskSpec):
    from ..tasks import get_task

    return get_task(spec.eval_task, path=spec.path, **({"reward": spec.reward} if spec.reward else {}), **spec.task_options)


def load_task_prompts(name: str, spec: TaskSpec | dict) -> list[dict]:
    """Prompt records for one task. Ids are "<task>/<record index>" so they stay stable across runs."""
    if isinstance(spec, dict):
        spec = TaskSpec.from_dict(name, spec)
    out = []
    if spec.source == "registry":  # first num_prompts examples after offset, in file order
        exs = _registry_task(spec).examples()[spec.offset:]
        exs = exs if spec.num_prompts is None else exs[: spec.num_prompts]
        if not exs:
            raise ValueError(f"task {name!r}: no prompts (eval_task={spec.eval_task}, offset={spec.offset})")
        return [{**ex, "id": f"{name}/{ex['id']}", "task": name} for ex in exs]
    template = spec.template or DEFAULT_TEMPLATES[spec.source]
    if spec.source == "arithmetic":
        rng = random.Random(spec.seed)
        for i in range(spec.offset + spec.num_prompts):
            a, b = rng.randint(2, 60), rng.randint(2, 40)
            op = rng.choice("+-")
            if i < spec.offset:
                continue
            q = f"{a} {op} {b}"
            rec = {"question": q, "answer": f"#### {a + b if op == '+' else a - b}"}
            out.append({"id": f"{name}/{i}", "task": name, "prompt": template.format(**rec), "answer": rec["answer"]})
        return out
    rows = read_jsonl(spec.path, expected=f"one JSON object per line with the fields of source {spec.source!r}")[spec.offset:]
    if spec.num_prompts is not None:
        rows = rows[: spec.num_prompts]
    for k, (lineno, rec) in enumerate(rows):
        where, i = f"{spec.path}:{lineno}", spec.offset + k
        fields_ = dict(rec)
        ex = {"id": f"{name}/{i}", "task": name}
        if spec.source == "gsm8k":
            _need(rec, "question", where)
            ex["answer"] = _need(rec, "answer", where)
        elif spec.source == "commongen":
            if "concepts" in rec:
                concepts = list(rec["concepts"])
            else:  # CommonGen's "field_N#look_V#stand_V": drop the POS tags
                concepts = [c.split("_")[0] for c in str(_need(rec, "concept_set", where)).split("#")]
            ex["concepts"] = concepts
            fields_["concepts"] = ", ".join(concepts)
        elif spec.source == "translation":
            _need(rec, "source", where)
            ex["reference"] = _need(rec, "reference", where)
            fields_.setdefault("tgt_lang", "English")
            fields_["tgt_lang"] = LANGS.get(fields_["tgt_lang"], fields_["tgt_lang"])
        else:
            _need(rec, "prompt", where)
        try:
            ex["prompt"] = template.format(**fields_)
        except KeyError as e:
            raise ValueError(f"task {name!r}: template field {e} is not in the record at {where} (has {sorted(rec)})") from None
        out.append(ex)
    if not out:
        raise ValueError(f"task {name!r}: no prompts (path={spec.path}, offset={spec.offset}, num_prompts={spec.num_prompts})")
    return out
