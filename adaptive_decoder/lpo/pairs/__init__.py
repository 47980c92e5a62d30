"""Preference pairs from a sample collection, one idea per module:

  rules.py        which samples of a prompt's group pair up (`build_pairs`, the pair modes, ties, non-finite rewards);
  diagnostics.py  what the pairs say before training: bin counts of chosen vs rejected (the paper's Fig. 7) and
                  each bin's mean reward beside its within-prompt wins (`collection_pair_report` writes both);
  dataset.py      `PairDataset`, the pairs as training tensors, cached or recomputed with the base LM, with the
                  report of what only the LM can recompute (`MissingSamples`).
The figure of the bin counts is drawn by `adaptive_decoder.plotting.plot_pair_statistics`.
"""

from .dataset import MissingSamples, ModelNeededError, PairDataset
from .diagnostics import bin_rewards, collection_pair_report, pair_statistics, preference_mean_disagreements
from .rules import PAIR_MODES, Pair, build_pairs, total_reward

__all__ = ["PAIR_MODES", "MissingSamples", "ModelNeededError", "Pair", "PairDataset", "bin_rewards", "build_pairs",
           "collection_pair_report", "pair_statistics", "preference_mean_disagreements", "total_reward"]
