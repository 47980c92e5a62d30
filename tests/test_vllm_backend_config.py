"""The `backend` option of the evaluation suite and the collection, without vLLM: validation, the run's fingerprint
and the collection's identity, and the refusals of a resume (or a decoding model) under another backend. Runs in
the main suite and in `make test-vllm`; the engine itself is tested in tests/test_vllm_backend.py.
"""

import json
import os

import pytest

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, AdaptiveDecodingModel
from adaptive_decoder.integrations.vllm.crn import NOISE_VERSION
from adaptive_decoder.lpo.store import CollectionSettings
from adaptive_decoder.lpo.collection import collect
from adaptive_decoder.tasks.recipe import load_task_prompts
from adaptive_decoder.evaluation.config import EvalConfig
from adaptive_decoder.evaluation.harness import run_evaluation
from adaptive_decoder.rewards import build_reward
from conftest import tiny_llama, tiny_tokenizer


def cfg(model_dir, out, **kw):
    return EvalConfig(**{"model": str(model_dir), "tasks": {"gsm8k": {}}, "num_prompts": 2, "methods": ["greedy"],
                         "num_samples": 1, "max_new_tokens": 3, "n_bootstrap": 20, "report_to": "none", "progress": False,
                         "plots": False, "fluency": False, "torch_threads": 1, "output_dir": str(out), **kw})


def test_eval_backend_is_validated_and_fingerprinted(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="backend must be 'hf' or 'vllm', got 'VLLM'"):
        cfg(tiny_model_dir, tmp_path, backend="VLLM")
    with pytest.raises(ValueError, match="vllm_options .* given with backend 'hf'"):
        cfg(tiny_model_dir, tmp_path, vllm_options={"max_num_seqs": 4})
    assert cfg(tiny_model_dir, tmp_path, backend="vllm", vllm_options='{"kv_cache_gib": 1}').vllm_options == {"kv_cache_gib": 1}
    assert cfg(tiny_model_dir, tmp_path, backend="vllm").fingerprint()["backend"] == "vllm"
    # recorded at its value, the default included (a run_config.json of format 0 is migrated to "hf")
    assert cfg(tiny_model_dir, tmp_path).fingerprint()["backend"] == "hf"


def test_resume_under_another_backend_is_refused_by_name(tiny_model_dir, tmp_path):
    run_evaluation(cfg(tiny_model_dir, tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "run_config.json").read_text())["backend"] == "hf"
    # refused at the resume check, before any model or engine is loaded (so no vLLM is needed here)
    with pytest.raises(ValueError, match=r"different config \(backend differ\)"):
        run_evaluation(cfg(tiny_model_dir, tmp_path / "out", backend="vllm"))


def test_collection_backend_is_in_the_identity_and_must_match_the_model(tmp_path):
    with pytest.raises(ValueError, match="backend must be 'hf' or 'vllm', got 'vllm-cpu'"):
        CollectionSettings(backend="vllm-cpu")
    assert CollectionSettings().identity()["backend"] == "hf"
    assert CollectionSettings(backend="vllm").identity()["backend"] == "vllm"
    # and its draw scheme, whatever the backend: a collection drawn with another one is refused on resume, naming it
    assert CollectionSettings(backend="vllm").identity()["noise_scheme"] == NOISE_VERSION
    model = tiny_llama(vocab_size=259, hidden_size=32)
    head = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=32, num_layers=1, selection="sample"))
    adm = AdaptiveDecodingModel(model, tiny_tokenizer(), head)
    reward = {"repetition": {"n": 1}}
    ps = load_task_prompts("arith", {"task": "arithmetic", "num_prompts": 2, "data_seed": 0, "reward": reward})
    with pytest.raises(ValueError, match="settings.backend is 'vllm' but the decoding model samples with 'hf'"):
        collect(adm, ps, {"arith": build_reward(reward)}, tmp_path / "c", CollectionSettings(num_samples=2, backend="vllm"),
                progress=False)


@pytest.mark.parametrize("gib", [1.5, 0, True])
def test_kv_cache_size_must_be_whole_gib_before_the_engine_starts(gib, monkeypatch):
    """vLLM-CPU reads VLLM_CPU_KVCACHE_SPACE with int(): a fractional size is refused up front, and nothing is set."""
    from adaptive_decoder.integrations.vllm.backend import VLLMEngine

    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    with pytest.raises(ValueError, match="kv_cache_gib must be a whole number of GiB >= 1"):
        VLLMEngine(tiny_llama(), None, kv_cache_gib=gib)
    import os
    assert "VLLM_CPU_KVCACHE_SPACE" not in os.environ


