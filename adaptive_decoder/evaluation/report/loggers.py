"""Logging a suite's results to wandb: the reward and comparison tables and the plots, as one run.

Offline unless WANDB_MODE says otherwise (runs happen on machines without network); a missing wandb package is
a warning, not an error, since the files on disk hold the same numbers.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import EvalConfig

logger = logging.getLogger(__name__)


def log_wandb(results: dict, cfg: EvalConfig, images: list):
    try:
        import wandb
    except ImportError:
        logger.warning("report_to='wandb' but wandb is not installed (pip install wandb); skipping wandb logging")
        return
    os.environ.setdefault("WANDB_MODE", "offline")
    run = wandb.init(project=cfg.wandb_project, name=cfg.run_name or Path(cfg.output_dir).name, dir=cfg.output_dir,
                     config=results["config"], reinit="finish_previous")
    summary = wandb.Table(columns=["task", "method", "reward", "reward_lo", "reward_hi"])
    for t, tr in results["tasks"].items():
        for m, r in tr["methods"].items():
            summary.add_data(t, m, r["reward"]["mean"], r["reward"]["lo"], r["reward"]["hi"])
    cols = ["task", "method", "baseline", "win", "win_lo", "win_hi", "tie", "loss", "mean_diff", "diff_lo", "diff_hi", "p_value",
            "p_holm"]
    comps = wandb.Table(columns=cols, data=[[c.get(k) for k in cols] for c in results["comparisons"]])
    log = {"summary": summary, "comparisons": comps}
    for p in images:
        log[f"plots/{Path(p).stem}"] = wandb.Image(str(p))
    run.log(log)
    run.finish()
