"""What an LPO run shows: the trained head's bin choices per task and the training curves from metrics.jsonl.

`task_bin_histograms` runs the head over the chosen samples of the training pairs, or every sample of the prompt
groups of the expected-reward objective (sequence level: one decision per prompt; token level: every step), and
counts argmax bins per task, with the mean bin probabilities and the expected value beside them; the plots read
that dict and the metrics rows, so they can be redrawn from a run directory after the fact.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..modeling.head import AdaptiveDecoderHead
from .expected_reward import collate_groups
from .losses import collate_pairs
from ..plotting import pyplot, save_figure
from ..storage import read_jsonl_log


def _decisions(batch: dict) -> tuple:
    """(inputs, step mask or None, task per row) of the decisions a histogram counts: the chosen sample of each
    pair; of a group batch, each prompt's first sample at sequence level (its samples share the input), else all."""
    if "chosen_inputs" in batch:
        return batch["chosen_inputs"], batch.get("chosen_mask"), batch["task"]
    rows = batch["first"] if batch["level"] == "sequence" else torch.arange(len(batch["group"]))
    mask = batch["mask"][rows] if "mask" in batch else None
    return batch["inputs"][rows], mask, [batch["task"][g] for g in batch["group"][rows].tolist()]


def task_bin_histograms(head: AdaptiveDecoderHead, dataset, batch_size: int = 256) -> dict:
    """Per task and factor: argmax-bin counts of `head` on the pairs' chosen samples or the groups' samples
    (sequence level: one decision per prompt, the hidden state of its last prompt token; token level: every step
    of those samples), plus the head's mean bin probabilities ("mean_probs") and expected value ("expected") over
    the same decisions."""
    head = head.eval()
    bins = {f: head.config.bins(f) for f in head.factors}
    out = {"bins": bins, "level": head.config.level, "tasks": {}, "mean_probs": {}, "expected": {}}
    prob_sums: dict = {}
    collate = collate_groups if len(dataset) and "samples" in dataset[0] else collate_pairs
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    for batch in loader:
        inputs, mask, tasks = _decisions(batch)
        with torch.no_grad():
            inputs = inputs.to(next(head.parameters()).device)
            picks, probs = head.select(inputs, "argmax"), head.probs(inputs)
        for f, idx in picks.items():
            idx, p = idx.cpu(), probs[f].float().cpu()
            for i, task in enumerate(tasks):
                if idx.dim() == 2:
                    keep = mask[i]
                    row, prow = idx[i][keep], p[i][keep]
                else:
                    row, prow = idx[i : i + 1], p[i : i + 1]
                for t in (task, "all"):
                    h = out["tasks"].setdefault(t, {g: [0] * len(b) for g, b in bins.items()})
                    for b in row.tolist():
                        h[f][b] += 1
                    acc = prob_sums.setdefault(t, {}).setdefault(f, torch.zeros(len(bins[f])))
                    acc += prow.sum(0)
    for t, per in prob_sums.items():
        for f, total in per.items():
            mean = (total / max(sum(out["tasks"][t][f]), 1)).tolist()
            out["mean_probs"].setdefault(t, {})[f] = [round(v, 4) for v in mean]
            out["expected"].setdefault(t, {})[f] = round(sum(m * v for m, v in zip(mean, bins[f])), 4)
    return out


def _read_history(history) -> list[dict]:
    if isinstance(history, (str, Path)):
        history = read_jsonl_log(history)
    return [h for h in history if "final" not in h]


def plot_training_curves(history, path) -> Path | None:
    """Loss, chosen-vs-rejected accuracy, reward margin and head entropy vs step (from logs or metrics.jsonl)."""
    plt = pyplot()

    rows = _read_history(history)
    if not rows:
        return None
    panels = [("loss", "loss"), ("rewards/accuracies", "accuracy (chosen > rejected)"),
              ("rewards/margins", "reward margin"), ("entropy", "head entropy (nats)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3))
    steps = [r["step"] for r in rows]
    for ax, (key, title) in zip(axes, panels):
        ax.plot(steps, [r.get(key, float("nan")) for r in rows], marker="." if len(rows) < 30 else None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=100)


def plot_bin_histograms(hist: dict, path) -> Path:
    """One row per task, one column per factor: fraction of the trained head's argmax decisions per bin."""
    plt = pyplot()

    tasks = [t for t in hist["tasks"] if t != "all"] + (["all"] if "all" in hist["tasks"] else [])
    factors = list(hist["bins"])
    fig, axes = plt.subplots(max(len(tasks), 1), len(factors), figsize=(max(4.5 * len(factors), 6), 2.4 * max(len(tasks), 1)),
                             squeeze=False)
    for i, task in enumerate(tasks):
        for j, f in enumerate(factors):
            counts = hist["tasks"][task][f]
            total = sum(counts) or 1
            ax = axes[i][j]
            x = range(len(counts))
            ax.bar([v - 0.2 for v in x], [c / total for c in counts], width=0.4, color="tab:blue", label="argmax share")
            probs = hist.get("mean_probs", {}).get(task, {}).get(f)
            if probs is not None:
                ax.bar([v + 0.2 for v in x], probs, width=0.4, color="tab:orange", label="mean probability")
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
            ax.set_xticks(range(len(counts)))
            ax.set_xticklabels([str(b) for b in hist["bins"][f]], fontsize=8)
            ax.set_ylim(0, 1)
            exp = hist.get("expected", {}).get(task, {}).get(f)
            ax.set_title(f"{task}: {f} (n={sum(counts)}" + (f", E={exp:.2f})" if exp is not None else ")"), fontsize=9)
    fig.suptitle(f"trained head on the training prompts ({hist['level']} level)", fontsize=10)
    return save_figure(fig, path, dpi=100)


__all__ = ["plot_bin_histograms", "plot_training_curves", "task_bin_histograms"]
