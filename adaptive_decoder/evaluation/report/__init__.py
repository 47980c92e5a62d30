"""Reporting, kept apart from the code that produces results (the suite's `Evaluator`, the experiment's pipeline),
as lm-evaluation-harness keeps `make_table` and its loggers apart from its evaluator.

- `markdown`: results.md (`markdown_table`), summary.md (`summary_markdown`) and the verdict a run ends with;
- `plots`: reward vs temperature, the chosen decoding values, the experiment's paired differences;
- `loggers`: wandb.

Each renders the results dict as written to results.json / summary.json, never the objects that computed it.
"""

from .loggers import log_wandb
from .markdown import SMALL_N, fit_line, markdown_table, summary_markdown, verdict_block
from .plots import (difference_rows, plot_chosen_params, plot_paired_differences, plot_reward_vs_temperature, results_plots,
                    summary_plots)

__all__ = ["SMALL_N", "difference_rows", "fit_line", "log_wandb", "markdown_table", "plot_chosen_params",
           "plot_paired_differences", "plot_reward_vs_temperature", "results_plots", "summary_markdown", "summary_plots",
           "verdict_block"]
