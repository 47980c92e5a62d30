"""LPO sample collection: draw N samples per prompt with the head exploring, score them, store them crash-safely.

On-disk layout of a collection directory (append-only; nothing is ever rewritten except the manifest):

    manifest.json                   identity (base model, head, settings, tasks and the digests of what they
                                    resolve to), shard list, done prompt ids
    shards/shard-00000.jsonl        one JSON line per sample; a shard holds whole prompt groups only
    hidden/shard-00000.safetensors  fp16 head inputs of the samples that can enter pairs ("<prompt_id>::<j>")

Crash safety: a shard (and its hidden-state file) is written to a temporary name, fsync'ed and renamed; only then
is the manifest (also tmp + rename) updated to list it and its prompts as done. A kill -9 at any point leaves
either the old manifest (the unlisted shard is ignored and rewritten on resume, with the same seeds) or the new
one, so a prompt's samples are never lost or duplicated. Readers only read shards the manifest lists.

Integrity: the manifest records each listed file's byte length and sha256. A file changed after its commit (a
torn last line from an interrupted copy, a truncated or edited file) no longer matches: readers refuse it naming
the file, and the next writer (rerunning the same collect command) unlists the shard and deletes its files,
so `collect` draws its prompts again with the same prompt seeds, i.e. the same samples.
Seeding: the engine's rule (`adaptive_decoder.scoring`): a prompt's j-th sample draws its tokens and the head's
explored bins from the row seed of (seed, task, prompt id, j), whatever batch it falls in.

The base LM is frozen, so the head's inputs never change: we keep them (fp16) for the samples that can enter
pairs while the byte budget lasts; `adaptive_decoder.lpo.pairs.PairDataset` recomputes the rest with one
teacher-forced forward pass (`adaptive_decoder.modeling.generation.compute_head_inputs`).
Every sample also keeps its token table (`adaptive_decoder.modeling.response_logps`): the LM's log P(y_t | tau) of its
own tokens under every temperature bin, [T, K] fp16 under "<prompt_id>::<j>::token_logps" in the same hidden
file (T*K*2 bytes, not counted against the hidden-state budget), and in its record the sums `response_logp`
(at the temperatures it was decoded with) and `lm_logp` (at temperature 1), for the joint and latent LPO losses.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from contextlib import contextmanager

import torch

from ..modeling.generation import AdaptiveDecodingModel
from ..modeling.models import encode_prompts
from ..modeling.noise import row_seeds
from ..modeling.response_logps import response_log_prob, sample_token_log_probs, table_temperatures
from ..rewards import group_components, needs_group
from ..scoring import ScoredSampling
from ..tasks.base import Task
from ..tasks.identity import task_digest
from .store import CollectionSettings, CollectionWriter, head_identity, hidden_key, model_identity, token_logps_key

logger = logging.getLogger(__name__)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _to_cache(totals: list[float], which: str) -> list[int]:
    """Indices (within a prompt group) of the samples whose hidden states we keep."""
    if which == "none":
        return []
    if which == "all":
        return list(range(len(totals)))
    ok = [t for t in totals if _finite(t)]
    if not ok:
        return []
    hi, lo = max(ok), min(ok)
    return [j for j, t in enumerate(totals) if _finite(t) and t in (hi, lo)]


def _jsonable(v):
    return v.item() if v.dim() == 0 else v.tolist()


@contextmanager
def sampling_model(model, tokenizer, head, settings: CollectionSettings):
    """The decoding model `collect` samples with under `settings.backend`: HF generate, or one vLLM engine on `model`
    (closed on exit) built with `settings.vllm_options`, by default sized for a batch's rows, prompts_per_batch *
    num_samples * twins requests at a time (the twins are one more engine call per batch); the HF model still gives
    the head inputs and token tables."""
    if settings.backend != "vllm":
        yield AdaptiveDecodingModel(model, tokenizer, head)
        return
    from ..integrations.vllm.backend import VLLMDecodingModel, VLLMEngine

    rows = settings.prompts_per_batch * settings.num_samples * int(settings.twins)
    with VLLMEngine(model, tokenizer, **{"max_num_seqs": rows, **settings.vllm_options}) as engine:
        yield VLLMDecodingModel(model, tokenizer, head, engine=engine)


def collect(adm: AdaptiveDecodingModel, prompts: list[dict], rewards: dict, output_dir, settings: CollectionSettings,
            task_specs: dict | None = None, progress: bool = True) -> dict:
    """Collect `settings.num_samples` scored samples for every prompt not yet done in `output_dir`.

    prompts: records {"id", "task", "prompt", ...reward fields}; rewards: {task: CompositeReward};
    task_specs: {task: dict} (stored in the manifest; per-task max_new_tokens). Resumable: prompts
    already in the manifest are skipped. Returns a summary dict (counts, wall time is the caller's business).
    """
    from tqdm.auto import tqdm

    if adm.head is None:
        raise ValueError("collection samples latent choices from a head: attach one (AdaptiveDecodingModel(..., head=))")
    if adm.tokenizer is None:
        raise ValueError("collection needs the tokenizer (AdaptiveDecodingModel(model, tokenizer, head))")
    if getattr(adm, "backend", "hf") != settings.backend:
        raise ValueError(f"settings.backend is {settings.backend!r} but the decoding model samples with "
                         f"{getattr(adm, 'backend', 'hf')!r}")
    ids = [p["id"] for p in prompts]
    dup = sorted(i for i, c in Counter(ids).items() if c > 1)
    if dup:
        raise ValueError(f"duplicated prompt ids {dup[:5]}")
    missing = sorted({p["task"] for p in prompts} - set(rewards))
    if missing:
        raise ValueError(f"no reward configured for task(s) {missing}")
    stops = {}
    if settings.stop_when_scored:  # the task knows what it scores: only a TaskReward carries one
        plain = sorted(t for t in {p["task"] for p in prompts} if not hasattr(rewards[t], "task"))
        if plain:
            raise ValueError(f"stop_when_scored needs a TaskReward (the task says where its scored text ends) for "
                             f"task(s) {plain}")
        stops = {t: r.task.stop_predicate() for t, r in rewards.items() if hasattr(r, "task")}
    specs = {t: dict(s) for t, s in (task_specs or {}).items()}
    for t in {p["task"] for p in prompts}:
        specs.setdefault(t, {})
    # what each task resolves to (task file, option defaults, data file): a TaskReward knows its task
    tasks = {t: getattr(r, "task", None) for t, r in rewards.items() if t in specs}
    contents = {t: task_digest(task) for t, task in tasks.items() if isinstance(task, Task)}
    identity = {"base_model": model_identity(adm.model), "head": head_identity(adm.head),
                "settings": settings.identity(), "tasks": specs, "task_contents": contents}
    writer = CollectionWriter(output_dir, identity)
    writer.expect(len(prompts))
    budget = int(settings.cache_budget_mb * 2**20)
    todo = [p for p in prompts if p["id"] not in writer.done]
    summary = {"prompts_total": len(prompts), "prompts_already_done": len(prompts) - len(todo), "prompts_collected": 0,
               "samples_collected": 0, "nonfinite_rewards": 0, "samples_cached": 0, "samples_not_cached_budget": 0}

    bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc="collect", unit="prompt", disable=not progress)

    def draw(batch, seeds):
        task = batch[0]["task"]
        return _sample_batch(adm, batch, seeds, rewards[task], specs[task], settings, writer, budget, summary,
                             stops.get(task))

    def append(batch, drawn):
        records, hidden, totals = drawn
        writer.write_group(records, hidden)
        summary["prompts_collected"] += len(batch)
        summary["samples_collected"] += len(records)
        bar.update(len(batch))
        finite = [x for x in totals if math.isfinite(x)]
        bar.set_postfix(task=batch[0]["task"], mean_reward=f"{sum(finite) / max(1, len(finite)):.3f}")

    try:
        ScoredSampling(settings.seed, settings.prompts_per_batch).run(todo, draw=draw, append=append)
    finally:
        bar.close()
        writer.close()
    summary["hidden_bytes"] = writer.manifest["hidden_bytes"]
    return summary


def _sample_batch(adm, batch, seeds, reward, spec, settings, writer, budget, summary, stop_when=None):
    """Generate num_samples per prompt of one single-task batch (`seeds`: the prompts' seeds), score them, pick
    what to cache."""
    n, level = settings.num_samples, adm.head.config.level
    enc = encode_prompts(adm.tokenizer, [p["prompt"] for p in batch], chat=settings.chat).to(adm.model.device)
    out = adm.generate(enc["input_ids"], enc["attention_mask"],
                       max_new_tokens=spec.get("max_new_tokens") or settings.max_new_tokens,
                       num_return_sequences=n, selection=settings.selection, epsilon=settings.epsilon,
                       row_seeds=row_seeds(seeds, n), return_head_inputs=True, stop_when=stop_when)
    scores = _score(adm, enc, out, batch, reward, spec, settings, seeds, stop_when)
    temps = table_temperatures(adm.head.config)
    full_mask = torch.cat([enc["attention_mask"].repeat_interleave(n, 0), torch.ones_like(out.step_mask, dtype=torch.long)], 1)
    # one more column at temperature 1: the LM's own likelihood, the joint loss's reference (see lpo.joint_loss)
    tables = sample_token_log_probs(adm.model, out.sequences, full_mask, out.prompt_length, temps + [1.0],
                                    out.step_mask).cpu()
    records, hidden = [], {}
    used = writer.manifest["hidden_bytes"]
    for i, p in enumerate(batch):
        prompt_ids = enc["input_ids"][i][enc["attention_mask"][i].bool()].tolist()
        rows = range(i * n, (i + 1) * n)
        keep = set(_to_cache([scores["total"][r] for r in rows], settings.cache_which))
        for j, r in enumerate(rows):
            t = len(out.completion_ids[r])
            choices = {f: _jsonable(c[r] if level == "sequence" else c[r, :t]) for f, c in out.choices.items()}
            values = {k: _jsonable(v[r, 0] if level == "sequence" else v[r, :t]) for k, v in out.values.items()}
            cached = False
            if j in keep:
                h = (out.head_inputs[r] if level == "sequence" else out.head_inputs[r, :t]).to(torch.float16)
                size = h.numel() * h.element_size()
                if used + size <= budget:
                    hidden[hidden_key(p["id"], j)] = h
                    used += size
                    cached = True
                    summary["samples_cached"] += 1
                else:
                    summary["samples_not_cached_budget"] += 1
            table = tables[r, :t]
            hidden[token_logps_key(p["id"], j)] = table[:, :-1].to(torch.float16)
            t_choice = choices.get("temperature")
            logps = {"response_logp": float(response_log_prob(table[:, :-1], t_choice)),
                     "lm_logp": float(table[:, -1].sum()), "logp_temperatures": temps}
            rew = {k: float(v[r]) for k, v in scores.items()}
            summary["nonfinite_rewards"] += not math.isfinite(rew["total"])
            records.append({"prompt_id": p["id"], "task": p["task"], "sample_index": j, "prompt": p["prompt"],
                            "prompt_ids": prompt_ids, "completion": out.texts[r], "completion_ids": out.completion_ids[r],
                            "choices": choices, "values": values, "rewards": rew, "cached": cached, "seed": seeds[i], **logps})
    return records, hidden, scores["total"]


def group_size_mismatches(rewards: dict, settings: CollectionSettings, eval_samples: int, level: str) -> list[str]:
    """One line per task whose reward compares a prompt's samples but is scored in collection among a group of
    another size than the evaluation's `eval_samples`. Such a reward's value depends on the group's size (novelty:
    1 - the max similarity to the others, which grows with their number), so the two can rank temperatures
    differently and LPO learns the collection's ranking; eval/headroom.py's group-size table measures by how much."""
    if level != "sequence":
        return []  # token-level samples are scored in the collection's pool; twins apply to sequence heads only
    size = 1 + int(settings.twins) if settings.group_reward_twins else int(settings.num_samples)
    if size == eval_samples:
        return []
    how = f"twins: {settings.twins}" if settings.group_reward_twins else "the exploration pool"
    return [f"task {t!r}: collection scores {', '.join(group_components(r))} among {size} samples ({how}), the "
            f"evaluation among {eval_samples}; `collect.twins: {eval_samples - 1}` scores it as evaluated"
            for t, r in rewards.items() if needs_group(r)]


def _score(adm, enc, out, batch, reward, spec, settings, seeds, stop_when=None) -> dict:
    """Reward components of every row. A group reward (e.g. novelty) compares the samples of a prompt, and its
    value depends on who else is in the group. In this pool the rows of a prompt use different decoding values,
    so a lone greedy sample looks novel next to sampled ones; at evaluation a sequence-level head decodes all k
    samples of a prompt with its one choice, and k greedy samples are identical. With `group_reward_twins`, each
    row is scored in a group of 1 + `twins`: itself and twins generated with the same values (the twins are
    scored, not kept)."""
    n = settings.num_samples
    examples = [p for p in batch for _ in range(n)]
    if not (settings.group_reward_twins and adm.head.config.level == "sequence" and needs_group(reward)):
        return reward.score_components(out.texts, examples)
    m = int(settings.twins)
    # from the head's [n] choices: out.values is per step, NaN where a row produced no token
    force = {k: v.repeat_interleave(m, 0) for k, v in adm.head.values(out.choices, shape=(len(examples),)).items()}
    twin = adm.generate(enc["input_ids"].repeat_interleave(n * m, 0), enc["attention_mask"].repeat_interleave(n * m, 0),
                        max_new_tokens=spec.get("max_new_tokens") or settings.max_new_tokens, force=force,
                        row_seeds=row_seeds(seeds, n * m, "twin"), stop_when=stop_when)
    keyed = [{**e, "id": f"{e['id']}#{r}"} for r, e in enumerate(examples)]
    twin_keyed = [k for k in keyed for _ in range(m)]  # twin rows r*m .. r*m+m-1 belong to row r
    scores = reward.score_components(out.texts + twin.texts, keyed + twin_keyed)
    return {k: v[: len(out.texts)] for k, v in scores.items()}
