"""`LPOTrainer`: train ONLY the AdaptiveDecoder head on preference pairs, as a `transformers.Trainer`.

TRL's layout: `LPOConfig(TrainingArguments)` (lpo/config.py) adds the method's own fields, and
`LPOTrainer(Trainer)` overrides `compute_loss` and `log`. Everything else is the Trainer's: the accelerator
(single process, DDP over gloo on CPU, DeepSpeed ZeRO-2), the seeded per-epoch shuffle, gradient accumulation,
the scheduler, and `checkpoint-N/` save / rotate / resume. The policy is the head's categorical distribution over
decoding-hyperparameter bins and a batch is hidden states, not token ids, which is why this is not `DPOTrainer`.

The Trainer's model is `_PolicyLogps`, a module whose forward is the head's log-probs of a pair batch, so DDP and
DeepSpeed see (and sync the gradients of) the whole policy computation. The reference head (pi_ref) is held like
DPOTrainer's `ref_model`: a frozen copy of the initial head, in eval mode on the training device, never prepared
or optimised; it is saved to `reference_head/` so a resumed run compares against the same initial head.

Exact resume is the Trainer's: model, optimizer, scheduler and every rank's RNG are restored from the newest
checkpoint and the resumed epoch skips the batches already seen, so an interrupted and resumed run ends with the
head an uninterrupted one ends with. A `checkpoint-N/` directory exists only once complete: the Trainer writes it
under `.staging/` and the main process renames it into place after every rank has written its files, so a kill
at any moment (a Slurm time limit, kill -9) leaves the previous checkpoint as the newest one.

Outputs in `output_dir`:
  head/                      final head (`save_pretrained`: config.json + model.safetensors + README.md, its model
                             card), selection="argmax"; with push_to_hub also uploaded to hub_model_id
  reference_head/            the frozen initial head (LPO's pi_ref; reloaded on resume)
  checkpoint-N/              the Trainer's checkpoints (save_total_limit newest kept)
  config.json                the run's LPOConfig
  metrics.jsonl              one row per logging step (and a final summary row)
  training_curves.png        loss / accuracy / margin / entropy vs step
  bin_histograms.json/.png   per task: how often the trained head's argmax picks each bin on the training pairs
  wandb/                     offline wandb run (report_to="wandb")
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path

import torch
from torch import nn
from transformers import PrinterCallback, Trainer, TrainerCallback
from transformers.integrations import WandbCallback
from transformers.trainer_utils import rotate_checkpoints

from ..modeling.head import AdaptiveDecoderHead
from .callbacks import _LaunchRecord, _MetricsFile, _StepHooks, _WandbMetrics
from .expected_reward import GROUP_LOSS_TYPES, collate_groups, group_loss, group_policy
from .losses import collate_pairs, compute_loss, policy_log_probs
from .config import LPOConfig
from .store import collection_card_facts
from .report import plot_bin_histograms, plot_training_curves, task_bin_histograms
from ..storage import read_jsonl_log

logger = logging.getLogger(__name__)

_CKPT = re.compile(r"^checkpoint-(\d+)$")
_STAGING = ".staging"


# ---------------------------------------------------------------------------------------------------------------
class _PolicyLogps(nn.Module):
    """The Trainer's model: DDP/DeepSpeed see the head's forward through it, and checkpoints hold `head.*`."""

    def __init__(self, head: AdaptiveDecoderHead, aggregation: str, loss_type: str = "lpo"):
        super().__init__()
        self.head, self.aggregation, self.loss_type = head, aggregation, loss_type

    def forward(self, batch: dict) -> dict:
        if self.loss_type in GROUP_LOSS_TYPES:
            return group_policy(self.head, batch)
        return policy_log_probs(self.head, batch, self.loss_type, self.aggregation)


def _argmax_counts(head, batch: dict) -> dict:
    """{factor: LongTensor [n_bins]} argmax-bin counts over the batch's real decisions (chosen + rejected, or
    every sample of a group batch)."""
    with torch.no_grad():
        if "inputs" in batch:
            inputs, mask = batch["inputs"], batch.get("mask")
        else:
            inputs = torch.cat([batch["chosen_inputs"], batch["rejected_inputs"]])
            mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]]) if inputs.dim() == 3 else None
        picks = head.select(inputs, "argmax")
        out = {}
        for f, idx in picks.items():
            idx = idx[mask] if mask is not None else idx
            out[f] = torch.bincount(idx.flatten(), minlength=len(head.config.bins(f)))
    return out


def checkpoints(output_dir) -> list[Path]:
    """The `checkpoint-N` directories of a run, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _CKPT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


