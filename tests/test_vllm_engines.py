"""Installing adaptive-decoder never changes another model's vLLM engine, under the V1 or the V2 model runner
(`make test-vllm`; adaptive_decoder/integrations/vllm/attach.py says how).

A whole V2 engine cannot start on the CPU build (V2 needs Triton), so the V2 side is tested where vLLM decides
it: its plug-in loaders, and the engine config that it builds before any worker starts.
"""

import os
from importlib.metadata import entry_points
from types import SimpleNamespace

import pytest
import torch

vllm = pytest.importorskip("vllm", reason="vLLM is not installed here; `make test-vllm` builds its own venv")

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from vllm.engine.arg_utils import EngineArgs  # noqa: E402

from adaptive_decoder.integrations.vllm.attach import NO_ROWS, ROW_TRACKER, V2_REFUSAL, require_rows  # noqa: E402
from adaptive_decoder.integrations.vllm.export import export_servable  # noqa: E402
from adaptive_decoder.integrations.vllm.requests import RequestRows  # noqa: E402
from test_vllm_plugin import PROMPTS, generate, hf_model, make_head, stop, tiny_base  # noqa: E402


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    d = tmp_path_factory.mktemp("engines")
    tiny_base(d / "base")
    make_head(d / "head", level="sequence")
    export_servable(d / "base", d / "head", d / "served")
    return d


def engine_config(model_dir, **kw):
    return EngineArgs(model=str(model_dir), skip_tokenizer_init=True, dtype="float32", enforce_eager=True,
                      max_model_len=256, **kw).create_engine_config()


def test_no_processor_is_installed_for_every_engine():
    from vllm.v1.sample.logits_processor import _load_logitsprocs_plugins
    from vllm.v1.worker.gpu.sample.logits_processor.loader import (_load_v2_logitsprocs_plugins,
                                                                    build_custom_logits_processors_params_validator)

    assert not [e for e in entry_points(group="vllm.logits_processors") if e.value.startswith("adaptive_decoder")]
    # the loaders every V2 engine (and, at server start, the V2 frontend) runs: they raised on our V1 class
    assert not [c for c in _load_v2_logitsprocs_plugins() if c.__module__.startswith("adaptive_decoder")]
    build_custom_logits_processors_params_validator(None)(vllm.SamplingParams())
    assert not [c for c in _load_logitsprocs_plugins() if c.__module__.startswith("adaptive_decoder")]


def test_only_our_engines_get_the_row_tracker(dirs, monkeypatch):
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "0")
    assert not engine_config(dirs / "base").model_config.logits_processors
    assert engine_config(dirs / "served").model_config.logits_processors == [ROW_TRACKER]
    # given by the user as well (as a class or by name): attached once
    for given in (RequestRows, ROW_TRACKER):
        procs = engine_config(dirs / "served", logits_processors=[given]).model_config.logits_processors
        assert len(procs) == 1


def test_v2_runner_refuses_a_served_head_in_one_line_and_leaves_other_models_alone(dirs, monkeypatch):
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "1")
    with pytest.raises(Exception, match="VLLM_USE_V2_MODEL_RUNNER=0") as err:
        engine_config(dirs / "served")
    assert V2_REFUSAL in str(err.value)
    try:  # this CPU build cannot run V2 at all (no Triton); whatever vLLM says, it is not about us
        engine_config(dirs / "base")
    except Exception as e:  # noqa: BLE001
        assert "adaptive" not in str(e).lower() and "RequestRows" not in str(e), e


def test_model_load_refuses_without_a_tracker_or_under_v2():
    v1, v2 = SimpleNamespace(use_v2_model_runner=False), SimpleNamespace(use_v2_model_runner=True)
    require_rows(v1, rows=None, needed=False)  # a token-level head needs no tracker
    with pytest.raises(RuntimeError) as err:
        require_rows(v1, rows=None, needed=True)
    assert str(err.value) == NO_ROWS and ROW_TRACKER in NO_ROWS and "\n" not in NO_ROWS
    with pytest.raises(ValueError, match="VLLM_USE_V2_MODEL_RUNNER=0"):
        require_rows(v2, rows=object(), needed=False)


def test_plain_model_starts_and_decodes_greedy_as_hf(dirs, monkeypatch):
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "0")
    llm = vllm.LLM(model=str(dirs / "base"), skip_tokenizer_init=True, dtype="float32", enforce_eager=True, seed=0,
                   max_model_len=256, max_num_seqs=16)
    try:
        assert not llm.llm_engine.vllm_config.model_config.logits_processors
        outs = generate(llm, PROMPTS, vllm.SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True,
                                                          detokenize=False))
    finally:
        stop(llm)
    model = hf_model(dirs / "base")
    for p, out in zip(PROMPTS, outs):
        x = torch.tensor([p])
        ref = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=10,
                             pad_token_id=0, eos_token_id=None)[0, len(p):]
        assert list(out.token_ids) == ref.tolist()
