"""`ModelArguments`: the base LM a run uses, declared once for every recipe config (TRL's `ModelConfig` role).

The evaluation suite, the experiment, the collection and both HAG recipes inherit its fields, so each of them
takes the same `model` / `dtype` / `device` / `torch_threads` keys with the same meaning and checks, and loads the
model the same way (`load`). `LPOConfig` keeps an optional `base_model` of its own: an LPO run loads the LM only
to recompute uncached head inputs, in the dtype its collection recorded, on the device the Trainer runs on (a
`TrainingArguments` property), so none of these fields would mean there what they mean here.

One model, two names: `model` is what runs; `base_model` is the name the collection and HAG recipes (and their
presets, the Slurm scripts and the model presets under configs/models/) have always written. Both stay valid
keys and flags, without a warning, since the files that write `base_model` are the project's own: a given
`base_model` becomes `model` and keeps its value, so a config reads back as written. Giving both with different
names is refused (a `model` left at its default, "smollm2", cannot be told from one given as "smollm2": it yields).

`dtype` is resolved when the config is built ('auto' becomes the dtype it stands for on this machine, see
`adaptive_decoder.modeling.models.resolve_dtype`), so every fingerprint and resume check holds the dtype that runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_MODEL = "smollm2"


@dataclass
class ModelArguments:
    """The base LM: which one, in which dtype, on which device, with how many CPU threads."""

    model: str = field(default=DEFAULT_MODEL, metadata={
        "help": "Base LM: 'smollm2', 'gemma3', an HF id or a local dir."})
    base_model: str | None = field(default=None, metadata={
        "help": "Another name for model (the recipes' historical key); when given, it is the model."})
    dtype: str = field(default="float32", metadata={
        "help": "torch dtype of the base LM: float32, bfloat16, float16 or auto (bfloat16 on a CUDA GPU with bf16 "
                "support or a CPU with native bf16 instructions, else float32; see modeling.models.resolve_dtype). "
                "Resolved when the config is built; the resolved name is what runs and what resumes are checked "
                "against."})
    device: str | None = field(default=None, metadata={
        "help": "Device for the LM (cpu, cuda, cuda:0); default: cuda if available, else cpu."})
    torch_threads: int | None = field(default=None, metadata={
        "help": "torch.set_num_threads for this process (CPU runs); default: torch's choice."})

    def __post_init__(self):
        from .models import resolve_dtype_name

        if self.base_model is not None:
            if self.model not in (DEFAULT_MODEL, self.base_model):
                raise ValueError(f"model={self.model!r} and base_model={self.base_model!r} name the same option; give one")
            self.model = self.base_model
        self.dtype = resolve_dtype_name(self.dtype, self.device)  # bad names fail here, before any model loads

    def set_threads(self) -> None:
        """Apply `torch_threads` to this process (nothing when unset)."""
        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)

    def load(self):
        """(model, tokenizer): `adaptive_decoder.modeling.models.load_base_model` with these arguments, on `device` (else
        cuda when there is one; else where it loads, the CPU)."""
        import torch

        from .models import load_base_model

        device = self.device or ("cuda" if torch.cuda.is_available() else None)
        return load_base_model(self.model, dtype=self.dtype, device=device)


__all__ = ["DEFAULT_MODEL", "ModelArguments"]
