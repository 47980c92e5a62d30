"""`PairDataset`: the preference pairs of a collection directory as training tensors, from the collection's cache or
recomputed with its base LM.

What needs the LM is known once the pairs are chosen and the cache is read, before any item is built: the
dataset's `missing` report (`MissingSamples`) lists the pair samples whose head inputs (or token log-probs) the
collection does not hold. A caller gives the LM (`model=`), or a loader (`load_model=`) that the dataset calls
with that report only when it is not empty, so the LM is loaded exactly when some sample must be recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..store import CollectionMismatchError, hidden_key, model_identity_diffs, read_collection, token_logps_key
from ...configs import describe_changes
from ...modeling.generation import compute_head_inputs
from ...modeling.head import AdaptiveDecoderConfig
from ...modeling.response_logps import response_log_prob, sample_token_log_probs, table_temperatures
from .diagnostics import pair_statistics
from .rules import build_pairs

# Head-config keys that give a stored choice index its meaning (architecture keys may differ between heads).
_CHOICE_KEYS = ("hidden_size", "level", "factors", "temperature_bins", "top_p_bins", "top_k_bins", "min_p_bins", "fixed")


class ModelNeededError(ValueError):
    """Some samples in pairs lack what the dataset reads from the collection (cached head inputs or stored token
    log-probs) and no base LM was given to recompute them: bad input, so a ValueError whose one line names the fix."""


@dataclass(frozen=True)
class MissingSamples:
    """The pair samples, as (prompt_id, sample_index), whose tensors the collection does not hold: only the
    collection's base LM can recompute them. Falsy when nothing is missing, i.e. when the LM is not needed."""

    in_pairs: int  # distinct samples the pairs use
    head_inputs: tuple = ()  # no cached head inputs (cache budget, or use_cache=False)
    token_logps: tuple = ()  # no stored token log-probs (collected before they were recorded); only when asked for
    used_in: str = "pairs"  # what the samples feed ("pairs", or "groups" for the expected-reward dataset)

    def __bool__(self) -> bool:
        return bool(self.head_inputs or self.token_logps)

    def describe(self) -> str:
        parts = [f"{len(keys)} have no {what}" for keys, what in (
            (self.head_inputs, "cached head inputs (cache budget or use_cache=False)"),
            (self.token_logps, "stored token log-probs (collected before they were recorded)")) if keys]
        return f"of the {self.in_pairs} samples in {self.used_in}, " + " and ".join(parts)


def check_collection_model(root, manifest: dict, model):
    """`model`, if it is the base LM the collection in `root` ran (CollectionMismatchError naming what differs)."""
    diffs = model_identity_diffs(manifest["base_model"], model)
    if diffs:
        raise CollectionMismatchError(f"{root} was collected with a different base model:\n  " + "\n  ".join(diffs))
    return model


def collection_model(root, manifest: dict, missing: MissingSamples, model=None, load_model=None):
    """The base LM that recomputes the `missing` samples: `model` as given; else, only when something is missing,
    `load_model(missing)`, identity-checked (`check_collection_model`); ModelNeededError when neither is given."""
    if not missing or model is not None:
        return model
    if load_model is None:
        raise ModelNeededError(f"{missing.describe()}: pass model= (the collection's base model) to recompute them")
    return check_collection_model(root, manifest, load_model(missing))


