"""What a collection's preference pairs say before any training: which bins the chosen and rejected samples used
(the paper's Figure 7) and, for sequence-level collections, each bin's mean reward beside its within-prompt wins.

Both read plain sample records ({"prompt_id", "task", "sample_index", "rewards": {"total"}, "choices"}), so they can
be recomputed from a collection directory at any time; `collection_pair_report` writes them (pair_stats.json and
its figure, `adaptive_decoder.plotting.plot_pair_statistics`) into the collection.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..store import read_collection
from ...modeling.head import AdaptiveDecoderConfig
from ...plotting import plot_pair_statistics
from .rules import Pair, build_pairs, total_reward

logger = logging.getLogger(__name__)


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
        t = total_reward(r)
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


__all__ = ["bin_rewards", "collection_pair_report", "pair_statistics", "preference_mean_disagreements"]
