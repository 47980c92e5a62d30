"""The exported directory in plain transformers: a model type of its own, registered with the Auto classes.

`export.export_servable` writes `model_type` "adaptive_decoder_<base model_type>" (`served_model_type`, e.g.
"adaptive_decoder_llama") into config.json, and importing adaptive_decoder registers each such type with
`AutoConfig` (`register_auto_classes`, run by this package's __init__). So:
  * with the package imported, `AutoModelForCausalLM.from_pretrained(OUT)` returns `AdaptiveDecoder<Base>ForCausalLM`:
    transformers' own <Base>ForCausalLM with the exported head loaded beside it (`adaptive_decoder_head`) and a
    `generate` that decodes with that head;
  * without the package, transformers refuses OUT with its own error naming the model type it does not know, where
    a config saying "llama" made it return the base model and drop the head without a word.
vLLM reads the config through AutoConfig as well, and its `vllm.general_plugins` entry point imports this package
in every vLLM process, so the same registration serves there (vLLM picks the model class by `architectures`).

Each config class is the base's config class under the new model type: the same fields and defaults, so
transformers' and vLLM's model classes read it as the base's. A model class imports transformers' modeling code
(about 1 s), so it is built and registered with `AutoModelForCausalLM` when a config of its type is first read
(`from_dict`, which AutoConfig calls), not at import.

The model:
  * `forward` is the base model's: log-likelihoods (lm-eval's loglikelihood requests) are the base's, which a
    head does not change (it chooses how to sample, not what the model predicts);
  * `generate` decodes through `AdaptiveDecodingModel` with the head. Sampling values the caller passes (lm-eval's
    `--model hf` passes do_sample=False for a greedy task) are dropped, with one warning per distinct set: the
    head chooses them. It returns the sequences tensor (prompt + completion) as HF's generate does. A call that
    already carries `AdaptiveDecodingModel`'s logits processor (an `AdaptiveDecodingModel` over this model) is
    HF's generate unchanged, so a head is applied once;
  * the head is kept off the module tree (as in the vLLM model), so weight loading and `state_dict` see only the
    base weights; `save_pretrained` writes the head into the subdirectory config.json names, as the export did.
Invariant: after the same `torch.manual_seed`, `AutoModelForCausalLM.from_pretrained(OUT).generate(ids, ...)` equals
`export.load_exported(OUT).generate(ids, ...).sequences`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import transformers

logger = logging.getLogger(__name__)

PREFIX = "adaptive_decoder_"
# base model_type -> (transformers config class, transformers model class); the architectures vLLM serves
BASES = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
         "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"), "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM")}
CONFIG_CLASSES: dict[str, type] = {}  # served model_type -> its config class
_MODEL_CLASSES: dict[str, type] = {}  # served model_type -> its model class, once built


def served_model_type(base_model_type: str) -> str:
    """The model_type an export writes for a base of `base_model_type`; ValueError for a base we do not serve."""
    if base_model_type not in BASES:
        raise ValueError(f"base model_type {base_model_type!r} not supported; supported: {sorted(BASES)}")
    return PREFIX + base_model_type


def _from_dict(cls, config_dict, **kwargs):
    """The base config's `from_dict`, after registering this type's model class (see the module docstring)."""
    model_class(cls.model_type)
    return super(CONFIG_CLASSES[cls.model_type], cls).from_dict(config_dict, **kwargs)


for _base, (_name, _) in BASES.items():
    _cls = type(f"AdaptiveDecoder{_name}", (getattr(transformers, _name),), {
        "model_type": PREFIX + _base, "__module__": __name__, "from_dict": classmethod(_from_dict),
        "__doc__": f"transformers' {_name} under model_type {PREFIX + _base!r} (an exported adaptive-decoder directory)"})
    globals()[_cls.__name__] = _cls  # importable by name: vLLM pickles configs to its worker processes
    CONFIG_CLASSES[_cls.model_type] = _cls


def register_auto_classes() -> None:
    """Register every served model type's config class with AutoConfig (idempotent)."""
    from transformers import AutoConfig

    for model_type, cls in CONFIG_CLASSES.items():
        AutoConfig.register(model_type, cls, exist_ok=True)