class PairDataset(torch.utils.data.Dataset):
    """Preference pairs of a collection directory, one dict per pair (what `lpo.collate_pairs` batches):

        {"chosen_inputs": [H] or [Tc, H], "chosen_choices": {factor: LongTensor [] or [Tc]},
         "rejected_inputs", "rejected_choices", "reward_chosen", "reward_rejected", "task", "prompt_id"}

    Head inputs come from the collection's fp16 cache when present (`use_cache`), else they are recomputed with
    one teacher-forced forward pass of the base model per sample (`compute_head_inputs`); both paths return
    `dtype`. The base model is `model`, or what `load_model(self.missing)` returns, called only when `missing` is
    not empty; with neither, missing samples are refused (`ModelNeededError`). The model is checked against the
    base model the collection was made with, `head_config` (the head being trained) against the collecting head's
    bins / factors / level: a mismatch is refused.

    With `response_logps` (the joint and latent losses) each side also carries the LM's view of its tokens
    (`adaptive_decoder.modeling.response_logps`): "<side>_token_logps" float32 [T, K] (K = the temperature bins),
    "<side>_response_logp" (sum at the temperatures it was decoded with) and "<side>_lm_logp" (sum at
    temperature 1), read from the collection, or recomputed with the base model for samples collected without them.
    """

    def __init__(self, collection_dir, *, mode: str = "best_vs_worst", k: int = 2, eps: float = 1e-6,
                 tasks: list[str] | None = None, model=None, load_model=None, head_config=None, use_cache: bool = True,
                 dtype: torch.dtype = torch.float16, response_logps: bool = False):
        if model is not None and load_model is not None:
            raise ValueError("give PairDataset model= or load_model=, not both")
        self.root = Path(collection_dir)
        self.manifest, records = read_collection(self.root)
        self.config = AdaptiveDecoderConfig.from_dict(self.manifest["head"]["config"])
        if head_config is not None:
            new = head_config.to_dict() if isinstance(head_config, AdaptiveDecoderConfig) else dict(head_config)
            new = AdaptiveDecoderConfig.from_dict(new).to_dict()
            # both normalised: a collection made before a config field existed (min_p) stores none, i.e. its default
            diffs = describe_changes({k_: self.config.to_dict().get(k_) for k_ in _CHOICE_KEYS},
                                     {k_: new.get(k_) for k_ in _CHOICE_KEYS})
            if diffs:
                raise CollectionMismatchError(f"{self.root} was collected with another head setup; its choices do not "
                                              "fit this head:\n  " + "\n  ".join(diffs))
        if model is not None:
            check_collection_model(self.root, self.manifest, model)
        done = self.manifest["done"]
        if tasks is not None:
            unknown = sorted(set(tasks) - {r["task"] for r in records})
            if unknown:
                raise ValueError(f"tasks {unknown} have no samples in {self.root}; present: "
                                 f"{sorted({r['task'] for r in records})}")
            records = [r for r in records if r["task"] in tasks]
            task_of = {pid: t for sh in self.manifest["shards"] for pid, t in zip(sh["prompt_ids"], sh["prompt_tasks"])}
            done = [pid for pid in done if task_of[pid] in tasks]
        self.records = {(r["prompt_id"], r["sample_index"]): r for r in records}
        self.pairs, self.stats = build_pairs(records, mode, k, eps, prompt_ids=done)
        self.dtype, self.level = dtype, self.config.level
        needed = {(p.prompt_id, i) for p in self.pairs for i in (p.chosen, p.rejected)}
        self._cache: dict = {}
        if use_cache:
            self._load_cache(needed)
        self.response_logps, self._tables = response_logps, {}
        if response_logps:
            self._load_tables(needed)
        self.missing = MissingSamples(len(needed), tuple(sorted(needed - set(self._cache))),
                                      tuple(sorted(needed - set(self._tables))) if response_logps else ())
        self.stats.update(samples_in_pairs=len(needed), samples_cached=len(needed) - len(self.missing.head_inputs),
                          samples_recomputed=len(self.missing.head_inputs))
        self.model = collection_model(self.root, self.manifest, self.missing, model, load_model)

    def _load_cache(self, needed):
        from safetensors import safe_open

        by_shard: dict[str, list] = {}
        for key in needed:
            rec = self.records[key]
            if rec.get("cached"):
                by_shard.setdefault(rec["shard"], []).append(key)
        for shard, keys in by_shard.items():
            path = self.root / "hidden" / f"{shard}.safetensors"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing but its samples are marked cached: the collection is damaged")
            with safe_open(str(path), framework="pt") as f:
                for key in keys:
                    self._cache[key] = f.get_tensor(hidden_key(*key))

    def _load_tables(self, needed):
        from safetensors import safe_open

        by_shard: dict[str, list] = {}
        for key in needed:
            if "response_logp" in self.records[key]:
                by_shard.setdefault(self.records[key]["shard"], []).append(key)
        for shard, keys in by_shard.items():
            with safe_open(str(self.root / "hidden" / f"{shard}.safetensors"), framework="pt") as f:
                for key in keys:
                    self._tables[key] = f.get_tensor(token_logps_key(*key)).float()

    def token_logps(self, key) -> dict:
        """{"token_logps": [T, K], "response_logp", "lm_logp"} of one sample, stored or recomputed."""
        rec = self.records[key]
        if key in self._tables:
            return {"token_logps": self._tables[key], "response_logp": float(rec["response_logp"]),
                    "lm_logp": float(rec["lm_logp"])}
        ids = rec["prompt_ids"] + rec["completion_ids"]
        seq = torch.tensor([ids], device=next(self.model.parameters()).device)
        table = sample_token_log_probs(self.model, seq, torch.ones_like(seq), len(rec["prompt_ids"]),
                                       table_temperatures(self.config) + [1.0])[0].cpu()
        return {"token_logps": table[:, :-1], "lm_logp": float(table[:, -1].sum()),
                "response_logp": float(response_log_prob(table[:, :-1], rec["choices"].get("temperature")))}

    def recompute(self, key) -> torch.Tensor:
        """Head inputs of one sample from one teacher-forced forward pass of the base model."""
        rec = self.records[key]
        ids = rec["prompt_ids"] + rec["completion_ids"]
        device = next(self.model.parameters()).device
        seq = torch.tensor([ids], device=device)
        h = compute_head_inputs(self.model, seq, torch.ones_like(seq), len(rec["prompt_ids"]), self.level)
        return h[0].to(self.dtype).cpu()

    def head_inputs(self, key) -> torch.Tensor:
        return self._cache[key].to(self.dtype) if key in self._cache else self.recompute(key)

    def _choices(self, key) -> dict:
        rec = self.records[key]
        return {f: torch.tensor(rec["choices"][f], dtype=torch.long) for f in self.config.factors}

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i) -> dict:
        p = self.pairs[i]
        c, r = (p.prompt_id, p.chosen), (p.prompt_id, p.rejected)
        return {"chosen_inputs": self.head_inputs(c), "chosen_choices": self._choices(c),
                "rejected_inputs": self.head_inputs(r), "rejected_choices": self._choices(r),
                "reward_chosen": p.reward_chosen, "reward_rejected": p.reward_rejected,
                "task": p.task, "prompt_id": p.prompt_id,
                **({f"{side}_{k}": v for side, key in (("chosen", c), ("rejected", r))
                    for k, v in self.token_logps(key).items()} if self.response_logps else {})}

    def statistics(self) -> dict:
        return pair_statistics(self.pairs, list(self.records.values()), self.config)


__all__ = ["MissingSamples", "ModelNeededError", "PairDataset"]
