"""The `TrainerCallback`s an LPO run adds to the Trainer's: metrics.jsonl rows, wandb rows under the same names,
plain per-step hooks, and the launch record a resume is checked against (`LPOTrainer` installs them)."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback
from transformers.integrations import WandbCallback
from transformers.trainer_callback import ExportableState


class _MetricsFile(TrainerCallback):
    """Appends each training log row to metrics.jsonl (main process) and keeps them as `history` (every process).

    Also makes the last optimizer step a logging step, so the final metrics row is the end of training."""

    def __init__(self, path: Path, history: list):
        self.path, self.history = path, history

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:  # the Trainer's end-of-training speed summary is not a training step
            return
        row = {"step": state.global_step, **logs}
        self.history.append(row)
        if state.is_world_process_zero:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")


class _WandbMetrics(WandbCallback):
    """The Trainer's wandb callback, logging each training row under metrics.jsonl's names (not `train/...`) at
    wandb step = optimizer step, as metrics.jsonl numbers them: the sweep configs optimise `rewards/accuracies`,
    and the sweep report reads the same names and steps from both sources. The end-of-training speed numbers go
    to the run's summary only, so the history holds training rows alone."""

    def setup(self, args, state, model, **kwargs):
        # project and directory go to wandb.init itself, not through WANDB_PROJECT / WANDB_DIR: wandb reads those
        # into its per-process settings once, so a run started after another wandb run of the same process (an
        # eval suite, a second trainer) would otherwise be written under the first one's directory
        if self._wandb is not None and state.is_world_process_zero and self._wandb.run is None:
            self._wandb.init(project=args.wandb_project, name=args.run_name, dir=args.output_dir)
        super().setup(args, state, model, **kwargs)

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if self._wandb is None or not logs:
            return
        if not self._initialized:
            self.setup(args, state, model)
        if state.is_world_process_zero:
            if "loss" in logs:
                # commit=True: with an explicit step wandb holds a row back until a later step arrives, and the
                # last row of a run has none (it went missing when the process exited under load)
                self._wandb.log(dict(logs), step=state.global_step, commit=True)
            else:
                self._wandb.run.summary.update(logs)

    def on_train_end(self, args, state, control, **kwargs):
        super().on_train_end(args, state, control, **kwargs)
        # the run is over when training is: finish it here, not in the interpreter's exit hook
        if self._wandb is not None and self._wandb.run is not None and state.is_world_process_zero:
            self._wandb.finish()


class _StepHooks(TrainerCallback):
    """Runs plain callables `cb(trainer, step, logs)` once per optimizer step: on a logging step after the row is
    logged (`logs` = that row), else at the step's end (`logs` = None). Raising from one stops training."""

    def __init__(self, trainer, hooks: list):
        self.trainer, self.hooks = trainer, hooks

    def on_step_end(self, args, state, control, **kwargs):
        if not control.should_log:
            for cb in self.hooks:
                cb(self.trainer, state.global_step, None)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            for cb in self.hooks:
                cb(self.trainer, state.global_step, logs)


class _LaunchRecord(TrainerCallback, ExportableState):
    """Saved in each checkpoint's trainer_state.json: the process count and steps per epoch the run used, which
    place every resumed batch; a resume under another launch setup would silently train on other batches."""

    def __init__(self, num_processes: int, steps_per_epoch: int):
        self.num_processes, self.steps_per_epoch = num_processes, steps_per_epoch

    def state(self) -> dict:
        return {"args": {"num_processes": self.num_processes, "steps_per_epoch": self.steps_per_epoch}, "attributes": {}}

    def check(self, ckpt: Path):
        saved = json.loads((ckpt / "trainer_state.json").read_text()).get("stateful_callbacks", {}).get(type(self).__name__)
        if saved and saved["args"] != self.state()["args"]:
            raise ValueError(f"{ckpt} was written by a run with {saved['args']['num_processes']} processes and "
                             f"{saved['args']['steps_per_epoch']} steps/epoch; this run has {self.num_processes} "
                             f"and {self.steps_per_epoch}: resume with the same launch setup and batch size")
