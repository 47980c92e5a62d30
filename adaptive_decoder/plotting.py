"""The two matplotlib steps every plot in the library shares: a file-only backend and a save that closes.

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