# ---------------------------------------------------------------------------------------------------------------
class LPOTrainer(Trainer):
    """Train an `AdaptiveDecoderHead` on a dataset of preference pairs (dicts in the `PairDataset` format), or, for
    `loss_type="expected_reward"`, of prompt groups (`GroupDataset`'s format, batched by `collate_groups`).

    `callbacks`: `TrainerCallback`s, or plain callables `cb(trainer, step, logs)` run on every process after each
    optimizer step (see `_StepHooks`); raising from one stops training (the checkpoints stay valid). `train()`
    ends with `Trainer.end()` (trackers finished, process group destroyed): a gloo group left to interpreter exit
    can abort a rank (SIGABRT, "terminate called without an active exception") after a run that finished and saved
    everything, and the launcher then reports the job as failed (pytorch/pytorch#190489).
    """

    def __init__(self, args: LPOConfig, head: AdaptiveDecoderHead, train_dataset, callbacks=None):
        if len(train_dataset) == 0:
            raise ValueError("the training set has no preference pairs (all prompts tied / no valid samples?)")
        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        self.out = Path(args.output_dir)
        if args.uses_wandb:
            os.environ.setdefault("WANDB_MODE", "offline")
            self.out.mkdir(parents=True, exist_ok=True)
        hooks = [cb for cb in callbacks or [] if not isinstance(cb, TrainerCallback) and callable(cb)]
        native = [cb for cb in callbacks or [] if cb not in hooks]
        self.history: list[dict] = []
        self._staging = False  # True while a checkpoint is being written (see _save_checkpoint)
        collate = collate_groups if args.loss_type in GROUP_LOSS_TYPES else collate_pairs
        super().__init__(model=_PolicyLogps(head, args.token_aggregation, args.loss_type), args=args,
                         train_dataset=train_dataset, data_collator=collate,
                         callbacks=[_MetricsFile(self.out / "metrics.jsonl", self.history), *native])
        if hooks:
            self.add_callback(_StepHooks(self, hooks))
        if args.uses_wandb:
            self.remove_callback(WandbCallback)
            self.add_callback(_WandbMetrics())
        # without a progress bar the Trainer prints every log row; metrics.jsonl holds them, and the recipe's
        # stdout stays one JSON summary line
        self.remove_callback(PrinterCallback)
        acc = self.accelerator
        micro = math.ceil(len(train_dataset) / (args.per_device_train_batch_size * acc.num_processes))
        self.launch = _LaunchRecord(acc.num_processes, math.ceil(micro / args.gradient_accumulation_steps))
        self.add_callback(self.launch)

        found = checkpoints(self.out)  # every rank looks before any rank deletes, so all take the same branch
        if not args.resume and found and not args.overwrite_output_dir:
            raise ValueError(f"{self.out} already holds checkpoints: pass --resume to continue that run, "
                             "or --overwrite_output_dir to start over")
        acc.wait_for_everyone()
        if acc.is_main_process:
            shutil.rmtree(self.out / _STAGING, ignore_errors=True)  # a save a kill interrupted
            if not args.resume:
                for stale in found:
                    shutil.rmtree(stale)
                (self.out / "metrics.jsonl").unlink(missing_ok=True)
        acc.wait_for_everyone()

        # pi_ref = the head as it is now; saved so that a resumed run compares against the same initial head
        self.ref_head = None
        if args.loss_type != "nll" and args.reference == "initial":
            ref_dir = self.out / "reference_head"
            # every rank looks before any rank writes (a rank that looked while the main process was half-way
            # through saving once read a directory with no config.json)
            saved = args.resume and (ref_dir / "config.json").exists() and (ref_dir / "model.safetensors").exists()
            acc.wait_for_everyone()
            if saved:
                self.ref_head = AdaptiveDecoderHead.from_pretrained(ref_dir)
            else:
                self.ref_head = copy.deepcopy(head)
                if acc.is_main_process:  # written whole, then renamed: a crash mid-save leaves no half directory
                    tmp = self.out / "reference_head.tmp"
                    shutil.rmtree(tmp, ignore_errors=True)
                    self.ref_head.save_pretrained(tmp)
                    shutil.rmtree(ref_dir, ignore_errors=True)
                    os.replace(tmp, ref_dir)
            acc.wait_for_everyone()
            self.ref_head.requires_grad_(False).eval().to(acc.device)
        self._reset_metrics()
        self._pairs_seen = 0

    @property
    def head(self) -> AdaptiveDecoderHead:
        return self.accelerator.unwrap_model(self.model).head

    # ------------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logps, a = model(inputs), self.args
        if a.loss_type in GROUP_LOSS_TYPES:
            loss, metrics = group_loss(self.head, inputs, beta=a.beta, ref_head=self.ref_head,
                                       aggregation=a.token_aggregation, clip=a.importance_clip,
                                       advantage_scale=a.advantage_scale, estimator=a.expected_reward_estimator,
                                       policy_out=logps)
        else:
            loss, metrics = compute_loss(self.head, inputs, loss_type=a.loss_type, beta=a.beta, ref_head=self.ref_head,
                                         aggregation=a.token_aggregation, policy_logps=logps)
        if model.training:
            for k, v in metrics.items():
                if k != "loss":  # the Trainer logs the loss itself (averaged over the logging interval)
                    self._sums[k] = self._sums.get(k, 0.0) + v.float()
            for f, c in _argmax_counts(self.head, inputs).items():
                self._counts[f] = self._counts.get(f, 0) + c
            self._n_micro += 1
            self._pairs_seen += len(inputs["prompt_id"])  # pairs, or prompt groups
        return (loss, logps) if return_outputs else loss

    def _reset_metrics(self):
        self._sums, self._counts, self._n_micro = {}, {}, 0

    def log(self, logs: dict, start_time: float | None = None) -> None:
        """Adds the interval's mean LPO metrics and, per factor, the share of decisions whose argmax is each bin.

        Every process calls `log` at a logging step, so the cross-process reductions here are collective; the
        micro-batch count is the same on every process (even batches), so they all take the same branch."""
        if self._n_micro:
            acc = self.accelerator
            keys = sorted(self._sums)
            vec = torch.stack([self._sums[k] / self._n_micro for k in keys]).to(acc.device)
            logs.update({k: float(v) for k, v in zip(keys, acc.reduce(vec, reduction="mean").tolist())})
            for f in self.head.factors:
                values = self.head.config.bins(f)
                c = acc.reduce(torch.as_tensor(self._counts[f]).to(acc.device).float(), reduction="sum")
                total = float(c.sum()) or 1.0
                for v, n in zip(values, c.tolist()):
                    logs[f"bins/{f}/{v}"] = n / total
            self._reset_metrics()
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------------------
    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, written under `.staging/` and renamed into place once every rank is done."""
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = False
        acc = self.accelerator
        acc.wait_for_everyone()  # every rank has written its files (RNG state, ZeRO shards) before the rename
        if acc.is_main_process:
            name = f"checkpoint-{self.state.global_step}"
            shutil.rmtree(self.out / name, ignore_errors=True)
            os.replace(self.out / _STAGING / name, self.out / name)
            shutil.rmtree(self.out / _STAGING, ignore_errors=True)
            rotate_checkpoints(str(self.out), save_total_limit=self.args.save_total_limit)
        acc.wait_for_everyone()

    def _get_output_dir(self, trial) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, _STAGING) if self._staging else run_dir

    def _resume_point(self) -> Path | None:
        """The newest checkpoint. The metrics rows logged after it are dropped: they will be logged again (with no
        checkpoint that is every row: a kill can come between a logging step and the first save)."""
        acc = self.accelerator
        found = checkpoints(self.out)
        last = found[-1] if found else None
        step = 0 if last is None else int(_CKPT.match(last.name).group(1))
        acc.wait_for_everyone()
        if acc.is_main_process:
            mpath = self.out / "metrics.jsonl"
            if mpath.exists():
                rows = read_jsonl_log(mpath, redo="the steps after the checkpoint are logged again")
                keep = [r for r in rows if r.get("step", 0) <= step and "final" not in r]
                mpath.write_text("".join(json.dumps(r) + "\n" for r in keep))
        acc.wait_for_everyone()
        if last is None:
            logger.info("resume: no checkpoint in %s, starting fresh", self.out)
            return None
        self.launch.check(last)
        self.history.extend(read_jsonl_log(self.out / "metrics.jsonl"))
        logger.info("resumed from %s at step %d", last, step)
        return last

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Nothing at the start: with push_to_hub, `_finish` publishes the final head and its model card once,
        never the Trainer's checkpoints (optimizer states of the policy wrapper are no use to a Hub user)."""

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Checkpoints stay local (see `init_hf_repo`)."""

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs) -> dict:
        """Run (or, with `resume`, continue) training; returns the summary row written last to metrics.jsonl."""
        args, acc = self.args, self.accelerator
        self.out.mkdir(parents=True, exist_ok=True)
        if acc.is_main_process:  # what this run was asked to do, for sweep reports and humans
            (self.out / "config.json").write_text(json.dumps(args.to_dict(), indent=1, default=str))
        if resume_from_checkpoint is None and args.resume:
            resume_from_checkpoint = self._resume_point()
        t0 = time.time()
        super().train(resume_from_checkpoint=str(resume_from_checkpoint) if resume_from_checkpoint else None, **kwargs)
        summary = self._finish(time.time() - t0)
        self.end()
        return summary

    def _finish(self, wall: float) -> dict:
        acc, head = self.accelerator, self.head
        # all ranks must hold the same head: DDP / ZeRO-2 keep full replicas of the (tiny) parameters
        flat = torch.cat([p.detach().float().flatten() for p in head.parameters()]).to(acc.device)
        weights = (torch.arange(flat.numel(), device=flat.device) % 7 + 1).float()  # order-sensitive
        checks = acc.gather(torch.stack([flat.sum(), flat.abs().sum(), (flat * weights).sum()])[None])
        ranks_agree = bool(torch.allclose(checks, checks[:1].expand_as(checks), rtol=0, atol=1e-6))
        seen = int(acc.gather(torch.tensor([self._pairs_seen], device=acc.device)).sum())
        summary = {"final": True, "step": self.state.global_step, "total_steps": self.state.max_steps,
                   "wall_s": round(wall, 2), "num_processes": acc.num_processes, "pairs": len(self.train_dataset),
                   "pairs_seen_this_session": seen, "ranks_agree": ranks_agree,
                   "rank_checksums": checks[:, 0].tolist()}
        if acc.is_main_process:
            final = copy.deepcopy(head).cpu()
            final.config.selection = "argmax"  # a trained head is for inference
            card = collection_card_facts(self.args.collection_dir) if self.args.collection_dir else {}
            final.save_pretrained(self.out / "head", model_card_kwargs=card)
            hist = task_bin_histograms(final, self.train_dataset)
            (self.out / "bin_histograms.json").write_text(json.dumps(hist, indent=1))
            if self.args.plot:
                plot_training_curves(self.history, self.out / "training_curves.png")
                plot_bin_histograms(hist, self.out / "bin_histograms.png")
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(summary) + "\n")
            summary["bin_histograms"] = hist
        acc.wait_for_everyone()
        if not ranks_agree:
            raise RuntimeError(f"processes ended with different heads: checksums {checks.tolist()}")
        if acc.is_main_process and self.args.push_to_hub:  # last: every local output is written and checked
            summary["hub_commit"] = str(final.push_to_hub(self.args.hub_model_id, model_card_kwargs=card,
                                                          private=self.args.hub_private_repo, token=self.args.hub_token))
        return summary


__all__ = ["LPOConfig", "LPOTrainer", "checkpoints"]  # LPOConfig: its home is lpo/config.py
