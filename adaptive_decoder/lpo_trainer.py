"""`LPOConfig` + `LPOTrainer`: train ONLY the AdaptiveDecoder head on preference pairs, with `accelerate`.

The base LM is frozen and, when the collection's hidden-state cache covers every sample in a pair, never loaded:
an epoch is a few thousand tiny MLP forward passes. The same loop runs single-process, under
`torchrun`/`accelerate launch` (DDP; gloo on CPU) and with DeepSpeed ZeRO-2, because every distributed detail
(gradient sync, sharded data, optimizer-state sharding, checkpoint files) goes through `Accelerator`.

Why not `trl.DPOTrainer`: its policy is the LM's vocabulary distribution; ours is the head's categorical
distribution over decoding-hyperparameter bins, and a batch is hidden states, not token ids.

Outputs in `output_dir`:
  head/                      final head (`save_pretrained`: config.json + model.safetensors), selection="argmax"
  reference_head/            the frozen initial head (LPO's pi_ref; reloaded on resume)
  checkpoints/step-NNNNNN/   `Accelerator.save_state` (head, optimizer, scheduler, RNG of every rank) + trainer_state.json
  metrics.jsonl              one line per logging step (and a final summary line)
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .configs import as_mapping
from .head import AdaptiveDecoderConfig, AdaptiveDecoderHead
from .lpo import AGGREGATIONS, LOSS_TYPES, NEEDS_RESPONSE_LOGPS, collate_pairs, compute_loss, policy_log_probs
from .lpo_data import SyntheticPairs, build_head_and_dataset
from .lpo_report import plot_bin_histograms, plot_training_curves, task_bin_histograms

logger = logging.getLogger(__name__)

REFERENCES = ("initial", "none")
_CKPT = re.compile(r"^step-(\d+)$")


@dataclass
class LPOConfig:
    """Everything an LPO run needs (TRL style: one dataclass, YAML `--config` + CLI overrides via `TrlParser`)."""

    output_dir: str = field(default=None, metadata={"help": "Run directory: head/, checkpoints/, metrics.jsonl, plots."})
    # --- data ---------------------------------------------------------------------------------------------
    collection_dir: str | None = field(default=None, metadata={"help": "Sample collection made by training/collect.py (preference pairs are built from it)."})
    pair_mode: str = field(default="best_vs_worst", metadata={"help": "best_vs_worst | top_k_vs_bottom_k | all_pairs."})
    pair_k: int = field(default=2, metadata={"help": "k of top_k_vs_bottom_k."})
    pair_eps: float = field(default=1e-6, metadata={"help": "Rewards within eps are a tie: the pair is skipped (and counted)."})
    tasks: list[str] | None = field(default=None, metadata={"help": "Train on these tasks of the collection only (default: all)."})
    use_cache: bool = field(default=True, metadata={"help": "Read head inputs from the collection's hidden-state cache; False = always recompute with the LM."})
    base_model: str | None = field(default=None, metadata={"help": "Base LM to load ONLY when some pair samples are not cached (must be the collection's model)."})
    synthetic_pairs: int = field(default=0, metadata={"help": "Instead of a collection: N synthetic pairs (smoke tests; two tasks that prefer the lowest / highest bin)."})
    synthetic_hidden_size: int = field(default=16, metadata={"help": "Hidden size of the synthetic pairs."})
    # --- head ---------------------------------------------------------------------------------------------
    head_path: str | None = field(default=None, metadata={"help": "Saved head to start from (e.g. the collecting head or a previous round)."})
    head: dict | str | None = field(default_factory=dict, metadata={"help": "Options of a fresh head (num_layers, intermediate_size, dropout; bins/factors/level default to the collection's). A mapping, or YAML/JSON text on the CLI (as `wandb agent` passes it)."})
    head_init_seed: int = field(default=0, metadata={"help": "Seed of a fresh head's initialisation."})
    # --- loss ---------------------------------------------------------------------------------------------
    loss_type: str = field(default="lpo", metadata={"help": f"{LOSS_TYPES}: LPO on the latent choices (separate), the NLL-on-chosen baseline, joint (temperatures as tokens with the LM's response term) or latent (temperature marginalised per token)."})
    beta: float = field(default=0.1, metadata={"help": "LPO strength beta."})
    reference: str = field(default="initial", metadata={"help": f"{REFERENCES}: frozen copy of the initial head as pi_ref, or no reference terms (paper Eq. 10)."})
    token_aggregation: str = field(default="sum", metadata={"help": f"{AGGREGATIONS}: how token-level log-probs combine over the steps of a sample."})
    # --- optimisation -------------------------------------------------------------------------------------
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers.get_scheduler name (constant, linear, cosine, ...)."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Fraction of the steps used for linear warmup."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Pairs per process per micro-batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    num_train_epochs: int = field(default=3, metadata={"help": "Passes over the pairs (ignored when max_steps > 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Total optimizer steps; -1 = num_train_epochs epochs."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping (0 = off; under DeepSpeed the json's gradient_clipping rules)."})
    seed: int = field(default=42, metadata={"help": "Seed of data order and dropout."})
    # --- bookkeeping --------------------------------------------------------------------------------------
    logging_steps: int = field(default=10, metadata={"help": "Log metrics every N optimizer steps."})
    save_steps: int = field(default=100, metadata={"help": "Checkpoint every N optimizer steps (and at the end)."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep this many newest checkpoints."})
    resume: bool = field(default=False, metadata={"help": "Continue from the newest checkpoint in output_dir/checkpoints (fresh start if none)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Allow a fresh (non-resume) run into an output_dir that has checkpoints."})
    report_to: str = field(default="wandb", metadata={"help": "'wandb' (offline unless WANDB_MODE says otherwise) or 'none'. metrics.jsonl is always written."})
    wandb_project: str = field(default="adaptive-decoder", metadata={"help": "wandb project."})
    run_name: str | None = field(default=None, metadata={"help": "wandb run name (default: output_dir's name)."})
    deepspeed: str | None = field(default=None, metadata={"help": "DeepSpeed json (e.g. configs/deepspeed/zero2.json) when launched with torchrun instead of `accelerate launch`."})
    torch_threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads per process (CPU)."})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bar on the main process."})
    plot: bool = field(default=True, metadata={"help": "Write training_curves.png and bin_histograms.png at the end."})

    def __post_init__(self):
        self.head = as_mapping("head", self.head)  # a dict from YAML, text from the CLI or a sweep agent
        if not self.output_dir:
            raise ValueError("output_dir is required")
        if bool(self.collection_dir) == bool(self.synthetic_pairs):
            raise ValueError("give exactly one data source: collection_dir (a collection) or synthetic_pairs > 0")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.synthetic_pairs and self.loss_type in NEEDS_RESPONSE_LOGPS:
            raise ValueError(f"loss_type {self.loss_type!r} needs the LM's token log-probs of real samples: "
                             "synthetic pairs have none (use a collection_dir)")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if self.token_aggregation not in AGGREGATIONS:
            raise ValueError(f"token_aggregation must be one of {AGGREGATIONS}, got {self.token_aggregation!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps <= 0 and self.num_train_epochs < 1:
            raise ValueError("set num_train_epochs >= 1 or max_steps > 0")
        if self.report_to not in ("wandb", "none"):
            raise ValueError(f"report_to must be 'wandb' or 'none', got {self.report_to!r}")
        unknown = sorted(set(self.head) - set(AdaptiveDecoderConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown head options {unknown}; valid: {sorted(AdaptiveDecoderConfig.__dataclass_fields__)}")


# ---------------------------------------------------------------------------------------------------------------
# data
class EpochShuffleSampler(torch.utils.data.Sampler):
    """Shuffles with a generator seeded by (seed, epoch): the order of any epoch is known without replaying the
    RNG, which is what makes a resumed run see exactly the batches an uninterrupted one would."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self):
        return self.n


