"""Serve a trained `AdaptiveDecoderHead` in stock vLLM, through its plugin system (no fork, no patch).

Mechanism. vLLM's logits-processor interfaces never see hidden states, but a model's
`compute_logits(hidden_states)` does: it receives exactly one final hidden state per sequence being sampled
(vLLM has already selected those rows). So the plugin registers, for each supported base architecture, a
subclass of vLLM's own model class (`model.ARCHITECTURES`, e.g. `AdaptiveDecoderLlamaForCausalLM` from vLLM's
`LlamaForCausalLM`) whose only change is `compute_logits`: it calls the parent, runs the head on the same
hidden states, and returns the logits already warped per row by `adaptive_decoder.modeling.sampling.apply_sampling_params`
(the function our HF path uses: greedy bin -> only the argmax stays finite; top-k / top-p / min-p as -inf masks;
division by the chosen temperature). Requests then sample with temperature 1, top-p 1, top-k off, so vLLM's own
sampler adds nothing, and its default `logprobs_mode="raw_logprobs"` returns log-softmax of these warped logits,
i.e. the log-probabilities of the distribution the token was actually drawn from.

Invariant: with neutral request values, the token distribution at every step is exactly (up to float kernels)
the one `AdaptiveDecodingModel.generate` samples from on the same prefix and the same weights.

Pieces:
  * `export`   - `python -m adaptive_decoder.integrations.vllm.export --base DIR --head HEAD --out OUT` writes a
                 servable model directory (needs no vLLM);
  * `model`    - the model subclasses (imports vLLM);
  * `requests` - the logits processor that maps batch rows to requests: sequence level needs it (one decision
                 per request while vLLM reorders rows), and it warns about non-neutral request values;
  * `attach`   - how an engine of ours, and only such an engine, gets that processor (a per-architecture config
                 hook; never a global entry point, which Model Runner V2 would refuse in every engine);
  * `per_request`, `crn` - requests that carry their own values (forced, or a head by directory) and a seed: the
                 model draws their tokens itself, by inverse CDF with a uniform of (seed, step), so that every method
                 sees the same noise (common random numbers; vLLM's per-request seeds fail on the CPU build);
  * `backend`  - `backend: vllm` of the evaluation suite and the collection: `VLLMEngine` (a head-less export of
                 the loaded HF model, `export.export_sampler`) and `VLLMDecodingModel`, an AdaptiveDecodingModel
                 whose `generate` samples there (imports vLLM);
  * `hf_auto`  - the exported directory's own model type, registered with transformers' AutoConfig when this
                 package is imported (so with adaptive_decoder imported, `AutoModelForCausalLM` loads an exported
                 directory with its head, and without it transformers refuses the directory by name);
  * `register` - the `vllm.general_plugins` entry point (below), loaded by vLLM in every process.
That entry point is declared in setup.py, so `pip install adaptive-decoder[vllm]` is all a server needs.
"""

from __future__ import annotations

from .hf_auto import register_auto_classes

# architecture name in an exported config.json -> the vLLM model class serving it
MODEL_CLASSES = {
    "AdaptiveDecoderLlamaForCausalLM": "adaptive_decoder.integrations.vllm.model:AdaptiveDecoderLlamaForCausalLM",
    "AdaptiveDecoderQwen2ForCausalLM": "adaptive_decoder.integrations.vllm.model:AdaptiveDecoderQwen2ForCausalLM",
    "AdaptiveDecoderQwen3ForCausalLM": "adaptive_decoder.integrations.vllm.model:AdaptiveDecoderQwen3ForCausalLM",
    "AdaptiveDecoderGemma3ForCausalLM": "adaptive_decoder.integrations.vllm.model:AdaptiveDecoderGemma3ForCausalLM",
}
# the base architecture each one extends (what `export` accepts in the base model's config.json)
BASE_ARCHITECTURES = {name.removeprefix("AdaptiveDecoder"): name for name in MODEL_CLASSES}

# every process that imports adaptive_decoder (a vLLM process through `register`'s module) knows the exported types
register_auto_classes()


def register() -> None:
    """The `vllm.general_plugins` entry point: register our architectures lazily (by "module:Class" string, so
    vLLM imports the model module only in the process that builds the model), the config hook that attaches
    the row tracker to their engines (`attach`), and the exported model types with AutoConfig, through which vLLM
    reads config.json (done already by importing this package; repeated so the entry point states it)."""
    from vllm import ModelRegistry

    from .attach import add_config_hooks

    register_auto_classes()

    for arch, target in MODEL_CLASSES.items():
        ModelRegistry.register_model(arch, target)
    add_config_hooks(MODEL_CLASSES)
