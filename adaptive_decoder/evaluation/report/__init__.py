"""Reporting, kept apart from the code that produces results (the suite's `Evaluator`, the experiment's pipeline),
as lm-evaluation-harness keeps `make_table` and its loggers apart from its evaluator.

- `markdown`: results.md (`markdown_table`), summary.md (`summary_markdown`) and the verdict a run ends with;
- `scalefree`: the scale-free report's tables and the bar's rule and verdict line (`markdown_sections`, `bar_line`);
- `plots`: reward vs temperature, the chosen decoding values, the experiment's paired differences;
- `loggers`: wandb.

Each renders the results dict as written to results.json / summary.json, never the objects that computed it, and
nothing here imports the experiment.
"""

from .loggers import log_wandb
from .markdown import SMALL_N, fit_line, markdown_table, summary_markdown, verdict_block
from .scalefree import BAR_RULE, bar_line, bar_numbers, markdown_sections, rival_line
from .plots import (difference_rows, plot_chosen_params, plot_paired_differences, plot_reward_vs_temperature, results_plots,
                    summary_plots)

__all__ = ["BAR_RULE", "SMALL_N", "bar_line", "bar_numbers", "difference_rows", "fit_line", "log_wandb", "markdown_sections",
           "markdown_table", "plot_chosen_params", "plot_paired_differences", "plot_reward_vs_temperature", "results_plots",
           "rival_line", "summary_markdown", "summary_plots", "verdict_block"]
