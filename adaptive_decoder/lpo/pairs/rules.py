"""The pairing rules: which samples of a prompt's group become a (chosen, rejected) preference pair.

Pair modes, within each prompt's group of samples ranked by total reward:
  best_vs_worst      one pair: the best vs the worst sample (the paper's default);
  top_k_vs_bottom_k  every (top-i, bottom-j) combination of the k best and k worst (k <= group size // 2);
  all_pairs          every pair of samples, the higher reward chosen.
A candidate pair whose rewards differ by at most `eps` is a tie: skipped and counted. Samples with a non-finite
(NaN / inf) or missing reward are dropped and counted; a prompt left with fewer than two samples yields nothing.
Ties are broken by sample index, so pairs are deterministic: the same records give the same pairs in the same order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PAIR_MODES = ("best_vs_worst", "top_k_vs_bottom_k", "all_pairs")


@dataclass(frozen=True)
class Pair:
    prompt_id: str
    task: str
    chosen: int  # sample_index within the prompt's group
    rejected: int
    reward_chosen: float
    reward_rejected: float


def total_reward(rec: dict) -> float | None:
    """A sample record's total reward, or None when it is missing or not a finite number (such samples pair with
    nothing: a NaN would make every comparison false and so silently pick an arbitrary pair)."""
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
        valid = [(r, total_reward(r)) for r in recs]
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


__all__ = ["PAIR_MODES", "Pair", "build_pairs", "total_reward"]
