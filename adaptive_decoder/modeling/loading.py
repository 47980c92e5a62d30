"""How a base LM loads beyond which one and its dtype: TRL `ModelConfig`'s loading options, checked and turned
into `from_pretrained` arguments, and the part of them a run record holds.

`load_base_model` (adaptive_decoder.modeling.models) takes revision, trust_remote_code, attn_implementation,
device_map and bitsandbytes 4/8-bit loading; `check_load_options` refuses the combinations that cannot work with
one line each, before anything is read; `quantization_config` / `kbit_device_map` build what TRL's
`get_quantization_config` / `get_kbit_device_map` build; `load_identity` is the subset that changes outputs, which
`load_base_model` leaves on the model (`LOAD_IDENTITY_ATTR`) and every run record holds ({} for the defaults).
"""

from __future__ import annotations

import importlib.util

import torch

from ..paths import local_path

QUANT_TYPES = ("nf4", "fp4")
# the attribute `load_base_model` leaves on a model: its `load_identity`, which run records (the collection's
# manifest, via adaptive_decoder.lpo.store.model_identity) take from the model itself
LOAD_IDENTITY_ATTR = "_adaptive_decoder_load"


def load_identity(revision: str | None = None, trust_remote_code: bool = False, attn_implementation: str | None = None,
                  load_in_4bit: bool = False, load_in_8bit: bool = False, bnb_4bit_quant_type: str = "nf4",
                  use_bnb_nested_quant: bool = False) -> dict:
    """The loading options that can change what a loaded model computes, as run records and fingerprints hold them.

    `revision` picks other weights; `attn_implementation` another attention kernel (eager, sdpa, flash attention
    round differently); 4/8-bit loading quantized weights; `trust_remote_code` the repository's own modelling code
    instead of transformers'. Only the options away from their default are listed (one form per setup: {} is every
    option at its default).
    Placement (`device`, `device_map`) is left out, like the device in every fingerprint: it runs the same computation.
    """
    out = {"revision": revision, "trust_remote_code": trust_remote_code or None,
           "attn_implementation": attn_implementation, "load_in_4bit": load_in_4bit or None,
           "load_in_8bit": load_in_8bit or None}
    if load_in_4bit:  # the 4-bit format's options mean nothing without it
        out.update(bnb_4bit_quant_type=None if bnb_4bit_quant_type == "nf4" else bnb_4bit_quant_type,
                   use_bnb_nested_quant=use_bnb_nested_quant or None)
    return {k: v for k, v in out.items() if v is not None}


def check_load_options(name_or_path: str, embedded: bool, gguf: bool, device=None, device_map=None,
                       revision: str | None = None, load_in_4bit: bool = False, load_in_8bit: bool = False,
                       bnb_4bit_quant_type: str = "nf4") -> None:
    """Refuse loading options that cannot apply, each with one line naming the option and the fix.

    `embedded`: the name is one of the embedded models ('smollm2', 'gemma3', adaptive_decoder.modeling.models).
    `gguf`: the weights come from a GGUF file (the embedded models, a local .gguf), which loads
    dequantized to plain float weights, so bitsandbytes quantization cannot be stacked on it. A revision names
    a commit of a Hub repository, so it is refused for embedded names and local paths rather than ignored. 4/8-bit
    loading runs bitsandbytes kernels, which need a CUDA device, and the optional `bitsandbytes` package.
    """
    if load_in_4bit and load_in_8bit:
        raise ValueError("load_in_4bit and load_in_8bit exclude each other; set one of them")
    quant = "load_in_4bit" if load_in_4bit else "load_in_8bit" if load_in_8bit else None
    if bnb_4bit_quant_type not in QUANT_TYPES:
        raise ValueError(f"bnb_4bit_quant_type must be one of {list(QUANT_TYPES)}, got {bnb_4bit_quant_type!r}")
    what = (f"the embedded model {name_or_path!r}" if embedded
            else f"the local path {name_or_path!r}" if local_path(name_or_path) is not None else None)
    if revision is not None and what:
        raise ValueError(f"model_revision {revision!r} names a commit of a Hub repository, not of {what}; "
                         "drop model_revision")
    if quant and gguf:
        raise ValueError(f"{quant} cannot apply to {what or repr(name_or_path)}: GGUF weights load dequantized to float; "
                         f"give an HF id or a safetensors directory, or drop {quant}")
    if device is not None and device_map is not None:
        raise ValueError(f"device {str(device)!r} and device_map {device_map!r} both place the model; give one of them")
    if quant:
        where = device_map if device_map is not None else device
        on_cpu = _placement_type(where) not in (None, "cuda")
        if on_cpu or not torch.cuda.is_available():
            raise ValueError(f"{quant} needs a CUDA device (bitsandbytes kernels), but "
                             f"{f'the model is placed on {where!r}' if on_cpu else 'no CUDA device is available'}; "
                             f"drop {quant} or run on a GPU")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ImportError(f"{quant} needs the bitsandbytes package: pip install 'adaptive-decoder[quant]' "
                              "(or pip install bitsandbytes)")


def _placement_type(where) -> str | None:
    """The device type a `device` or a one-device `device_map` names; None for a map or a strategy ('auto')."""
    if where is None or isinstance(where, dict) or where in ("auto", "balanced", "balanced_low_0", "sequential"):
        return None
    return "cuda" if isinstance(where, int) else torch.device(where).type


def quantization_config(dtype: torch.dtype | None, load_in_4bit: bool = False, load_in_8bit: bool = False,
                        bnb_4bit_quant_type: str = "nf4", use_bnb_nested_quant: bool = False):
    """transformers' BitsAndBytesConfig for 4/8-bit loading (None without either), as TRL's
    `get_quantization_config` builds it: 4-bit computes in the model's `dtype`, so the quantized layers return
    the dtype the rest of the model (and the run's fingerprint) runs in."""
    if not (load_in_4bit or load_in_8bit):
        return None
    from transformers import BitsAndBytesConfig

    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype or torch.float32,
                              bnb_4bit_quant_type=bnb_4bit_quant_type, bnb_4bit_use_double_quant=use_bnb_nested_quant)


def kbit_device_map(device=None) -> dict:
    """Where a 4/8-bit model goes when no device_map is given (TRL's `get_kbit_device_map`): whole, onto one CUDA
    device, `device`'s index or else the current one. bitsandbytes weights cannot be moved after loading
    (`.to()` refuses them), so they are placed while they load."""
    index = torch.device(device).index if device is not None else None
    return {"": index if index is not None else torch.cuda.current_device()}


def check_model_load(model, identity: dict) -> None:
    """Refuse a caller-supplied model not loaded with the config's output-changing loading options (`identity`,
    a `load_identity`): the config's are what the run's fingerprint records. A model that `load_base_model` did
    not load carries none, which reads as all at their default."""
    actual = getattr(model, LOAD_IDENTITY_ATTR, None) or {}
    if actual != identity:
        raise ValueError(f"the given model was loaded with {actual or 'the default options'} but the config's loading "
                         f"options are {identity or 'the defaults'} (they are part of the run's fingerprint); "
                         "load it with load_base_model and the config's options, or match the config to it")
