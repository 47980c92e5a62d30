"""The two matplotlib steps every plot in the library shares: a file-only backend and a save that closes; and the
figures that read nothing but a plain statistics dict, so a method's module computes numbers and never draws.

Agg, because plots are written on clusters and CI machines with no display; closing, because long runs (sweeps,
per-epoch histograms) would otherwise keep every figure alive.
"""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (writes files, needs no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 100, bbox_inches=None) -> Path:
    """tight_layout, write `path` (parent directories created), close the figure; returns the path.

    bbox_inches="tight" keeps a legend placed outside the axes (fig.legend beside the panels) in the file."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if bbox_inches is None:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi, bbox_inches=bbox_inches)
    plt.close(fig)
    return path


def plot_pair_statistics(stats: dict, path) -> Path:
    """Grouped bars (fraction of chosen vs rejected decisions per bin): one row per task, one column per factor.

    `stats` is `adaptive_decoder.lpo.pairs.pair_statistics`'s dict ({"bins", "level", "num_pairs", "tasks"})."""
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


__all__ = ["plot_pair_statistics", "pyplot", "save_figure"]
