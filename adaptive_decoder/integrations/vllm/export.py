"""The servable model directory: base weights + a saved head, in a layout vLLM loads as one model.

    python -m adaptive_decoder.integrations.vllm.export --base BASE --head HEAD --out OUT [--copy]

BASE is a local HF model directory (config.json + *.safetensors) or an embedded model name ("smollm2"); HEAD a
directory written by `AdaptiveDecoderHead.save_pretrained`. OUT (new or empty) then holds:
  * the base weights, symlinked (absolute links; `--copy` copies them), or, for an embedded name, written by
    `save_pretrained` in float32 (the GGUF file is not something vLLM reads);
  * the base's other top-level files (tokenizer, chat template) copied;
  * config.json = the base's, with `architectures` renamed to our class (`BASE_ARCHITECTURES`), `model_type`
    renamed to "adaptive_decoder_<base model_type>" (`hf_auto`) and an `adaptive_decoder` entry: the head's
    subdirectory, its level, its whole config (bins, factors, fixed values) and its weights digest;
  * generation_config.json = the base's without its sampling defaults (temperature, top_p, top_k, min_p,
    repetition penalty): vLLM applies those to every request that does not set them, and the head's
    warping must be the only one;
  * adaptive_decoder_head/ = the head directory's files, byte for byte (its digest stays valid).

`export_sampler(model, tokenizer, OUT)` writes the same layout from a loaded HF model with no head
(`head_dir: null`): a model that serves the requests carrying their own values and seed (`per_request`), which is
how the evaluation suite and the collection sample with `backend: vllm`.

In plain transformers, `AutoModelForCausalLM.from_pretrained(OUT)` loads the model with its head once adaptive_decoder
is imported, and is refused by transformers (an unknown model type) otherwise (`hf_auto`); `load_exported(OUT)`
returns the `AdaptiveDecodingModel`. A directory exported by an earlier version (the base's `model_type`) still
loads through `load_exported`, with a warning: transformers alone reads it as the base model without its head.
`export_sampler` keeps the base's `model_type`: it holds no head to lose.

Invariant: `load_served_head(OUT)` returns the exact head that was exported, or raises ValueError /
FileNotFoundError naming what is wrong (a missing or corrupt head, a head whose config no longer matches the one
recorded, a hidden-size mismatch with the base). The vLLM model calls it at engine start, so a bad directory
fails there, before any request. Nothing here imports vLLM.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import torch

from ...modeling.head import AdaptiveDecoderHead
from ...modeling.head_digest import CONFIG_NAME, DIGEST_KEY, WEIGHTS_NAME, recorded_digest
from ...paths import missing_local_dir
from . import BASE_ARCHITECTURES
from .hf_auto import is_served_config, served_model_type

logger = logging.getLogger(__name__)

CONFIG_KEY = "adaptive_decoder"
HEAD_SUBDIR = "adaptive_decoder_head"
# generation_config.json keys vLLM turns into default request sampling values
_SAMPLING_DEFAULTS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty",
                      "frequency_penalty", "do_sample", "typical_p", "epsilon_cutoff", "eta_cutoff")


def _weight_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and (p.suffix == ".safetensors"
                                                              or p.name == "model.safetensors.index.json"))


def _read_json(path: Path, what: str) -> dict:
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path.parent} has no {path.name}: not {what}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"corrupt {path}: {e}") from e
    if not isinstance(d, dict):
        raise ValueError(f"{path} is not a JSON object")
    return d


def export_servable(base, head, out, *, copy: bool = False) -> Path:
    """Write the servable directory `out` (see the module docstring); returns it. Refuses a non-empty `out`."""
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory; give a new --out")
    missing = missing_local_dir(head)
    if missing is not None:
        raise missing
    head_dir = Path(head).expanduser()
    loaded = AdaptiveDecoderHead.from_pretrained(head_dir)  # checks config, weights and digest
    if loaded.config.selection != "argmax":
        logger.warning("head %s was saved with selection=%r; served heads always take the argmax bin",
                       head_dir, loaded.config.selection)

    base_path = Path(str(base)).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    try:
        if base_path.is_dir():
            _link_base(base_path, out, copy)
        elif str(base).startswith(("/", ".", "~")):
            raise FileNotFoundError(f"base model directory not found: {base}")
        else:  # an embedded name (or a Hub id): materialise float32 safetensors
            from ...modeling.models import load_base_model

            model, tok = load_base_model(str(base), dtype=torch.float32)
            model.save_pretrained(out)
            tok.save_pretrained(out)
        cfg = _read_json(out / CONFIG_NAME, "a Hugging Face model directory")
        archs = cfg.get("architectures") or []
        if len(archs) != 1 or archs[0] not in BASE_ARCHITECTURES:
            raise ValueError(f"base architectures {archs} not supported; supported: {sorted(BASE_ARCHITECTURES)}")
        text_cfg = cfg.get("text_config", cfg)
        if text_cfg.get("hidden_size") != loaded.config.hidden_size:
            raise ValueError(f"head {head_dir} has hidden size {loaded.config.hidden_size} but the base model has "
                             f"{text_cfg.get('hidden_size')}")
        if not _weight_files(out):
            raise FileNotFoundError(f"base model {base} has no *.safetensors weights (vLLM needs safetensors here)")
        (out / HEAD_SUBDIR).mkdir()
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            shutil.copyfile(head_dir / name, out / HEAD_SUBDIR / name)
        cfg["architectures"] = [BASE_ARCHITECTURES[archs[0]]]
        cfg["model_type"] = served_model_type(cfg.get("model_type"))
        cfg[CONFIG_KEY] = {"head_dir": HEAD_SUBDIR, "level": loaded.config.level,
                           "head_config": loaded.config.to_dict(),
                           DIGEST_KEY: recorded_digest(head_dir / CONFIG_NAME)}
        _write_configs(out, cfg)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # never leave a half-written directory that looks servable
        raise
    return out


def _write_configs(out: Path, cfg: dict) -> None:
    """config.json as given, and the generation config without its sampling defaults: requests carry neutral values
    and the model warps the logits itself, so a default temperature or top-p there would be applied a second time."""
    (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True))
    gen = out / "generation_config.json"
    if gen.exists():
        g = _read_json(gen, "a generation config")
        gen.write_text(json.dumps({k: v for k, v in g.items() if k not in _SAMPLING_DEFAULTS}, indent=2))


def export_sampler(model, tokenizer, out) -> Path:
    """Write `out` (new or empty) from a loaded HF causal LM in its own dtype: the base weights (safetensors), the
    tokenizer, config.json with our architecture and a head-less `adaptive_decoder` entry, and the generation
    config without sampling defaults. vLLM then serves it with per-request values only (see the module docstring)."""
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    try:
        model.save_pretrained(out)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        cfg = _read_json(out / CONFIG_NAME, "a Hugging Face model directory")
        archs = cfg.get("architectures") or []
        if len(archs) != 1 or archs[0] not in BASE_ARCHITECTURES:
            raise ValueError(f"base architectures {archs} not supported by the vllm backend; supported: "
                             f"{sorted(BASE_ARCHITECTURES)}")
        cfg["architectures"] = [BASE_ARCHITECTURES[archs[0]]]
        cfg[CONFIG_KEY] = {"head_dir": None, "level": None}
        _write_configs(out, cfg)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def _link_base(base: Path, out: Path, copy: bool) -> None:
    if not (base / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{base} has no {CONFIG_NAME}: not a Hugging Face model directory")
    weights = set(_weight_files(base))
    for p in sorted(base.iterdir()):
        if not p.is_file():
            continue  # subdirectories (checkpoints, runs) are not part of the model
        if p in weights and not copy:
            (out / p.name).symlink_to(p.resolve())
        else:
            shutil.copyfile(p, out / p.name)


def served_config(hf_config) -> dict:
    """The `adaptive_decoder` entry of a loaded model config (a transformers config or a dict)."""
    entry = hf_config.get(CONFIG_KEY) if isinstance(hf_config, dict) else getattr(hf_config, CONFIG_KEY, None)
    # head_dir null: a sampler directory (export_sampler)
    if not isinstance(entry, dict) or "head_dir" not in entry or not isinstance(entry["head_dir"], (str, type(None))):
        raise ValueError(f"the model config has no valid '{CONFIG_KEY}' entry: write the model directory with "
                         "`python -m adaptive_decoder.integrations.vllm.export`")
    return entry


def load_served_head(model_dir, hf_config=None) -> AdaptiveDecoderHead | None:
    """The head of the servable directory `model_dir`, in float32 on the CPU, checked against its record; None
    for a directory written by `export_sampler` (no head: its requests bring their own values).

    `hf_config`: the directory's config already loaded (a transformers config or dict); read from disk if None.
    """
    model_dir = Path(model_dir).expanduser()
    if hf_config is None:
        hf_config = _read_json(model_dir / CONFIG_NAME, "a model directory")
    entry = served_config(hf_config)
    if entry["head_dir"] is None:
        return None
    head_dir = model_dir / entry["head_dir"]
    if not head_dir.is_dir():
        raise FileNotFoundError(f"head directory not found: {head_dir} (named by {CONFIG_KEY}.head_dir in "
                                f"{model_dir / CONFIG_NAME})")
    # vLLM builds the model under its own default dtype (e.g. bfloat16): the head must stay float32, as on the HF
    # path, or its bin logits (and so its choices) would be rounded
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with torch.device("cpu"):
            head = AdaptiveDecoderHead.from_pretrained(head_dir)
    finally:
        torch.set_default_dtype(previous)
    if head.config.to_dict() != entry.get("head_config"):
        raise ValueError(f"{head_dir}: the head's config differs from the one recorded in {model_dir / CONFIG_NAME} "
                         "(the head was replaced after export); export again")
    digest = entry.get(DIGEST_KEY)
    if digest is not None and digest != recorded_digest(head_dir / CONFIG_NAME):
        raise ValueError(f"{head_dir}: the head's weights digest differs from the one recorded in "
                         f"{model_dir / CONFIG_NAME} (the head was replaced after export); export again")
    if entry.get("level") != head.config.level:
        raise ValueError(f"{model_dir / CONFIG_NAME}: level {entry.get('level')!r} does not match the head's "
                         f"{head.config.level!r}")
    return head.float().eval()


def load_exported(model_dir, dtype="float32", device=None):
    """The exported directory in transformers, head included: an `AdaptiveDecodingModel` on its base weights.

    Refuses a directory without a head (`export_sampler`'s) instead of returning a model without one. A directory
    exported before the served model types (config.json keeps the base's `model_type`) loads too, with a warning
    naming how to re-export it, since plain transformers reads it as the base model and drops its head.
    """
    from ...modeling.generation import AdaptiveDecodingModel  # noqa: PLC0415  (only when asked for)
    from ...modeling.models import load_base_model  # noqa: PLC0415

    model_dir = Path(model_dir).expanduser()
    cfg = _read_json(model_dir / CONFIG_NAME, "a model directory")
    head = load_served_head(model_dir, cfg)
    if head is None:
        raise ValueError(f"{model_dir} was written by export_sampler and holds no head; export one with --head")
    if not is_served_config(cfg):
        logger.warning("%s has model_type %r: transformers alone loads it without its head; re-export it with "
                       "`adaptive-decoder export --base BASE --head %s --out NEW_DIR`", model_dir,
                       cfg.get("model_type"), model_dir / HEAD_SUBDIR)
    model, tok = load_base_model(str(model_dir), dtype=dtype, device=device)
    return AdaptiveDecodingModel(model, tok, head)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Write a model directory that vLLM serves with an adaptive-decoder head "
                                             "(`vllm serve OUT`, `vllm.LLM(OUT)`).")
    ap.add_argument("--base", required=True, help="base model: a local HF directory with safetensors, or 'smollm2'")
    ap.add_argument("--head", required=True, help="a head directory saved by AdaptiveDecoderHead.save_pretrained")
    ap.add_argument("--out", required=True, help="the directory to write (new or empty)")
    ap.add_argument("--copy", action="store_true", help="copy the base weights instead of symlinking them")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = export_servable(args.base, args.head, args.out, copy=args.copy)
    print(out)


if __name__ == "__main__":
    main()
