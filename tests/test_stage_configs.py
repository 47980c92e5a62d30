"""The experiment's typed stage configs (`adaptive_decoder.experiment.stage_configs`): every shipped experiment config
composes the stage configs recorded in tests/golden, the fields the experiment owns are the ones typed Managed, and
a delta that names a managed or unknown field fails naming it.

tests/golden/experiment_stage_configs.json holds, per shipped YAML (run_dir "RUN", its last seed), the collect
settings, the LPOConfig keyword arguments, the EvalConfig and its fingerprint as the dict-splat pipeline of commit
b9d2da7 built them (dtype left out: `auto` resolves per machine; it is checked against the config's own).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from adaptive_decoder.configs import load_config
from adaptive_decoder.evaluation.config import EvalConfig, fingerprint_v0
from adaptive_decoder.experiment.config import ExperimentConfig
from adaptive_decoder.experiment.stage_configs import check_delta, compose, managed_fields, option
from adaptive_decoder.lpo.config import LPOConfig
from adaptive_decoder.lpo.store import CollectionSettings
from adaptive_decoder.modeling.model_args import MODEL_LOAD_FIELDS
from adaptive_decoder.modeling.noise import NOISE_VERSION

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = json.loads((ROOT / "tests" / "golden" / "experiment_stage_configs.json").read_text())
SHIPPED = sorted((ROOT / "configs" / "experiments").glob("*.yaml")) + sorted(
    (ROOT / "adaptive_decoder" / "cli" / "configs" / "experiment").glob("*.yaml"))


def _jsonable(x):
    return json.loads(json.dumps(x, default=str))


def test_every_config_of_the_golden_file_is_still_shipped():
    # configs added after the golden capture have no old composition to match; test_experiment loads every one
    assert set(GOLDEN) <= {str(p.relative_to(ROOT)) for p in SHIPPED}


@pytest.mark.parametrize("path", [p for p in SHIPPED if str(p.relative_to(ROOT)) in GOLDEN], ids=lambda p: p.name)
def test_shipped_config_composes_the_stage_configs_it_did_before(path):
    want = GOLDEN[str(path.relative_to(ROOT))]
    cfg = ExperimentConfig(**{**load_config(path), "run_dir": "RUN"})
    seed = want["seed"]
    assert seed == cfg.seeds[-1]
    for lv in cfg.levels:
        settings = cfg.stage_config("collect", seed, lv)
        assert isinstance(settings, CollectionSettings)
        assert _jsonable(asdict(settings)) == want["stages"][f"collect-{lv}"]
        lcfg = cfg.stage_config("train", seed, lv)
        old = LPOConfig(**want["stages"][f"train-{lv}"])
        for key in want["stages"][f"train-{lv}"]:  # every option the old pipeline passed, as LPOConfig holds it
            assert getattr(lcfg, key) == getattr(old, key), key
    ecfg = cfg.stage_config("eval", seed)
    assert isinstance(ecfg, EvalConfig) and ecfg.dtype == cfg.dtype
    assert {k: v for k, v in _jsonable(asdict(ecfg)).items() if k != "dtype"} == want["stages"]["eval"]
    # the eval stage's resume record: the golden fingerprint, migrated as a finished run's record is
    # (`fingerprint_v0`: every option at its value), differs only in the noise scheme, which changed on purpose
    # (per-prompt row seeds), so such a run is refused by that name; and in the digests of its tasks' contents, which
    # it did not record (a run of format 1 migrates them as None)
    old_fp = fingerprint_v0(want["stages"]["eval_fingerprint"])
    assert old_fp["noise_scheme"] is None
    now = {k: v for k, v in _jsonable(ecfg.fingerprint()).items() if k != "dtype"}
    assert set(now.pop("task_contents")) == set(ecfg.tasks)
    assert now == {**old_fp, "noise_scheme": NOISE_VERSION}


def test_managed_fields_are_the_ones_the_experiment_sets():
    # every field the experiment sets (or keeps out of a stage delta), written out: a mark dropped from a field fails here
    assert managed_fields(CollectionSettings) == {"seed", "max_new_tokens", "chat", "stop_when_scored", "shard", "backend"}
    assert managed_fields(LPOConfig) == {
        "output_dir", "collection_dir", "head_path", "head", "seed", "resume", "synthetic_pairs", "synthetic_hidden_size",
        "tasks", "base_model", "torch_threads", "progress", "report_to", "overwrite_output_dir", "head_init_seed",
        "push_to_hub", "hub_model_id"}
    assert managed_fields(EvalConfig) == {
        "model", "base_model", "dtype", "device", "torch_threads", "chat", "tasks", "num_prompts", "num_dev_prompts",
        "methods", "temperatures", "head_paths", "output_dir", "seed", "max_new_tokens", "progress", "report_to",
        "skip_missing_heads", "n_bootstrap", "stop_when_scored", "backend", *MODEL_LOAD_FIELDS}


def test_compose_refuses_a_value_for_a_field_not_marked_managed():
    with pytest.raises(TypeError, match=r"CollectionSettings: the experiment sets \['epsilon'\], which are not marked"):
        compose(CollectionSettings, {}, {"seed": 1, "epsilon": 0.5})
    # the layers: the delta, then the derived values, then the managed ones
    s = compose(CollectionSettings, {"epsilon": 0.2, "cache_which": "none"}, {"seed": 3}, {"cache_which": "all"})
    assert (s.epsilon, s.cache_which, s.seed) == (0.2, "all", 3)


@pytest.mark.parametrize("name, cls, opts, match", [
    ("collect", CollectionSettings, {"seed": 1}, r"collect: \['seed'\] are set by the experiment itself"),
    ("eval", EvalConfig, {"attn_implementation": "sdpa"}, r"eval: \['attn_implementation'\] are set by the experiment"),
    ("lpo", LPOConfig, {"betta": 0.2}, r"lpo: unknown key\(s\) \['betta'\]; valid: \["),
])
def test_a_bad_delta_key_fails_in_one_line_naming_it(name, cls, opts, match):
    with pytest.raises(ValueError, match=match) as e:
        check_delta(name, cls, opts)
    assert "\n" not in str(e.value)


def test_stage_configs_follow_the_experiment_options():
    cfg = ExperimentConfig(run_dir="RUN", tasks={"control_qa": {"num_test": 3}, "control_numbers": {}}, num_test=5,
                           num_dev=2, seeds=[4], max_new_tokens=7,
                           head={"factors": ["temperature"], "temperature_bins": [0.1, 0.9]},
                           collect={"num_samples": 3}, lpo={"pair_mode": "all_pairs", "beta": 0.3},
                           eval={"num_samples": 2, "method_options": {"random": {"top_k_bins": [5]}}})
    c = cfg.stage_config("collect", 4, "token")
    assert (c.seed, c.max_new_tokens, c.num_samples, c.cache_which) == (4, 7, 3, "all")  # all_pairs caches every sample
    lc = cfg.stage_config("train", 4, "token")
    assert (lc.output_dir, lc.collection_dir, lc.head_path) == (
        "RUN/seed-4/train-token", "RUN/seed-4/collect-token", "RUN/seed-4/collect-token/collect_head")
    assert (lc.beta, lc.pair_mode, lc.seed, lc.resume) == (0.3, "all_pairs", 4, True)
    e = cfg.stage_config("eval", 4)
    assert (e.num_prompts, e.num_dev_prompts, e.num_samples, e.seed) == (3, 2, 2, 4)  # the smallest task's splits
    assert e.head_paths == ["RUN/seed-4/train-sequence/head", "RUN/seed-4/train-token/head"]
    # random draws from the head's bins (a factor it does not choose: its fixed value); the user's options win
    assert e.method_options["random"] == {"temperature_bins": [0.1, 0.9], "top_p_bins": [1.0], "top_k_bins": [5]}
    assert option(cfg, "eval", "num_samples") == 2 and option(cfg, "lpo", "pair_k") == 2  # the delta, else the default
    with pytest.raises(ValueError, match="stage kind must be one of"):
        cfg.stage_config("aggregate", 4)


def test_the_marks_leave_the_ecosystem_parsers_alone():
    """The marks live in the fields' types (Annotated), which HfArgumentParser / TrlParser read without extras: a
    bare parser of a marked config builds and parses, and the marks survive it."""
    from transformers import HfArgumentParser

    (lcfg,) = HfArgumentParser(LPOConfig).parse_args_into_dataclasses(
        ["--output_dir", "/tmp/unused", "--synthetic_pairs", "2", "--seed", "5"])
    assert (lcfg.seed, lcfg.synthetic_pairs) == (5, 2)
    (ecfg,) = HfArgumentParser(EvalConfig).parse_args_into_dataclasses(["--num_prompts", "3", "--report_to", "none"])
    assert ecfg.num_prompts == 3
    assert {"seed", "synthetic_pairs"} <= managed_fields(LPOConfig) and "num_prompts" in managed_fields(EvalConfig)


def test_the_experiment_backend_reaches_the_collect_and_eval_stages(vllm_importable):
    # mixed_traffic stops its first-line tasks at their first line: the vLLM collection honours that too
    cfg = ExperimentConfig(**{**load_config(ROOT / "configs" / "experiments" / "mixed_traffic.yaml"), "run_dir": "RUN",
                              "backend": "vllm"})
    for lv in cfg.levels:
        c = cfg.stage_config("collect", 0, lv)
        assert (c.backend, c.stop_when_scored, c.identity()["backend"]) == ("vllm", True, "vllm")
    e = cfg.stage_config("eval", 0)
    assert (e.backend, e.fingerprint()["backend"], e.stop_when_scored) == ("vllm", "vllm", True)
    hf = ExperimentConfig(**{**load_config(ROOT / "configs" / "experiments" / "mixed_traffic.yaml"), "run_dir": "RUN"})
    assert hf.backend == "hf" and hf.stage_config("collect", 0, "sequence").backend == "hf"
    assert hf.stage_config("eval", 0).backend == "hf"


@pytest.mark.parametrize("kw, match", [
    ({"backend": "VLLM"}, r"backend must be 'hf' or 'vllm', got 'VLLM'"),
    ({"collect": {"backend": "vllm"}}, r"collect: \['backend'\] are set by the experiment itself"),
    ({"eval": {"backend": "vllm"}}, r"eval: \['backend'\] are set by the experiment itself"),
])
def test_a_bad_backend_fails_in_one_line(kw, match):
    with pytest.raises(ValueError, match=match) as e:
        ExperimentConfig(run_dir="RUN", tasks={"gsm8k": {}}, **kw)
    assert "\n" not in str(e.value)


def test_backend_vllm_without_vllm_names_the_venv_to_run_in(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` meets where vLLM is not installed
    with pytest.raises(ValueError, match=r"backend 'vllm' needs vLLM, .*`make setup-vllm`") as e:
        ExperimentConfig(run_dir="RUN", tasks={"gsm8k": {}}, backend="vllm")
    assert "\n" not in str(e.value)
    assert ExperimentConfig(run_dir="RUN", tasks={"gsm8k": {}}).backend == "hf"  # hf needs no vLLM
