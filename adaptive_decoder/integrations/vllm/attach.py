"""How an engine that serves one of our architectures gets its row tracker, and only such an engine.

vLLM loads every class of the `vllm.logits_processors` entry-point group into every engine of the environment,
and Model Runner V2 (vLLM's default wherever Triton is installed, i.e. every CUDA install) refuses a V1-interface
class there at engine start, whatever the model. A global entry point would therefore stop other people's
engines from starting. So the package declares none: `RequestRows` (a V1-interface processor) is attached per
engine instead, through vLLM's own per-engine setting `model_config.logits_processors` (`LLM(...,
logits_processors=[...])`, `vllm serve --logits-processors ...`).

`register()` (the `vllm.general_plugins` entry point, which vLLM runs in every process before it builds an
engine's config) also adds one config hook per architecture of ours to vLLM's per-architecture hook table
(`vllm.model_executor.models.config.MODELS_CONFIG_MAP`, the table vLLM's own models use to adjust the config
they run under). vLLM calls the hook while it builds the config of an engine whose model is one of ours, and
never for any other model. The hook

  * under the V1 runner: adds `ROW_TRACKER` to that engine's `logits_processors`, so `vllm serve OUT` and
    `vllm.LLM(OUT)` work with no flag;
  * under Model Runner V2: refuses the engine with one line naming `VLLM_USE_V2_MODEL_RUNNER=0`. V2 tells its
    processors which request a row belongs to only in `apply`, after `compute_logits` has run, so serving a
    head there needs a V2-interface port that warps in `apply`; V2 needs Triton, which no CPU build has, so such
    a port could not be run here and is refused rather than shipped untested.

Invariant: an engine whose architecture is not one of ours loads no class of this package but the model
registration (a dictionary entry naming our classes by string), and starts and samples exactly as without the
package, under either runner. Where the hook table is missing (another vLLM version), engines of ours fall back
to the explicit setting, and the model says so at load time (`require_rows`).
"""

from __future__ import annotations

ROW_TRACKER = "adaptive_decoder.integrations.vllm.requests:RequestRows"
V2_REFUSAL = ("adaptive-decoder heads are served by vLLM's V1 model runner, and this engine would run Model Runner V2: "
              "start it with VLLM_USE_V2_MODEL_RUNNER=0 (engines of other models are not affected)")
NO_ROWS = ("this adaptive-decoder model needs its row tracker, which this engine did not load: pass "
           f"logits_processors=[{ROW_TRACKER!r}] to vllm.LLM (or `--logits-processors {ROW_TRACKER}` to vllm serve)")


def uses_v2_runner(vllm_config) -> bool:
    return bool(getattr(vllm_config, "use_v2_model_runner", False))


def _names(processors) -> set[str]:
    """FQCN strings of a `logits_processors` list, classes included (vLLM accepts both)."""
    out = set()
    for p in processors or ():
        out.add(p if isinstance(p, str) else f"{p.__module__}:{p.__qualname__}")
    return out


class ServedHeadConfig:
    """The per-architecture hook (vLLM's `VerifyAndUpdateConfig` shape: static methods on a class)."""

    @staticmethod
    def verify_and_update_config(vllm_config) -> None:
        if uses_v2_runner(vllm_config):
            raise ValueError(V2_REFUSAL)
        model_config = vllm_config.model_config
        record_served_bins(model_config.model, model_config.hf_config)
        current = list(model_config.logits_processors or [])
        if ROW_TRACKER not in _names(current):
            model_config.logits_processors = current + [ROW_TRACKER]

    @staticmethod
    def verify_and_update_model_config(model_config) -> None:
        return None


def head_bins(head_config: dict | None) -> dict:
    """factor -> number of bins, for the factors a head (given by its config dict) chooses."""
    if not head_config:
        return {}
    return {f: len(head_config[f"{f}_bins"]) for f in head_config.get("factors", [])}


def record_served_bins(model: str, hf_config) -> None:
    """Let admission check request controls against the bins of the head this process serves (`controls`)."""
    from .controls import SERVED_BINS
    from .export import served_config

    try:
        entry = served_config(hf_config)
    except ValueError:  # not an exported directory: the model refuses it at load, with its own message
        return
    SERVED_BINS[str(model)] = head_bins(entry.get("head_config"))


def add_config_hooks(architectures) -> bool:
    """Put `ServedHeadConfig` in vLLM's per-architecture hook table for each of `architectures`; False where this
    vLLM has no such table (engines then need the explicit setting, see the module docstring)."""
    try:
        from vllm.model_executor.models.config import MODELS_CONFIG_MAP
    except ImportError:
        return False
    for arch in architectures:
        MODELS_CONFIG_MAP[arch] = ServedHeadConfig
    return True


def require_rows(vllm_config, rows, needed: bool) -> None:
    """Refuse, at model load, an engine that cannot serve this model: the V2 runner, or no row tracker where one
    is `needed` (sequence level, or a directory whose requests bring their own values)."""
    if uses_v2_runner(vllm_config):
        raise ValueError(V2_REFUSAL)
    if needed and rows is None:
        raise RuntimeError(NO_ROWS)