@pytest.fixture
def recording_vllm(monkeypatch):
    """A stand-in `vllm` whose LLM records the KV-cache size each engine is built with (VLLM_CPU_KVCACHE_SPACE,
    the one thing vLLM-CPU sizes it from) and its other engine arguments (`.args`), and builds nothing."""
    import sys
    import types

    class Seen(list):
        args: list

    seen = Seen()
    seen.args = []

    class LLM:
        def __init__(self, **kw):
            seen.append(os.environ.get("VLLM_CPU_KVCACHE_SPACE"))
            seen.args.append(kw)
            self.llm_engine = types.SimpleNamespace(engine_core=types.SimpleNamespace(shutdown=lambda: None))

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = LLM, object
    monkeypatch.setitem(sys.modules, "vllm", fake)
    return seen


def test_each_engine_is_built_with_its_own_kv_cache_size(recording_vllm, monkeypatch):
    """An experiment builds engines one after another in one process (each collect stage's, then the eval stage's
    with its vllm_options): each gets the kv_cache_gib it was given, the default 2 GiB or an exported
    VLLM_CPU_KVCACHE_SPACE where it gives none, and the process's environment is left as it was."""
    from adaptive_decoder.integrations.vllm.backend import VLLMEngine

    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    for gib in (3, 5, None):
        with VLLMEngine(tiny_llama(), None, kv_cache_gib=gib, in_process=False):
            assert "VLLM_CPU_KVCACHE_SPACE" not in os.environ
    assert recording_vllm == ["3", "5", "2"]
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # exported (the Makefile's test-vllm and bench targets)
    for gib in (None, 4):
        VLLMEngine(tiny_llama(), None, kv_cache_gib=gib, in_process=False).close()
    assert recording_vllm[3:] == ["1", "4"] and os.environ["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_collection_engine_is_built_with_its_vllm_options(recording_vllm, monkeypatch):
    """A collection's engine is sized by its settings' vllm_options (a model with a long context needs
    max_model_len, a GPU its own cache), with max_num_seqs defaulting to a batch's rows; outside backend 'vllm' the
    options are refused by name, and text from the command line is read as a mapping."""
    from adaptive_decoder.lpo.collection import sampling_model

    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    with pytest.raises(ValueError, match="vllm_options .* given with backend 'hf'"):
        CollectionSettings(vllm_options={"max_num_seqs": 4})
    model = tiny_llama(vocab_size=259, hidden_size=32)
    head = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=32, num_layers=1, selection="sample"))
    base = {"backend": "vllm", "num_samples": 4, "prompts_per_batch": 2, "twins": 3}
    # in_process: False keeps the stand-in out of vLLM's in-process engine machinery (its `envs` module)
    runs = [CollectionSettings(**base, vllm_options={"in_process": False}),
            CollectionSettings(**base, vllm_options='{"in_process": false, "kv_cache_gib": 3, "max_model_len": 96}'),
            CollectionSettings(**base, vllm_options={"in_process": False, "max_num_seqs": 5})]
    for settings in runs:
        with sampling_model(model, tiny_tokenizer(), head, settings) as adm:
            assert adm.backend == "vllm"
    assert recording_vllm == ["2", "3", "2"]
    assert [a["max_num_seqs"] for a in recording_vllm.args] == [2 * 4 * 3, 2 * 4 * 3, 5]
    assert recording_vllm.args[1]["max_model_len"] == 96
    # the engine's options size it and are not the collection's identity: a resume may size it otherwise
    assert runs[1].identity() == runs[0].identity()


def test_an_experiments_collect_stage_passes_its_vllm_options_and_resumes_under_others(vllm_importable, monkeypatch):
    """collect.vllm_options reach the collect stage's settings, and the stage's fingerprint leaves them out (as the
    eval stage's and the collection's identity do): a finished collection resumes with its engine sized otherwise."""
    from pathlib import Path
    from types import SimpleNamespace

    from adaptive_decoder import ExperimentConfig
    from adaptive_decoder.experiment import pipeline
    from adaptive_decoder.experiment.pipeline import Experiment

    monkeypatch.setattr(pipeline, "task_digest", lambda task: "digest")  # the stub task below has no contents
    fps = []
    for delta in ({"epsilon": 0.2}, {"epsilon": 0.2, "vllm_options": {"kv_cache_gib": 4, "max_model_len": 512}}):
        cfg = ExperimentConfig(run_dir="x", model="org/x", device="cpu", tasks={"gsm8k": {}}, backend="vllm",
                               collect=delta)
        exp = object.__new__(Experiment)  # the fingerprints need no tasks' data and no model
        exp.cfg, exp.root, exp.tasks = cfg, Path("x"), {"gsm8k": SimpleNamespace(reward_spec={})}
        exp.splits = {"gsm8k": {"train": [], "dev": [{}], "test": [{}]}}
        fps.append(exp._collect_fingerprint(0, "sequence"))
    assert cfg.stage_config("collect", 0, "sequence").vllm_options == {"kv_cache_gib": 4, "max_model_len": 512}
    assert fps[0] == fps[1] and fps[0]["collect"] == {"epsilon": 0.2}
