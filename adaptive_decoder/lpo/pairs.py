"""Preference pairs from a sample collection, their statistics (paper Fig. 7) and the `PairDataset` LPO trains on.

Pair modes, within each prompt's group of samples ranked by total reward:
  best_vs_worst      one pair: the best vs the worst sample (the paper's default);
  top_k_vs_bottom_k  every (top-i, bottom-j) combination of the k best and k worst (k <= group size // 2);
  all_pairs          every pair of samples, the higher reward chosen.
A candidate pair whose rewards differ by at most `eps` is a tie: skipped and counted. Samples with a non-finite
(NaN / inf) or missing reward are dropped and counted; a prompt left with fewer than two samples yields nothing.
Ties are broken by sample index, so pairs are deterministic.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .store import CollectionMismatchError, hidden_key, model_identity_diffs, read_collection, token_logps_key
from ..configs import describe_changes
from ..modeling.generation import compute_head_inputs
from ..modeling.head import AdaptiveDecoderConfig
from ..plotting import pyplot, save_figure
from ..modeling.response_logps import response_log_prob, sample_token_log_probs, table_temperatures

logger = logging.getLogger(__name__)

PAIR_MODES = ("best_vs_worst", "top_k_vs_bottom_k", "all_pairs")
# Head-config keys that give a stored choice index its meaning (architecture keys may differ between heads).
_CHOICE_KEYS = ("hidden_size", "level", "factors", "temperature_bins", "top_p_bins", "top_k_bins", "min_p_bins", "fixed")


class ModelNeededError(ValueError):
    """Some samples in pairs lack what the dataset reads from the collection (cached head inputs or stored token
    log-probs); only the collection's base LM (`model=`) can recompute them. A ValueError, so callers that only
    report bad input keep working; callers that can load the LM catch this type."""


@dataclass(frozen=True)
class Pair:
    prompt_id: str
    task: str
    chosen: int  # sample_index within the prompt's group
    rejected: int
    reward_chosen: float
    reward_rejected: float


def _total(rec: dict):
    r = rec.get("rewards", {}).get("total")
    return float(r) if isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) else None


def build_pairs(records: list[dict], mode: str = "best_vs_worst", k: int = 2, eps: float = 1e-6,
                prompt_ids: list[str] | None = None) -> tuple[list[Pair], dict]:
    """Pairs and counts from sample records ({"prompt_id", "task", "sample_index", "rewards": {"total"}}).

    `prompt_ids`: prompts expected to have samples (e.g. the manifest's done list); those without any record are
    counted as `prompts_no_samples`.
    """
    if mode not in PAIR_MODES:
        raise ValueError(f"unknown pair mode {mode!r}; valid: {list(PAIR_MODES)}")
    if mode == "top_k_vs_bottom_k" and (int(k) != k or k < 1):
        raise ValueError(f"top_k_vs_bottom_k needs an integer k >= 1, got {k!r}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    groups: dict[str, list[dict]] = {pid: [] for pid in (prompt_ids or [])}
    for r in records:
        groups.setdefault(r["prompt_id"], []).append(r)
    stats = {"mode": mode, "eps": eps, "prompts": len(groups), "prompts_no_samples": 0, "prompts_too_few_valid": 0,
             "prompts_all_tied": 0, "samples": len(records), "nonfinite_dropped": 0, "ties_skipped": 0, "pairs": 0,
             "pairs_per_task": {}}
    pairs: list[Pair] = []
    for pid, recs in groups.items():
        if not recs:
            stats["prompts_no_samples"] += 1
            continue
        valid = [(r, _total(r)) for r in recs]
        stats["nonfinite_dropped"] += sum(t is None for _, t in valid)
        valid = sorted([(r, t) for r, t in valid if t is not None], key=lambda x: (-x[1], x[0]["sample_index"]))
        if len(valid) < 2:
            stats["prompts_too_few_valid"] += 1
            continue
        if valid[0][1] - valid[-1][1] <= eps:
            stats["prompts_all_tied"] += 1
        if mode == "best_vs_worst":
            cands = [(valid[0], valid[-1])]
        elif mode == "top_k_vs_bottom_k":
            kk = min(int(k), len(valid) // 2)
            cands = [(a, b) for a in valid[:kk] for b in valid[len(valid) - kk:]]
        else:
            cands = [(valid[i], valid[j]) for i in range(len(valid)) for j in range(i + 1, len(valid))]
        for (rc, tc), (rr, tr) in cands:
            if tc - tr <= eps:
                stats["ties_skipped"] += 1
                continue
            task = rc["task"]
            pairs.append(Pair(pid, task, rc["sample_index"], rr["sample_index"], tc, tr))
            stats["pairs_per_task"][task] = stats["pairs_per_task"].get(task, 0) + 1
    stats["pairs"] = len(pairs)
    return pairs, stats


# --------------------------------------------------------------------------------------------------------
# Statistics: how often each bin is chosen / rejected, per factor and task (the paper's Figure 7)
# --------------------------------------------------------------------------------------------------------


def pair_statistics(pairs: list[Pair], records: list[dict], head_config: AdaptiveDecoderConfig | dict) -> dict:
    """{"bins": {factor: values}, "level", "tasks": {task|"all": {factor: {"chosen": counts, "rejected": counts}}}}.

    Token level counts every step of the sample (so long samples weigh more, as in the token-level loss).
    """
    cfg = head_config if isinstance(head_config, AdaptiveDecoderConfig) else AdaptiveDecoderConfig.from_dict(head_config)
    by_key = {(r["prompt_id"], r["sample_index"]): r for r in records}
    empty = lambda: {f: {"chosen": [0] * len(cfg.bins(f)), "rejected": [0] * len(cfg.bins(f))} for f in cfg.factors}  # noqa: E731
    tasks = {"all": empty()}
    for p in pairs:
        for side, idx in (("chosen", p.chosen), ("rejected", p.rejected)):
            rec = by_key[(p.prompt_id, idx)]
            for f in cfg.factors:
                c = rec["choices"][f]
                for b in (c if isinstance(c, list) else [c]):
                    if b >= 0:
                        for t in ("all", p.task):
                            tasks.setdefault(t, empty())[f][side][b] += 1
    return {"bins": {f: cfg.bins(f) for f in cfg.factors}, "level": cfg.level, "num_pairs": len(pairs), "tasks": tasks}


def bin_rewards(records: list[dict], head_config: AdaptiveDecoderConfig | dict, eps: float = 1e-6) -> dict:
    """Per task and factor, what a sequence-level collection says about each bin before any pairing:
    {task|"all": {factor: {"n": [samples per bin], "mean": [mean total reward per bin, None if n = 0],
    "wins": [[a][b] = within-prompt sample pairs where bin a's sample beat bin b's by more than eps],
    "diff": [[a][b] = mean of (a's reward - b's) over within-prompt pairs of a and b, None if there are none]}}}.

    Why both: the pairs, and so LPO, follow who wins within a prompt, while the bar scores mean reward. A bin whose
    samples are rarely bad (low spread) can win most head-to-heads yet lose on the mean; when "wins" and "diff"
    (both paired within prompts) rank two bins differently, a preference loss learns the one the mean does not
    favour. Token-level heads choose per step: {}.
    """
    cfg = head_config if isinstance(head_config, AdaptiveDecoderConfig) else AdaptiveDecoderConfig.from_dict(head_config)
    if cfg.level != "sequence":
        return {}
    groups: dict[str, list[tuple[dict, float]]] = {}
    for r in records:
        t = _total(r)
        if t is not None:
            groups.setdefault(r["prompt_id"], []).append((r, t))
    out: dict = {}

    def slot(task, f):
        nb = len(cfg.bins(f))
        return out.setdefault(task, {}).setdefault(f, {"n": [0] * nb, "sum": [0.0] * nb,
                                                       "wins": [[0] * nb for _ in range(nb)],
                                                       "dsum": [[0.0] * nb for _ in range(nb)],
                                                       "pairs": [[0] * nb for _ in range(nb)]})

    for recs in groups.values():
        task = recs[0][0]["task"]
        for f in cfg.factors:
            chosen = [(r["choices"][f], tot) for r, tot in recs if r["choices"][f] >= 0]
            for t in ("all", task):
                d = slot(t, f)
                for c, tot in chosen:
                    d["n"][c] += 1
                    d["sum"][c] += tot
                for i, (a, ta) in enumerate(chosen):
                    for b, tb in chosen[i + 1:]:
                        if a == b:
                            continue
                        d["pairs"][a][b] += 1
                        d["pairs"][b][a] += 1
                        d["dsum"][a][b] += ta - tb
                        d["dsum"][b][a] += tb - ta
                        if abs(ta - tb) > eps:
                            d["wins"][a if ta > tb else b][b if ta > tb else a] += 1
    for by_f in out.values():
        for d in by_f.values():
            d["mean"] = [s / n if n else None for s, n in zip(d.pop("sum"), d["n"])]
            pairs, dsum = d.pop("pairs"), d.pop("dsum")
            d["diff"] = [[ds / c if c else None for ds, c in zip(rs, rc)] for rs, rc in zip(dsum, pairs)]
    return out


def preference_mean_disagreements(rewards: dict, bins: dict) -> list[str]:
    """Lines naming the bin pairs of `bin_rewards` that win more within-prompt head-to-heads but lose on the mean
    within-prompt difference of reward."""
    lines = []
    for task, by_f in rewards.items():
        if task == "all":
            continue
        for f, d in by_f.items():
            for a in range(len(d["n"])):
                for b in range(a + 1, len(d["n"])):
                    wa, wb, dab = d["wins"][a][b], d["wins"][b][a], d["diff"][a][b]
                    if dab is None or wa == wb or dab == 0 or (wa > wb) == (dab > 0):
                        continue
                    hi, lo = (a, b) if wa > wb else (b, a)
                    lines.append(f"{task}: {f} {bins[f][hi]} beats {bins[f][lo]} in {max(wa, wb)} of {wa + wb} "
                                 f"within-prompt pairs but is {-d['diff'][hi][lo]:.3f} below it in mean reward: "
                                 f"preference pairs favour {bins[f][hi]}, the mean {bins[f][lo]}")
    return lines


def plot_pair_statistics(stats: dict, path) -> Path:
    """Grouped bars (fraction of chosen vs rejected decisions per bin): one row per task, one column per factor."""
    plt = pyplot()

    tasks = [t for t in stats["tasks"] if t != "all"] + ["all"]
    factors = list(stats["bins"])
    if not factors:
        raise ValueError("the head has no active factor: nothing to plot")
    fig, axes = plt.subplots(len(tasks), len(factors), figsize=(3.6 * len(factors), 2.6 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        for j, f in enumerate(factors):
            ax = axes[i][j]
            bins = stats["bins"][f]
            x = range(len(bins))
            for off, side, color in ((-0.2, "chosen", "tab:green"), (0.2, "rejected", "tab:red")):
                counts = stats["tasks"][task][f][side]
                total = sum(counts) or 1
                ax.bar([v + off for v in x], [c / total for c in counts], width=0.4, color=color, label=f"{side} "
                                                                                                        f"(n={sum(counts)})")
            ax.set_xticks(list(x))
            ax.set_xticklabels([str(b) for b in bins], fontsize=8)
            ax.set_title(f"{task}: {f}", fontsize=9)
            ax.set_ylim(0, 1)
            ax.legend(fontsize=7)
            if j == 0:
                ax.set_ylabel("fraction of decisions")
    fig.suptitle(f"{stats['num_pairs']} preference pairs ({stats['level']} level)", fontsize=10)
    return save_figure(fig, path, dpi=100)


def collection_pair_report(root, mode: str = "best_vs_worst", k: int = 2, eps: float = 1e-6) -> dict:
    """Build pairs of a collection, write pair_stats.json and pair_stats.png into it, return the counts."""
    manifest, records = read_collection(root)
    pairs, counts = build_pairs(records, mode, k, eps, prompt_ids=manifest["done"])
    stats = pair_statistics(pairs, records, manifest["head"]["config"])
    rewards = bin_rewards(records, manifest["head"]["config"], eps)
    for line in preference_mean_disagreements(rewards, stats["bins"]):
        logger.warning(line)
    root = Path(root)
    (root / "pair_stats.json").write_text(json.dumps({"counts": counts, **stats, "bin_rewards": rewards}, indent=1))
    plot_pair_statistics(stats, root / "pair_stats.png")
    return counts


# --------------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------------


class PairDataset(torch.utils.data.Dataset):
    """Preference pairs of a collection directory, one dict per pair (what `lpo.collate_pairs` batches):

        {"chosen_inputs": [H] or [Tc, H], "chosen_choices": {factor: LongTensor [] or [Tc]},
         "rejected_inputs", "rejected_choices", "reward_chosen", "reward_rejected", "task", "prompt_id"}

    Head inputs come from the collection's fp16 cache when present (`use_cache`), else they are recomputed with
    one teacher-forced forward pass of `model` per sample (`compute_head_inputs`); both paths return `dtype`.
    `model` is checked against the base model the collection was made with, `head_config` (the head being
    trained) against the collecting head's bins / factors / level: a mismatch is refused.

    With `response_logps` (the joint and latent losses) each side also carries the LM's view of its tokens
    (`adaptive_decoder.modeling.response_logps`): "<side>_token_logps" float32 [T, K] (K = the temperature bins),
    "<side>_response_logp" (sum at the temperatures it was decoded with) and "<side>_lm_logp" (sum at
    temperature 1), read from the collection, or recomputed with `model` for samples collected without them.
    """

    def __init__(self, collection_dir, *, mode: str = "best_vs_worst", k: int = 2, eps: float = 1e-6,
                 tasks: list[str] | None = None, model=None, head_config=None, use_cache: bool = True,
                 dtype: torch.dtype = torch.float16, response_logps: bool = False):
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
            diffs = model_identity_diffs(self.manifest["base_model"], model)
            if diffs:
                raise CollectionMismatchError(f"{self.root} was collected with a different base model:\n  "
                                              + "\n  ".join(diffs))
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
        self.model, self.dtype, self.level = model, dtype, self.config.level
        needed = {(p.prompt_id, i) for p in self.pairs for i in (p.chosen, p.rejected)}
        self._cache: dict = {}
        if use_cache:
            self._load_cache(needed)
        self.response_logps, self._tables = response_logps, {}
        if response_logps:
            self._load_tables(needed)
            no_table = needed - set(self._tables)
            if no_table and model is None:
                raise ModelNeededError(f"{len(no_table)} of the {len(needed)} samples in pairs have no stored token log-probs "
                                 "(collected before they were recorded): pass model= (the collection's base model) to recompute "
                                 "them")
        missing = needed - set(self._cache)
        self.stats.update(samples_in_pairs=len(needed), samples_cached=len(needed) - len(missing),
                          samples_recomputed=len(missing))
        if missing and model is None:
            raise ModelNeededError(f"{len(missing)} of the {len(needed)} samples in pairs have no cached head inputs "
                             f"(cache budget or use_cache=False): pass model= (the collection's base model) to recompute them")

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


__all__ = ["PAIR_MODES", "Pair", "PairDataset", "build_pairs", "collection_pair_report", "pair_statistics",
           "plot_pair_statistics"]
