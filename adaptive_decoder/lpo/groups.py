"""`GroupDataset`: a collection's prompts as whole scored groups, for the expected-reward objective.

One item per prompt: every sample of it with a finite reward, its latent choices, its head inputs and the
log-probability mu(c | h) that the collection's exploration gave its choices (`expected_reward` explains why the
objective needs it). The collection records how it drew: the `selection` and `epsilon` of its settings and the
collecting head's fingerprint. mu is recomputed from those with the collecting head (the behaviour head given,
checked against the fingerprint) on the cached head inputs, the arithmetic of `AdaptiveDecoderHead.select`; the
cache holds the inputs in fp16, so a recomputed mu equals the sampled-from one up to that rounding (a relative
1e-3 at most on the logits of an fp32 LM; exact inputs when the LM runs in fp16). What cannot be recomputed is
refused by name: a collection whose choices were argmax picks (no distribution to weight by), a behaviour head
that is not the collecting one.

Head inputs. Sequence level: a prompt's samples all decide once, at the same hidden state (the last prompt
token; the rows of one prompt are identical copies in its batch), so one cached sample of the prompt serves them
all (the default cache keeps the best and the worst). Token level: every sample has its own [T, H]; the ones not
cached are recomputed with `model` (one teacher-forced pass), as `PairDataset` does.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch

from ..modeling.generation import compute_head_inputs
from .expected_reward import behaviour_log_probs
from .pairs.dataset import MissingSamples, collection_model
from .store import head_identity, hidden_key, read_collection


def _finite_total(rec: dict):
    r = rec.get("rewards", {}).get("total")
    return float(r) if isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) else None


class GroupDataset(torch.utils.data.Dataset):
    """Prompt groups of a collection directory, in the format `expected_reward.collate_groups` batches:

        {"task", "prompt_id", "samples": [{"inputs": [H] or [T, H], "choices": {factor: LongTensor [] or [T]},
                                           "reward": float, "behaviour_logps": [] or [T]}, ...]}

    `behaviour_head`: the head the collection sampled with (copied and frozen here); `tasks`: keep these tasks only;
    `model` (or `load_model(missing)`, called only when inputs are missing): the collection's base LM, needed
    only for head inputs the cache lacks (`ModelNeededError` when neither is given).
    `stats`: prompts, groups, samples, prompts_too_few_valid, prompts_all_tied, nonfinite_dropped,
    samples_cached, samples_recomputed (what `PairDataset.stats` reports, for groups).
    """

    def __init__(self, collection_dir, *, behaviour_head, tasks: list[str] | None = None, model=None,
                 load_model=None, use_cache: bool = True, dtype: torch.dtype = torch.float16, eps: float = 1e-6):
        self.root = Path(collection_dir)
        self.manifest, records = read_collection(self.root)
        settings = self.manifest.get("settings", {})
        if settings.get("selection") != "sample" or "epsilon" not in settings:
            raise ValueError(f"{self.root} records selection {settings.get('selection')!r} and epsilon "
                             f"{settings.get('epsilon')!r}: the expected-reward objective needs choices sampled "
                             "from a distribution (selection 'sample') with a recorded epsilon")
        recorded, given = self.manifest["head"].get("fingerprint"), head_identity(behaviour_head)["fingerprint"]
        if recorded != given:
            raise ValueError(f"{self.root} was sampled by the head with fingerprint {recorded}, the behaviour head "
                             f"given has {given}: start from the collecting head (head_path) so its exploration "
                             "probabilities can be recomputed")
        self.epsilon = float(settings["epsilon"])
        self.behaviour = copy.deepcopy(behaviour_head).float().cpu().eval().requires_grad_(False)
        self.level, self.factors = behaviour_head.config.level, list(behaviour_head.config.factors)
        if tasks is not None:
            unknown = sorted(set(tasks) - {r["task"] for r in records})
            if unknown:
                raise ValueError(f"tasks {unknown} have no samples in {self.root}; present: "
                                 f"{sorted({r['task'] for r in records})}")
        done = set(self.manifest["done"])
        by_prompt: dict[str, list] = {}
        for r in records:
            if r["prompt_id"] in done and (tasks is None or r["task"] in tasks):
                by_prompt.setdefault(r["prompt_id"], []).append(r)
        self.stats = {"prompts": len(by_prompt), "prompts_too_few_valid": 0, "prompts_all_tied": 0,
                      "nonfinite_dropped": 0}
        self.groups: list[list[dict]] = []
        for recs in by_prompt.values():
            valid = sorted((r for r in recs if _finite_total(r) is not None), key=lambda r: r["sample_index"])
            self.stats["nonfinite_dropped"] += len(recs) - len(valid)
            if len(valid) < 2:
                self.stats["prompts_too_few_valid"] += 1
                continue
            totals = [_finite_total(r) for r in valid]
            self.stats["prompts_all_tied"] += max(totals) - min(totals) <= eps
            self.groups.append(valid)
        self.dtype = dtype
        self._inputs = self._cached_inputs() if use_cache else {}
        needed = {self._input_key(g, r) for g in self.groups for r in g}
        missing = MissingSamples(len(needed), tuple(sorted(needed - set(self._inputs))), used_in="groups")
        self.stats.update(groups=len(self.groups), samples=sum(len(g) for g in self.groups),
                          samples_cached=len(needed) - len(missing.head_inputs),
                          samples_recomputed=len(missing.head_inputs))
        self.model = collection_model(self.root, self.manifest, missing, model, load_model)

    def _input_key(self, group: list, rec: dict) -> tuple:
        """Whose head input a sample uses: its own (token level) or its prompt's shared one (sequence level: the
        first cached sample of the prompt, else the first sample)."""
        if self.level == "token":
            return rec["prompt_id"], rec["sample_index"]
        first = next((r for r in group if r.get("cached")), group[0])
        return first["prompt_id"], first["sample_index"]

    def _cached_inputs(self) -> dict:
        from safetensors import safe_open

        wanted: dict[str, set] = {}
        for g in self.groups:
            for r in g:
                key = self._input_key(g, r)
                src = next(x for x in g if x["sample_index"] == key[1])
                if src.get("cached"):
                    wanted.setdefault(src["shard"], set()).add(key)
        out = {}
        for shard, keys in wanted.items():
            with safe_open(str(self.root / "hidden" / f"{shard}.safetensors"), framework="pt") as f:
                out.update({key: f.get_tensor(hidden_key(*key)) for key in keys})
        return out

    def _head_input(self, group: list, rec: dict) -> torch.Tensor:
        key = self._input_key(group, rec)
        if key not in self._inputs:  # one teacher-forced pass of the LM over the sample that owns the input
            src = next(x for x in group if x["sample_index"] == key[1])
            seq = torch.tensor([src["prompt_ids"] + src["completion_ids"]], device=next(self.model.parameters()).device)
            h = compute_head_inputs(self.model, seq, torch.ones_like(seq), len(src["prompt_ids"]), self.level)
            self._inputs[key] = h[0].to(torch.float16).cpu()
        return self._inputs[key].to(self.dtype)

    def __len__(self):
        return len(self.groups)

    def __getitem__(self, i) -> dict:
        group = self.groups[i]
        samples = []
        for rec in group:
            h = self._head_input(group, rec)
            choices = {f: torch.tensor(rec["choices"][f], dtype=torch.long) for f in self.factors}
            mu = behaviour_log_probs(self.behaviour, h.float(), choices, self.epsilon)
            samples.append({"inputs": h, "choices": choices, "reward": _finite_total(rec), "behaviour_logps": mu})
        return {"task": group[0]["task"], "prompt_id": group[0]["prompt_id"], "samples": samples}


__all__ = ["GroupDataset"]