class _PolicyLogps(nn.Module):
    """The trainable module handed to `accelerator.prepare`: DDP/DeepSpeed see the head's forward through it."""

    def __init__(self, head: AdaptiveDecoderHead, aggregation: str, loss_type: str = "lpo"):
        super().__init__()
        self.head, self.aggregation, self.loss_type = head, aggregation, loss_type

    def forward(self, batch: dict) -> dict:
        return policy_log_probs(self.head, batch, self.loss_type, self.aggregation)


def _argmax_counts(head, batch: dict) -> dict:
    """{factor: LongTensor [n_bins]} argmax-bin counts over the batch's real decisions (chosen + rejected)."""
    with torch.no_grad():
        inputs = torch.cat([batch["chosen_inputs"], batch["rejected_inputs"]])
        picks = head.select(inputs, "argmax")
        mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]]) if inputs.dim() == 3 else None
        out = {}
        for f, idx in picks.items():
            idx = idx[mask] if mask is not None else idx
            out[f] = torch.bincount(idx.flatten(), minlength=len(head.config.bins(f)))
    return out


def make_accelerator(cfg: LPOConfig):
    """An `Accelerator` for the launch at hand: single process, DDP (torchrun / accelerate launch) or DeepSpeed.

    Without a GPU, accelerate only forms a process group when told it runs on CPU (then DDP over gloo), and it
    never starts DeepSpeed in CPU mode; so for DeepSpeed on CPU we keep cpu=False and hand it the gloo backend,
    and DeepSpeed's own CPU accelerator does the rest.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DeepSpeedPlugin, InitProcessGroupKwargs

    use_ds = bool(cfg.deepspeed) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    plugin = DeepSpeedPlugin(hf_ds_config=cfg.deepspeed) if cfg.deepspeed else None
    kw, handlers = {}, []
    if not torch.cuda.is_available():
        if use_ds:
            os.environ.pop("ACCELERATE_USE_CPU", None)
            handlers.append(InitProcessGroupKwargs(backend="gloo"))
        else:
            kw["cpu"] = True
    return Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                       log_with="wandb" if cfg.report_to == "wandb" else None, project_dir=str(cfg.output_dir),
                       deepspeed_plugin=plugin, kwargs_handlers=handlers,
                       dataloader_config=DataLoaderConfiguration(even_batches=True), **kw)


# ---------------------------------------------------------------------------------------------------------------
class LPOTrainer:
    """Train an `AdaptiveDecoderHead` on a dataset of preference pairs (dicts in the `PairDataset` format).

    `callbacks`: callables `cb(trainer, step, logs)` run on every process after each optimizer step (`logs` is
    the metrics dict on logging steps, else None); raising from one stops training (checkpoints stay valid).
    Without an `accelerator` argument the trainer makes its own and `train()` ends it (trackers finished, process
    group destroyed), so a multi-process launch runs one `train()` per process; pass your own accelerator to keep
    using it afterwards (with report_to="wandb" it is ended either way: accelerate's `end_training` is what
    finishes the trackers).
    """

    def __init__(self, config: LPOConfig, head: AdaptiveDecoderHead, train_dataset, callbacks=None, accelerator=None):
        from accelerate.utils import set_seed

        self.config = cfg = config
        if len(train_dataset) == 0:
            raise ValueError("the training set has no preference pairs (all prompts tied / no valid samples?)")
        self.out = Path(cfg.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        self._made_accelerator = accelerator is None  # then train() ends it (see the end of train)
        if accelerator is None:
            accelerator = make_accelerator(cfg)
        self.accelerator = acc = accelerator
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        set_seed(cfg.seed)
        if not cfg.resume and self._checkpoints() and not cfg.overwrite_output_dir:  # every rank: no one hangs
            raise ValueError(f"{self.ckpt_root} already holds checkpoints: pass --resume to continue that run, "
                             "or --overwrite_output_dir to start over")
        acc.wait_for_everyone()
        if not cfg.resume and acc.is_main_process and self.out.exists():
            for stale in ("checkpoints", "metrics.jsonl"):
                p = self.out / stale
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        acc.wait_for_everyone()

        self.level = head.config.level
        # pi_ref = the head as it is now; saved so that a resumed run compares against the same initial head
        self.ref_head = None
        if cfg.loss_type != "nll" and cfg.reference == "initial":
            ref_dir = self.out / "reference_head"
            # every rank looks before any rank writes, so all take the same branch (a rank that looked while
            # the main process was half-way through saving once read a directory with no config.json)
            saved = cfg.resume and (ref_dir / "config.json").exists() and (ref_dir / "model.safetensors").exists()
            acc.wait_for_everyone()
            if saved:
                self.ref_head = AdaptiveDecoderHead.from_pretrained(ref_dir)
            else:
                self.ref_head = copy.deepcopy(head)
                if acc.is_main_process:  # written whole, then renamed: a crash mid-save leaves no half checkpoint
                    tmp = self.out / "reference_head.tmp"
                    shutil.rmtree(tmp, ignore_errors=True)
                    self.ref_head.save_pretrained(tmp)
                    shutil.rmtree(ref_dir, ignore_errors=True)
                    os.replace(tmp, ref_dir)
            acc.wait_for_everyone()
            self.ref_head.requires_grad_(False).eval().to(acc.device)

        self.train_dataset = train_dataset
        self.sampler = EpochShuffleSampler(len(train_dataset), cfg.seed)
        # own generator: starting a DataLoader iterator otherwise draws from the global torch RNG, and a resumed
        # run starts one more iterator than an uninterrupted one did (dropout would then see other numbers)
        loader = torch.utils.data.DataLoader(train_dataset, batch_size=cfg.per_device_train_batch_size,
                                             sampler=self.sampler, collate_fn=collate_pairs,
                                             generator=torch.Generator().manual_seed(cfg.seed))
        policy = _PolicyLogps(head, cfg.token_aggregation, cfg.loss_type)
        optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        # steps per epoch as each process sees them after sharding
        micro_per_epoch = math.ceil(len(train_dataset) / (cfg.per_device_train_batch_size * acc.num_processes))
        self.micro_per_epoch = micro_per_epoch
        # accelerate syncs at the end of the dataloader, so a last partial accumulation still makes a step
        self.steps_per_epoch = math.ceil(micro_per_epoch / cfg.gradient_accumulation_steps)
        self.total_steps = cfg.max_steps if cfg.max_steps > 0 else self.steps_per_epoch * cfg.num_train_epochs
        from transformers import get_scheduler

        # accelerate steps a prepared scheduler num_processes times per optimizer step (it assumes the
        # schedule was written for one process), so give it a schedule in those units
        n_sched = acc.num_processes
        scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer,
                                  num_warmup_steps=int(cfg.warmup_ratio * self.total_steps) * n_sched,
                                  num_training_steps=self.total_steps * n_sched)
        self.policy, self.optimizer, self.loader, self.scheduler = acc.prepare(policy, optimizer, loader, scheduler)
        self.callbacks = list(callbacks or [])
        self.global_step = 0
        self.history: list[dict] = []

    # ------------------------------------------------------------------------------------------------------
    @property
    def head(self) -> AdaptiveDecoderHead:
        return self.accelerator.unwrap_model(self.policy).head

    def _checkpoints(self) -> list[Path]:
        if not self.ckpt_root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.ckpt_root.iterdir() if (m := _CKPT.match(p.name)) and p.is_dir()]
        return [p for _, p in sorted(found)]

    def save_checkpoint(self):
        """Write checkpoints/step-N atomically (temp dir + rename: a kill mid-save never leaves a half checkpoint)."""
        acc = self.accelerator
        final = self.ckpt_root / f"step-{self.global_step:06d}"
        tmp = self.ckpt_root / f".tmp-step-{self.global_step:06d}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()  # every rank has written its files (RNG state, ZeRO shards) before the rename
        if acc.is_main_process:
            state = {"global_step": self.global_step, "steps_per_epoch": self.steps_per_epoch,
                     "total_steps": self.total_steps, "num_processes": acc.num_processes,
                     "config": asdict(self.config)}
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in self._checkpoints()[: -self.config.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def _resume(self):
        ckpts = self._checkpoints()
        if ckpts:
            last = ckpts[-1]
            state = json.loads((last / "trainer_state.json").read_text())
            if state["num_processes"] != self.accelerator.num_processes or state["steps_per_epoch"] != self.steps_per_epoch:
                raise ValueError(f"{last} was written by a run with {state['num_processes']} processes and "
                                 f"{state['steps_per_epoch']} steps/epoch; this run has {self.accelerator.num_processes} "
                                 f"and {self.steps_per_epoch}: resume with the same launch setup and batch size")
            self.accelerator.load_state(str(last))
            self.global_step = int(state["global_step"])
        # keep the metrics of the steps up to the checkpoint, drop those logged after it (they will be redone);
        # with no checkpoint that is every row: a kill can come between a logging step and the first save
        mpath = self.out / "metrics.jsonl"
        if self.accelerator.is_main_process and mpath.exists():
            rows = [json.loads(ln) for ln in mpath.read_text().splitlines() if ln.strip()]
            self.history = [r for r in rows if r.get("step", 0) <= self.global_step and "final" not in r]
            mpath.write_text("".join(json.dumps(r) + "\n" for r in self.history))
        if ckpts:
            logger.info("resumed from %s at step %d", ckpts[-1], self.global_step)
        else:
            logger.info("resume: no checkpoint in %s, starting fresh", self.ckpt_root)

    # ------------------------------------------------------------------------------------------------------
    def _log(self, logs: dict):
        acc = self.accelerator
        self.history.append(logs)
        if acc.is_main_process:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(logs) + "\n")
        if self.config.report_to == "wandb":
            acc.log({k: v for k, v in logs.items() if k != "step"}, step=logs["step"])

    def train(self) -> dict:
        from tqdm.auto import tqdm

        cfg, acc = self.config, self.accelerator
        self.out.mkdir(parents=True, exist_ok=True)
        if acc.is_main_process:  # what this run was asked to do, for sweep reports and humans
            (self.out / "config.json").write_text(json.dumps(asdict(cfg), indent=1, default=str))
        if cfg.report_to == "wandb":
            os.environ.setdefault("WANDB_MODE", "offline")
            acc.init_trackers(cfg.wandb_project, config=asdict(cfg),
                              init_kwargs={"wandb": {"name": cfg.run_name or self.out.name, "dir": str(self.out)}})
        if cfg.resume:
            self._resume()
        bins = {f: self.head.config.bins(f) for f in self.head.factors}
        sums, counts, n_micro = {}, {f: 0 for f in bins}, 0
        t0, samples = time.time(), 0
        bar = tqdm(total=self.total_steps, initial=self.global_step, desc="lpo", unit="step",
                   disable=not (cfg.progress and acc.is_local_main_process))
        self.policy.train()
        try:
            while self.global_step < self.total_steps:
                epoch, done_in_epoch = divmod(self.global_step, self.steps_per_epoch)
                self.sampler.epoch = epoch
                loader = self.loader
                skip = done_in_epoch * cfg.gradient_accumulation_steps
                if skip:
                    loader = acc.skip_first_batches(self.loader, skip)
                for batch in loader:
                    with acc.accumulate(self.policy):
                        logps = self.policy(batch)
                        loss, metrics = compute_loss(self.head, batch, loss_type=cfg.loss_type, beta=cfg.beta,
                                                     ref_head=self.ref_head, aggregation=cfg.token_aggregation,
                                                     policy_logps=logps)
                        acc.backward(loss)
                        if acc.sync_gradients and cfg.max_grad_norm > 0:
                            gn = acc.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                            if gn is not None:
                                metrics["grad_norm"] = torch.as_tensor(gn, dtype=torch.float32).detach()
                        self.optimizer.step()
                        self.scheduler.step()
                        self.optimizer.zero_grad()
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + v.float()
                    for f, c in _argmax_counts(self.head, batch).items():
                        counts[f] = counts[f] + c
                    n_micro += 1
                    samples += batch["chosen_inputs"].shape[0]
                    if not acc.sync_gradients:
                        continue
                    self.global_step += 1
                    bar.update(1)
                    logs = None
                    if self.global_step % cfg.logging_steps == 0 or self.global_step == self.total_steps:
                        logs = self._gather_logs(sums, n_micro, counts, bins, epoch)
                        bar.set_postfix(loss=f"{logs['loss']:.4f}", acc=f"{logs['rewards/accuracies']:.2f}")
                        self._log(logs)
                        sums, counts, n_micro = {}, {f: 0 for f in bins}, 0
                    if self.global_step % cfg.save_steps == 0 and self.global_step < self.total_steps:
                        self.save_checkpoint()
                    for cb in self.callbacks:
                        cb(self, self.global_step, logs)
                    if self.global_step >= self.total_steps:
                        break
        finally:
            bar.close()
        self.save_checkpoint()
        summary = self._finish(time.time() - t0, samples)
        if self._made_accelerator or cfg.report_to == "wandb":
            # finish the trackers and destroy the process group. A gloo group left to interpreter exit can abort a
            # rank (SIGABRT, "terminate called without an active exception") after a run that finished and saved
            # everything, and the launcher then reports the job as failed (pytorch/pytorch#190489).
            acc.end_training()
        return summary

    def _gather_logs(self, sums, n_micro, counts, bins, epoch) -> dict:
        acc = self.accelerator
        keys = sorted(sums)
        vec = torch.stack([sums[k] / max(n_micro, 1) for k in keys]).to(acc.device)
        vec = acc.reduce(vec, reduction="mean")  # every process logs the same numbers
        logs = {"step": self.global_step, "epoch": round(self.global_step / self.steps_per_epoch, 4),
                "learning_rate": self.scheduler.get_last_lr()[0]}
        logs.update({k: float(v) for k, v in zip(keys, vec.tolist())})
        for f, values in bins.items():
            c = acc.reduce(torch.as_tensor(counts[f]).to(acc.device).float(), reduction="sum")
            total = float(c.sum()) or 1.0
            for v, n in zip(values, c.tolist()):
                logs[f"bins/{f}/{v}"] = n / total  # fraction of decisions whose argmax is this bin
        return logs

    def _finish(self, wall: float, samples: int) -> dict:
        acc = self.accelerator
        head = self.head
        # all ranks must hold the same head: DDP / ZeRO-2 keep full replicas of the (tiny) parameters
        flat = torch.cat([p.detach().float().flatten() for p in head.parameters()]).to(acc.device)
        weights = (torch.arange(flat.numel(), device=flat.device) % 7 + 1).float()  # order-sensitive
        checks = acc.gather(torch.stack([flat.sum(), flat.abs().sum(), (flat * weights).sum()])[None])
        ranks_agree = bool(torch.allclose(checks, checks[:1].expand_as(checks), rtol=0, atol=1e-6))
        seen = int(acc.gather(torch.tensor([samples], device=acc.device)).sum())
        summary = {"final": True, "step": self.global_step, "total_steps": self.total_steps, "wall_s": round(wall, 2),
                   "num_processes": acc.num_processes, "pairs": len(self.train_dataset),
                   "pairs_seen_this_session": seen, "ranks_agree": ranks_agree,
                   "rank_checksums": checks[:, 0].tolist()}
        if acc.is_main_process:
            final = copy.deepcopy(head).cpu()
            final.config.selection = "argmax"  # a trained head is for inference
            final.save_pretrained(self.out / "head")
            hist = task_bin_histograms(final, self.train_dataset)
            (self.out / "bin_histograms.json").write_text(json.dumps(hist, indent=1))
            if self.config.plot:
                plot_training_curves(self.history, self.out / "training_curves.png")
                plot_bin_histograms(hist, self.out / "bin_histograms.png")
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(summary) + "\n")
            summary["bin_histograms"] = hist
        acc.wait_for_everyone()
        if not ranks_agree:
            raise RuntimeError(f"processes ended with different heads: checksums {checks.tolist()}")
        return summary


__all__ = ["EpochShuffleSampler", "LPOConfig", "LPOTrainer", "SyntheticPairs", "build_head_and_dataset",
           "plot_bin_histograms", "plot_training_curves", "task_bin_histograms"]