def model_class(model_type: str) -> type:
    """`AdaptiveDecoder<Base>ForCausalLM` for a served model type, built and registered on first use."""
    if model_type not in _MODEL_CLASSES:
        from transformers import AutoModelForCausalLM

        parent = getattr(transformers, BASES[model_type.removeprefix(PREFIX)][1])
        cls = type(f"AdaptiveDecoder{parent.__name__}", (_WithHead, parent), {
            "config_class": CONFIG_CLASSES[model_type], "__module__": __name__,
            "__doc__": f"transformers' {parent.__name__} whose `generate` decodes with the exported adaptive-decoder "
                       "head (see adaptive_decoder.integrations.vllm.hf_auto)"})
        globals()[cls.__name__] = cls
        _MODEL_CLASSES[model_type] = cls
        AutoModelForCausalLM.register(CONFIG_CLASSES[model_type], cls, exist_ok=True)
    return _MODEL_CLASSES[model_type]


class _Holder:
    """Keeps the head off the nn.Module tree (an attribute of a plain object is not a submodule)."""

    def __init__(self, head):
        self.head = head
        self.warned: set = set()


class _WithHead:
    """What `AdaptiveDecoder<Base>ForCausalLM` adds to transformers' <Base>ForCausalLM (see the module docstring)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        from .export import load_served_head

        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        path = Path(str(pretrained_model_name_or_path)).expanduser()
        if kwargs.get("subfolder"):
            path = path / kwargs["subfolder"]
        if not path.is_dir():
            raise ValueError(f"{pretrained_model_name_or_path}: an exported adaptive-decoder model loads with its head "
                             "from a local directory; download it first (huggingface_hub.snapshot_download)")
        head = load_served_head(path, model.config)
        if head is None:
            raise ValueError(f"{path} names no head (config.json adaptive_decoder.head_dir is null)")
        model._adaptive_decoder = _Holder(head)
        return model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """The base's files, then the head into the subdirectory config.json names, so the copy loads with it."""
        from .export import served_config

        super().save_pretrained(save_directory, *args, **kwargs)
        if self.adaptive_decoder_head is not None:
            self.adaptive_decoder_head.save_pretrained(Path(save_directory) / served_config(self.config)["head_dir"])

    @property
    def adaptive_decoder_head(self):
        holder = getattr(self, "_adaptive_decoder", None)
        return holder.head if holder is not None else None

    def generate(self, inputs=None, generation_config=None, logits_processor=None, **kwargs):
        from ...modeling.generation import _REFUSED, AdaptiveDecodingModel
        from ...modeling.sampling import SamplingParamsProcessor

        if any(isinstance(p, SamplingParamsProcessor) for p in logits_processor or ()):
            return super().generate(inputs, generation_config, logits_processor, **kwargs)
        if self.adaptive_decoder_head is None:
            raise ValueError(f"{type(self).__name__} has no head: load it with from_pretrained(<exported directory>)")
        if generation_config is not None or kwargs.get("return_dict_in_generate"):
            raise ValueError(f"{type(self).__name__}.generate decodes with its head and returns the sequences: pass "
                             "generate options as keywords, without generation_config / return_dict_in_generate")
        dropped = {k: kwargs.pop(k) for k in list(kwargs) if k in _REFUSED}
        key = tuple(sorted((k, repr(v)) for k, v in dropped.items()))
        if key and key not in self._adaptive_decoder.warned:
            self._adaptive_decoder.warned.add(key)
            logger.warning("%s: sampling values %s are not applied: the adaptive-decoder head chooses temperature / "
                           "top-p / top-k itself", type(self).__name__, dict(sorted(dropped.items())))
        input_ids = kwargs.pop("input_ids", inputs)
        adm = AdaptiveDecodingModel(self, None, self.adaptive_decoder_head)
        return adm.generate(input_ids, kwargs.pop("attention_mask", None), logits_processor=logits_processor,
                            **kwargs).sequences


def is_served_config(config_dict: dict) -> bool:
    """Whether a config.json dict carries one of the served model types (an export of this version)."""
    return str(config_dict.get("model_type", "")).startswith(PREFIX)

