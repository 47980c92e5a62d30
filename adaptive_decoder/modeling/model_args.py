"""`ModelArguments`: the base LM a run uses, declared once for every recipe config (TRL's `ModelConfig` role).

The evaluation suite, the experiment, the collection and both HAG recipes inherit its fields, so each of them
takes the same `model` / `dtype` / `device` / `torch_threads` keys with the same meaning and checks, and loads the
model the same way (`load`). `LPOConfig` keeps an optional `base_model` of its own: an LPO run loads the LM only
to recompute uncached head inputs, in the dtype and with the loading options its collection recorded, on the
device the Trainer runs on (a `TrainingArguments` property), so none of these fields would mean there what they
mean here.

One model, two names: `model` is what runs; `base_model` is the name the collection and HAG recipes (and their
presets, the Slurm scripts and the model presets under configs/models/) have always written. Both stay valid
keys and flags, without a warning, since the files that write `base_model` are the project's own: a given
`base_model` becomes `model` and keeps its value, so a config reads back as written. Giving both with different
names is refused (a `model` left at its default, "smollm2", cannot be told from one given as "smollm2": it yields).

`dtype` is resolved when the config is built ('auto' becomes the dtype it stands for on this machine, see
`adaptive_decoder.modeling.models.resolve_dtype`), so every fingerprint and resume check holds the dtype that runs.

The loading options carry TRL `ModelConfig`'s names and meaning (`model_revision`, `trust_remote_code`,
`attn_implementation`, `load_in_4bit` / `load_in_8bit`, `bnb_4bit_quant_type`, `use_bnb_nested_quant`), plus
transformers' `device_map`; `load` forwards every one to `from_pretrained`. Impossible combinations are refused
when the config is built, one line each (`adaptive_decoder.modeling.loading.check_load_options`): 4/8-bit without
CUDA or without bitsandbytes (the `quant` extra), both at once, 4/8-bit or a revision for the embedded GGUF
names ('smollm2', 'gemma3'; `trust_remote_code` is accepted there and has no effect), `device` with `device_map`.
The options that change outputs (`load_identity`: revision, remote code, attention kernel, quantization; {} when
all are at their default) are part of every recipe's run record (`adaptive_decoder.storage.record`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_MODEL = "smollm2"
# the fields that say how the LM loads (forwarded to from_pretrained), beside which one, its dtype and device
MODEL_LOAD_FIELDS = ("model_revision", "trust_remote_code", "attn_implementation", "device_map", "load_in_8bit",
                     "load_in_4bit", "bnb_4bit_quant_type", "use_bnb_nested_quant")


@dataclass
class ModelArguments:
    """The base LM: which one, in which dtype, on which device, with how many CPU threads, loaded how."""

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
    model_revision: str | None = field(default=None, metadata={
        "help": "Specific model version to use. It can be a branch name, a tag name, or a commit id (Hub ids only; "
                "default: the repository's default branch)."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Whether to allow for custom models defined on the Hub in their own modeling files. This option should "
                "only be set to `True` for repositories you trust and in which you have read the code, as it will "
                "execute code present on the Hub on your local machine."})
    attn_implementation: str | None = field(default=None, metadata={
        "help": "Which attention implementation to use. You can run `--attn_implementation=flash_attention_2`, in "
                "which case you must install this manually by running `pip install flash-attn --no-build-isolation`. "
                "Default: transformers' choice."})
    device_map: str | None = field(default=None, metadata={
        "help": "transformers' device_map, placing the LM while it loads ('auto', 'balanced', 'sequential', or one "
                "device such as 'cuda:1'): for a model larger than one GPU. Give it or device, not both."})
    load_in_8bit: bool = field(default=False, metadata={
        "help": "Whether to use 8 bit precision for the base model (bitsandbytes: a CUDA device and "
                "pip install 'adaptive-decoder[quant]')."})
    load_in_4bit: bool = field(default=False, metadata={
        "help": "Whether to use 4 bit precision for the base model (bitsandbytes: a CUDA device and "
                "pip install 'adaptive-decoder[quant]'); it computes in dtype."})
    bnb_4bit_quant_type: str = field(default="nf4", metadata={
        "help": "Quantization type of load_in_4bit: nf4 or fp4."})
    use_bnb_nested_quant: bool = field(default=False, metadata={
        "help": "Whether to use nested quantization (load_in_4bit)."})

    def __post_init__(self):
        from .loading import check_load_options
        from .models import EMBEDDED, resolve_dtype_name

        if self.base_model is not None:
            if self.model not in (DEFAULT_MODEL, self.base_model):
                raise ValueError(f"model={self.model!r} and base_model={self.base_model!r} name the same option; give one")
            self.model = self.base_model
        self.dtype = resolve_dtype_name(self.dtype, self.device)  # bad names fail here, before any model loads
        embedded = self.model in EMBEDDED
        check_load_options(self.model, embedded, embedded or self.model.endswith(".gguf"), self.device, self.device_map,
                           self.model_revision, self.load_in_4bit, self.load_in_8bit, self.bnb_4bit_quant_type)

    def load_kwargs(self) -> dict:
        """The loading options as `load_base_model` takes them (all but the model, dtype and device)."""
        return {"revision": self.model_revision, "trust_remote_code": self.trust_remote_code,
                "attn_implementation": self.attn_implementation, "device_map": self.device_map,
                "load_in_4bit": self.load_in_4bit, "load_in_8bit": self.load_in_8bit,
                "bnb_4bit_quant_type": self.bnb_4bit_quant_type, "use_bnb_nested_quant": self.use_bnb_nested_quant}

    def load_identity(self) -> dict:
        """The loading options that change outputs, those set away from their default (empty when none is):
        what the recipes add to their fingerprints (`adaptive_decoder.modeling.loading.load_identity`)."""
        from .loading import load_identity

        kw = self.load_kwargs()
        del kw["device_map"]
        return load_identity(**kw)

    def set_threads(self) -> None:
        """Apply `torch_threads` to this process (nothing when unset)."""
        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)

    def load(self):
        """(model, tokenizer): `adaptive_decoder.modeling.models.load_base_model` with these arguments, on `device` (else
        cuda when there is one; else where it loads, the CPU), or placed by `device_map` when that is given."""
        import torch

        from .models import load_base_model

        device = self.device
        if device is None and self.device_map is None and torch.cuda.is_available():
            device = "cuda"
        return load_base_model(self.model, dtype=self.dtype, device=device, **self.load_kwargs())


__all__ = ["DEFAULT_MODEL", "MODEL_LOAD_FIELDS", "ModelArguments"]
