"""The training set of an LPO run and the head it fits: preference pairs (or, for the expected-reward objective,
whole prompt groups, `GroupDataset`) from a collection, or synthetic pairs.

`build_head_and_dataset(cfg)` reads the pair settings of an `LPOConfig` and returns `(head, dataset)`:
  - pairs from a collection (`PairDataset`): the head's bins/factors/level default to the collecting head's, so a
    stored choice index means the same bin to the head being trained; `head_path` must agree on those keys;
  - or `SyntheticPairs`: two toy tasks with a known answer, for smoke and multi-process tests.
Head inputs come from the collection's hidden-state cache; the base LM is loaded only when some pair sample is not
cached, and then in the dtype the collection ran in, so recomputed states are those the cache would have held.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

import torch

from ..modeling.head import AdaptiveDecoderConfig, build_head
from .expected_reward import GROUP_LOSS_TYPES
from .losses import NEEDS_RESPONSE_LOGPS
from .pairs import MissingSamples, ModelNeededError, PairDataset
from .store import head_identity, read_manifest

if TYPE_CHECKING:
    from .config import LPOConfig

logger = logging.getLogger(__name__)
# what a head_path must share with the pairs: a stored choice index has to mean the same bin to the head trained
_AGREE = ("hidden_size", "level", "factors", "temperature_bins", "top_p_bins", "top_k_bins")


class SyntheticPairs(torch.utils.data.Dataset):
    """Deterministic toy pairs in the `PairDataset` format, for smoke tests and multi-process tests.

    Two tasks whose hidden states sit around +mu ("low") and -mu ("high"): in "low" the chosen sample used the
    lowest bin of every factor and the rejected one a random other bin; in "high", the highest bin. A head trained
    on them should pick the lowest bins on "low" prompts and the highest on "high" ones.
    """

    def __init__(self, n: int, head_config: AdaptiveDecoderConfig, seed: int = 0, steps: int = 3):
        g = torch.Generator().manual_seed(seed)
        h, level = head_config.hidden_size, head_config.level
        mu = torch.randn(h, generator=g)
        self.items = []
        for i in range(n):
            task = "low" if i % 2 == 0 else "high"
            sign = 1.0 if task == "low" else -1.0
            t = 1 if level == "sequence" else 1 + int(torch.randint(0, steps, (1,), generator=g))
            shape = (h,) if level == "sequence" else (t, h)
            cshape = () if level == "sequence" else (t,)
            # sequence level: both samples of a prompt see the same last-prompt-token state
            base = sign * mu + 0.5 * torch.randn(shape, generator=g)
            ex = {"chosen_inputs": base.half(), "rejected_inputs": (base if level == "sequence" else
                  sign * mu + 0.5 * torch.randn(shape, generator=g)).half(),
                  "chosen_choices": {}, "rejected_choices": {}, "reward_chosen": 1.0, "reward_rejected": 0.0,
                  "task": task, "prompt_id": f"synthetic-{i}"}
            for f in head_config.factors:
                nb = len(head_config.bins(f))
                best = 0 if task == "low" else nb - 1
                other = torch.randint(0, max(nb - 1, 1), cshape, generator=g)
                other = other + (other >= best).long() if nb > 1 else other  # any bin but `best`
                ex["chosen_choices"][f] = torch.full(cshape, best, dtype=torch.long)
                ex["rejected_choices"][f] = other
            self.items.append(ex)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def build_head_and_dataset(cfg: LPOConfig):
    """(head, dataset) for a config: the head from head_path or fresh; pairs from the collection or synthetic.

    A collection's cached hidden states are used without loading the LM; the LM (`base_model`) is loaded only
    when the dataset reports pair samples that are not cached (its `missing`), and refused by name when unset.
    """
    if cfg.synthetic_pairs:
        opts = {"level": "sequence", "num_layers": 2, "intermediate_size": 32, **cfg.head,
                "hidden_size": cfg.synthetic_hidden_size, "base_model": "synthetic"}
        head = build_head(opts, cfg.head_init_seed, head_path=cfg.head_path, agree=_AGREE)
        return head, SyntheticPairs(cfg.synthetic_pairs, head.config, seed=cfg.seed)

    manifest = read_manifest(cfg.collection_dir)
    collected = dict(manifest["head"]["config"])
    head = build_head({**collected, **cfg.head}, cfg.head_init_seed, head_path=cfg.head_path, agree=_AGREE)
    if head_identity(head)["fingerprint"] == manifest["head"].get("fingerprint"):
        logger.info("the initial head is the collecting head (LPO's reference = the sampling policy)")
    else:
        logger.info("the initial head differs from the collecting head (other head_path / head_init_seed / options)")
    load = partial(_load_collection_lm, cfg.base_model, manifest)
    if cfg.loss_type in GROUP_LOSS_TYPES:  # whole prompt groups, weighted by the initial (= collecting) head's mu
        from .groups import GroupDataset

        return head, GroupDataset(cfg.collection_dir, behaviour_head=head, tasks=cfg.tasks, use_cache=cfg.use_cache,
                                  eps=cfg.pair_eps, load_model=load)
    return head, PairDataset(cfg.collection_dir, mode=cfg.pair_mode, k=cfg.pair_k, eps=cfg.pair_eps, tasks=cfg.tasks,
                             head_config=head.config, use_cache=cfg.use_cache,
                             response_logps=cfg.loss_type in NEEDS_RESPONSE_LOGPS, load_model=load)


def _load_collection_lm(name: str | None, manifest: dict, missing: MissingSamples):
    """The collection's LM (`name`: LPOConfig.base_model), which `PairDataset` asks for only when `missing` pair
    samples must be recomputed. It loads in the dtype and with the loading options (revision, attention,
    quantization) the collection ran with: its hidden states (and the identity check) are of that model."""
    if not name:
        raise ModelNeededError(f"{missing.describe()}: set base_model (the collection's LM) so they can be recomputed")
    from ..modeling.models import load_base_model

    dtype = manifest["base_model"].get("dtype", "float32")
    load = manifest["base_model"].get("load", {})
    logger.info("%s: loading %s (%s%s) to recompute them", missing.describe(), name, dtype,
                "".join(f", {k}={v}" for k, v in load.items()))
    model, _ = load_base_model(name, dtype=dtype, **load)
    return model


class MemoizedDataset(torch.utils.data.Dataset):
    """Keeps the items of a dataset after their first access, so pairs whose head inputs are recomputed with the
    LM (a collection whose cache does not cover every sample) cost one forward pass per run, not one per epoch.
    Memory: every item stays in RAM, as a full cache would."""

    def __init__(self, dataset):
        self.dataset, self.items = dataset, {}
        self.stats = getattr(dataset, "stats", None)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        if i not in self.items:
            self.items[i] = self.dataset[i]
        return self.items[i]


__all__ = ["MemoizedDataset", "SyntheticPairs", "build_head_and_dataset"]
