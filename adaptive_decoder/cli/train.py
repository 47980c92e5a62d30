"""Train an AdaptiveDecoder head with LPO on a sample collection (thin recipe over adaptive_decoder.lpo.trainer).

    adaptive-decoder train --config configs/lpo/train_smollm2_seq.yaml [--beta 0.2 ...]
    python training/train_lpo.py --config configs/lpo/train_smollm2_seq.yaml     # the same, from a clone
    torchrun --nproc_per_node 2 training/train_lpo.py --config configs/lpo/train_tiny.yaml          # DDP (gloo on CPU)
    accelerate launch --config_file configs/accelerate/cpu_ddp.yaml training/train_lpo.py --config ...
    accelerate launch --config_file configs/accelerate/deepspeed_zero2_cpu.yaml training/train_lpo.py --config ...
    torchrun --nproc_per_node 2 training/train_lpo.py --config ... --deepspeed configs/deepspeed/zero2.json

Add --resume to continue from the newest checkpoint in output_dir. An unknown YAML key or CLI flag is an error
that names it. Only the head is trained; the LM is loaded only if some pair samples are not in the cache.
"""

from __future__ import annotations

import json
import logging
import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


from adaptive_decoder.cli import CONFIG_DIR  # noqa: E402
from adaptive_decoder.configs import parse_recipe_config, run_recipe  # noqa: E402
from adaptive_decoder.lpo.config import LPOConfig  # noqa: E402
from adaptive_decoder.lpo.data import build_head_and_dataset  # noqa: E402
from adaptive_decoder.lpo.trainer import LPOTrainer  # noqa: E402


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one INFO line per saved file otherwise
    (cfg,) = parse_recipe_config((LPOConfig,), argv, __doc__, config_dir=CONFIG_DIR / "train")
    if cfg.torch_threads:
        import torch

        torch.set_num_threads(cfg.torch_threads)
    head, dataset = build_head_and_dataset(cfg)
    trainer = LPOTrainer(cfg, head, dataset)
    if trainer.accelerator.is_main_process:
        stats = getattr(dataset, "stats", None)
        logging.getLogger("train_lpo").info("%d pairs%s", len(dataset), f"; pair stats {json.dumps(stats)}" if stats else "")
    summary = trainer.train()
    if trainer.accelerator.is_main_process:
        print(json.dumps({k: v for k, v in summary.items() if k != "bin_histograms"}))
    return summary


if __name__ == "__main__":
    run_recipe(main)
