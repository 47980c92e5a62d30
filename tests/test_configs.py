"""Every file under configs/ is loaded and validated against what consumes it; unknown keys fail.

  recipe YAMLs (lpo/, eval/, hag/, experiments/, models/*/) -> the recipe's dataclasses through TrlParser, exactly
      as `python <recipe> --config FILE` parses them (plus the nested task specs of collection configs);
  accelerate/*.yaml -> accelerate's ClusterConfig (the class `accelerate launch --config_file` builds);
  deepspeed/*.json  -> valid JSON with the keys DeepSpeed needs, and a ZeRO section DeepSpeed's own model accepts;
  sweeps/*.yaml     -> the program exists and every parameter is an LPOConfig field;
  tasks/*.yaml      -> a task file (adaptive_decoder.tasks.data_task): its keys, reward and data load, and its
      examples have prompts.
A file that matches no rule fails the test: a new config family must say how it is validated.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from adaptive_decoder.configs import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
ALL = sorted(p for p in CONFIGS.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml", ".json"))


def _recipe_module(rel: str):
    path = REPO / rel
    if not path.exists():
        pytest.skip(f"{rel} has not landed yet: cannot validate its configs")
    name = "recipe_" + path.stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def _lpo():
    from adaptive_decoder.lpo.trainer import LPOConfig

    return (LPOConfig,)


def _collect():
    return (_recipe_module("training/collect.py").CollectConfig,)


def _eval():
    from adaptive_decoder.evaluation.config import EvalConfig

    return (EvalConfig,)


def _hag_build():
    return (_recipe_module("training/build_hag_data.py").BuildHAGConfig,)


def _hag_sft():
    recipe = _recipe_module("training/train_hag.py")
    return (recipe.HAGTrainArguments, recipe._SFTOptions)


def _experiment():
    from adaptive_decoder.experiment.config import ExperimentConfig

    return (ExperimentConfig,)


def recipe_classes(path: Path):
    """The dataclasses a recipe YAML is parsed into, by directory and file name; None if not a recipe config."""
    rel = path.relative_to(CONFIGS)
    family, name = rel.parts[0], path.stem
    if family == "lpo":
        return _collect() if name.startswith("collect") else _lpo() if name.startswith("train") else None
    if family == "eval":
        return _eval()
    if family == "hag":
        return {"build": _hag_build, "sft": _hag_sft, "eval": _eval}[name.split("_")[0]]()
    if family == "experiments":
        return _experiment()
    if family == "models" and len(rel.parts) == 3:
        return {"collect": _collect, "train_lpo": _lpo, "eval": _eval}[name]()
    return None


def parse_recipe(path: Path, classes, tmp_out="/tmp/adaptive-decoder-config-test", extra=()):
    """Parse as `recipe --config path` would; configs documented to take output_dir on the CLI get a dummy one."""
    from adaptive_decoder.configs import parse_recipe_config

    raw = load_config(path)
    extra = list(extra)
    if "output_dir" not in raw and any("output_dir" in c.__dataclass_fields__ for c in classes):
        extra += ["--output_dir", tmp_out]
    return parse_recipe_config(classes, ["--config", str(path), *extra])


RECIPE_FAMILIES = ("lpo", "eval", "hag", "experiments", "models")


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_is_valid(path):
    family = path.relative_to(CONFIGS).parts[0]
    if family in RECIPE_FAMILIES and path.suffix in (".yaml", ".yml"):
        classes = recipe_classes(path)
        assert classes, f"{path}: no recipe known for this file name; add it to recipe_classes()"
        raw = load_config(path)
        override = []
        if raw.get("backend") == "vllm" and importlib.util.find_spec("vllm") is None:
            with pytest.raises(Exception, match="backend 'vllm' needs vLLM"):  # refused in one line outside its venv
                parse_recipe(path, classes)
            override, raw = ["--backend", "hf"], {**raw, "backend": "hf"}  # the rest is checked all the same
        parsed = parse_recipe(path, classes, extra=override)
        for key, value in raw.items():  # what the YAML says is what the recipe gets
            owner = next(o for o in parsed if key in o.__dataclass_fields__)
            got = getattr(owner, key)
            if key == "dtype" and value == "auto":  # resolved when the config is built, by the rule on this CPU's flags
                assert got in ("float32", "bfloat16"), (key, got)
                continue
            scalar = isinstance(value, (int, float, str, bool)) and isinstance(got, (int, float, str, bool))
            if scalar and key not in ("output_dir", "run_dir", "logging_dir"):
                assert got == value or str(got).lower() == str(value).lower(), (key, got, value)
        if classes == _collect():
            from adaptive_decoder.tasks.recipe import COLLECT_KEYS, build_task

            for name, spec in parsed[0].tasks.items():  # every option is one the task knows
                build_task(name, spec, COLLECT_KEYS)
    elif family == "accelerate":
        check_accelerate(path)
    elif family == "deepspeed":
        check_deepspeed(path)
    elif family == "sweeps":
        check_sweep(path)
    elif family == "tasks":
        check_task_file(path)
    elif path.name != "README.md":
        pytest.fail(f"{path}: no validation rule for configs/{family}/ (add one to tests/test_configs.py)")


# ------------------------------------------------------------------------------------------------- accelerate
def check_accelerate(path: Path):
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig.from_yaml_file(str(path))  # unknown keys -> TypeError naming them
    raw = yaml.safe_load(path.read_text())
    assert cfg.num_processes >= 1 and cfg.num_machines >= 1 and cfg.num_processes % cfg.num_machines == 0
    ds = (raw.get("deepspeed_config") or {}).get("deepspeed_config_file")
    if ds:
        assert (REPO / ds).exists(), f"{path}: deepspeed_config_file {ds} does not exist"
    if str(cfg.distributed_type).endswith("MULTI_GPU"):
        assert cfg.use_cpu is False and cfg.num_processes >= 2


# ------------------------------------------------------------------------------------------------- deepspeed
DS_TOP_KEYS = {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping",
               "zero_optimization", "zero_allow_untested_optimizer", "bf16", "fp16", "steps_per_print",
               "wall_clock_breakdown", "optimizer", "scheduler", "activation_checkpointing", "communication_data_type"}


def check_deepspeed(path: Path):
    cfg = json.loads(path.read_text())
    unknown = sorted(set(cfg) - DS_TOP_KEYS)
    assert not unknown, f"{path}: unknown top-level keys {unknown}"
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "zero_optimization"):
        assert key in cfg, f"{path}: missing {key}"
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    zero = DeepSpeedZeroConfig(**cfg["zero_optimization"])  # pydantic: rejects unknown or mistyped ZeRO keys
    assert int(zero.stage) == int(path.stem.replace("zero", "")), f"{path}: file name and ZeRO stage disagree"


# ------------------------------------------------------------------------------------------------- sweeps
def check_sweep(path: Path):
    from adaptive_decoder.lpo.trainer import LPOConfig
    from adaptive_decoder.sweeps.grid import expand_command, load_sweep

    sweep = load_sweep(path)
    assert sweep["program"] == "training/train_lpo.py" and (REPO / sweep["program"]).exists()
    unknown = sorted(set(sweep["parameters"]) - set(LPOConfig.__dataclass_fields__))
    assert not unknown, f"{path}: parameters {unknown} are not LPOConfig fields"
    assert sweep["metric"]["goal"] in ("minimize", "maximize")
    cmd = " ".join(expand_command(sweep, {}))
    for word in cmd.split():  # every config file the command points at exists
        if word.startswith("configs/"):
            assert (REPO / word).exists(), f"{path}: {word} does not exist"


# ------------------------------------------------------------------------------------------------- tasks
def check_task_file(path: Path):
    from adaptive_decoder.tasks import get_task, load_task_spec

    spec = load_task_spec(path)  # TaskFileError naming the file and key
    task = get_task(str(path))
    exs = task.examples()
    assert exs and all(e["prompt"].strip() for e in exs), f"{path}: no prompts"
    assert spec["name"] == path.stem, f"{path}: task: {spec['name']!r} should match the file name"


# ------------------------------------------------------------------------------------------------- unknown keys
def test_unknown_keys_fail_in_every_family(tmp_path):
    from accelerate.commands.config.config_args import ClusterConfig

    # recipe YAML: a misspelt key is named
    bad = tmp_path / "train.yaml"
    bad.write_text((CONFIGS / "lpo" / "train_tiny.yaml").read_text() + "\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        parse_recipe(bad, _lpo())
    bad = tmp_path / "eval.yaml"
    bad.write_text((CONFIGS / "eval" / "tiny.yaml").read_text() + "\nnum_prompt: 3\n")
    with pytest.raises(ValueError, match="num_prompt"):
        parse_recipe(bad, _eval())
    # accelerate
    bad = tmp_path / "acc.yaml"
    bad.write_text((CONFIGS / "accelerate" / "multi_gpu.yaml").read_text() + "\nnum_procesess: 4\n")
    with pytest.raises((TypeError, ValueError), match="num_procesess"):
        ClusterConfig.from_yaml_file(str(bad))
    # deepspeed: top level and inside zero_optimization
    ds = json.loads((CONFIGS / "deepspeed" / "zero3.json").read_text())
    (tmp_path / "zero3.json").write_text(json.dumps({**ds, "zero_optimisation": {}}))
    with pytest.raises(AssertionError, match="zero_optimisation"):
        check_deepspeed(tmp_path / "zero3.json")
    ds["zero_optimization"]["stage3_prefetch_bucket"] = 1
    (tmp_path / "zero3.json").write_text(json.dumps(ds))
    with pytest.raises(Exception, match="stage3_prefetch_bucket"):
        check_deepspeed(tmp_path / "zero3.json")
    # sweep parameter that LPOConfig does not have
    sweep = yaml.safe_load((CONFIGS / "sweeps" / "lpo_tiny_grid.yaml").read_text())
    sweep["parameters"]["bta"] = {"values": [1]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(sweep))
    with pytest.raises(AssertionError, match="bta"):
        check_sweep(tmp_path / "s.yaml")


@pytest.mark.parametrize("args, named", [
    (["--temp", "0.3"], "unknown flag --temp (did you mean '--temperatures'?)"),       # argparse would take the whole grid
    (["--num_prompt", "3"], "unknown flag --num_prompt (did you mean '--num_prompts'?)"),
    (["--temperatures=0.3"], None),                                                      # the full name still works
])
def test_abbreviated_or_unknown_flags_are_refused_with_a_suggestion(args, named):
    from adaptive_decoder.configs import ConfigError, parse_recipe_config

    argv = ["--config", str(CONFIGS / "eval" / "tiny.yaml"), *args]
    if named is None:
        (cfg,) = parse_recipe_config(_eval(), argv)
        assert cfg.temperatures == [0.3]
        return
    with pytest.raises(ConfigError) as e:
        parse_recipe_config(_eval(), argv)
    assert named in str(e.value)


def test_a_yaml_key_typo_is_named_with_the_file_and_a_suggestion(tmp_path):
    from adaptive_decoder.configs import ConfigError, parse_recipe_config

    bad = tmp_path / "c.yaml"
    bad.write_text("num_samples: 2\nprompts_per_bach: 4\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'prompts_per_bach' \(did you mean 'prompts_per_batch'\?\)"):
        parse_recipe_config((_recipe_module("training/collect.py").CollectConfig,), ["--config", str(bad)])
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        parse_recipe_config(_eval(), ["--config", str(tmp_path / "nope.yaml")])


def test_include_reads_the_base_relative_to_the_file_and_keys_replace_whole(tmp_path, monkeypatch):
    from adaptive_decoder.configs import parse_recipe_config

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "base.yaml").write_text(
        "methods: [greedy, fixed, random]\nnum_prompts: 7\nnum_samples: 3\n"
        "method_options: {fixed: {top_p: 0.9}, random: {temperature_bins: [0.5, 1.0]}}\n")
    (tmp_path / "delta.yaml").write_text(
        "include: base/base.yaml\nnum_samples: 5\nmethod_options: {random: {temperature_bins: [0.2, 0.4]}}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "delta2.yaml").write_text("include: ../delta.yaml\nnum_prompts: 9\n")
    monkeypatch.chdir(REPO)  # the include path is relative to the including file, not to the working directory
    (cfg,) = parse_recipe_config(_eval(), ["--config", str(tmp_path / "delta.yaml"), "--num_samples", "6"])
    assert cfg.methods == ["greedy", "fixed", "random"] and cfg.num_prompts == 7  # from the base
    assert cfg.num_samples == 6  # a flag overrides both files
    assert cfg.method_options == {"random": {"temperature_bins": [0.2, 0.4]}}  # a mapping is replaced, not merged
    assert load_config(tmp_path / "sub" / "delta2.yaml") == {  # a chain of includes: the nearest file wins
        "methods": ["greedy", "fixed", "random"], "num_prompts": 9, "num_samples": 5,
        "method_options": {"random": {"temperature_bins": [0.2, 0.4]}}}
    (tmp_path / "typo.yaml").write_text("include: base/base.yaml\nnum_sampels: 5\n")
    with pytest.raises(ValueError, match="typo.yaml: unknown key 'num_sampels'"):
        parse_recipe_config(_eval(), ["--config", str(tmp_path / "typo.yaml")])


def test_a_missing_include_or_an_include_cycle_is_one_clear_line(tmp_path):
    from adaptive_decoder.configs import ConfigError, parse_recipe_config

    a, b, c = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    a.write_text("include: b.yaml\nnum_prompts: 3\n")
    errors = []
    for text, want in [
        (None, f"config file not found: {b} (included by {a})"),
        ("include: c.yaml\n", f"config file not found: {c} (included by {b})"),
        ("include: a.yaml\n", f"include cycle: {a} -> {b} -> {a}"),
        ("include: [a.yaml, c.yaml]\n", f"{b}: include must be the path of one YAML file, got ['a.yaml', 'c.yaml']"),
    ]:
        if text is not None:
            b.write_text(text)
        with pytest.raises(ConfigError) as e:
            parse_recipe_config(_eval(), ["--config", str(a)])
        errors.append(str(e.value))
        assert str(e.value) == want
    assert all("\n" not in m for m in errors)
    c.write_text("include: c.yaml\n")  # a file that includes itself
    with pytest.raises(ConfigError, match=r"^include cycle: .*c.yaml -> .*c.yaml$"):
        load_config(c)


# experiment variant -> (the config it includes, the keys it sets)
DELTAS = {
    "smollm2_cpu_3f.yaml": ("smollm2_cpu.yaml", {"run_dir", "head"}),
    "smollm2_cpu_ende.yaml": ("smollm2_cpu.yaml", {"run_dir", "tasks"}),
    "gemma3_mix.yaml": ("smollm2_mix.yaml", {"model", "run_dir"}),
}


@pytest.mark.parametrize("name", sorted(DELTAS))
def test_experiment_variants_are_their_base_with_only_the_keys_they_set(name):
    import dataclasses

    base, keys = DELTAS[name]
    path = CONFIGS / "experiments" / name
    raw = yaml.safe_load(path.read_text())
    assert raw.pop("include") == base and set(raw) == keys
    (delta,) = parse_recipe(path, _experiment())
    (parent,) = parse_recipe(CONFIGS / "experiments" / base, _experiment())
    changed = {f.name for f in dataclasses.fields(delta) if getattr(delta, f.name) != getattr(parent, f.name)}
    assert changed == keys
    if name == "smollm2_cpu_3f.yaml":
        assert delta.head["factors"] == ["temperature", "top_p", "top_k"] and "fixed" not in delta.head
    if name == "smollm2_cpu_ende.yaml":
        assert delta.tasks["translation"]["dataset"] == "wmt22.en-de"
        assert {**delta.tasks, "translation": None} == {**parent.tasks, "translation": None}
    if name == "gemma3_mix.yaml":
        assert delta.model == "gemma3"


def test_recipe_cli_prints_one_line_and_exits_2_on_a_config_mistake():
    import subprocess

    # timeout: a hang guard; starting Python + torch alone took over 120 s on a loaded 2-core machine
    r = subprocess.run([sys.executable, "training/collect.py", "--config", "configs/lpo/collect_tiny.yaml",
                        "--num_sample", "3"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln.strip() and "wandb" not in ln.lower()]
    assert err == ["collect.py: error: unknown flag --num_sample (did you mean '--num_samples'?); "
                   "flags are never abbreviated"], r.stderr


def test_recipe_help_shows_config_the_usage_examples_and_plain_no_flags():
    import subprocess

    r = subprocess.run([sys.executable, "eval/run_suite.py", "--help"], cwd=REPO, capture_output=True, text=True,
                       timeout=600)  # a hang guard, as above
    assert r.returncode == 0
    assert "--config FILE" in r.stdout and "python eval/run_suite.py --config configs/eval/quick.yaml" in r.stdout
    no_fluency = r.stdout[r.stdout.index("--no_fluency"):].split("\n")[1]
    assert "Set fluency to False." in no_fluency and "default" not in no_fluency


def test_model_presets_cover_both_models_and_every_stage():
    for model in ("llama3.1-8b-instruct", "qwen2.5-7b-instruct"):
        d = CONFIGS / "models" / model
        assert sorted(p.name for p in d.glob("*.yaml")) == ["collect.yaml", "eval.yaml", "train_lpo.yaml"]
        collect = yaml.safe_load((d / "collect.yaml").read_text())
        ev = yaml.safe_load((d / "eval.yaml").read_text())
        assert collect["base_model"] == ev["model"] == yaml.safe_load((d / "train_lpo.yaml").read_text())["base_model"]
        # a reward model scores the open-ended task in both collection and evaluation
        assert any("reward_model" in t["reward"] for t in collect["tasks"].values())
        assert ev["tasks"]["creative_writing"].get("reward_model")
        # ... on the GPU in bf16 (the header's memory budget), with keys the reward model takes
        from adaptive_decoder.rewards import reward_options

        for rm in (t["reward"]["reward_model"] for t in collect["tasks"].values() if "reward_model" in t["reward"]):
            assert rm["device"] == "cuda" and rm["dtype"] == "bfloat16" and set(rm) <= set(reward_options("reward_model"))


def test_the_model_loading_options_parse_from_yaml_and_the_cli(tmp_path):
    """TRL ModelConfig's names reach every recipe config that loads the LM, from a file and from flags."""
    from adaptive_decoder.configs import parse_recipe_config

    path = tmp_path / "eval.yaml"
    path.write_text("model: org/some-lm\nmodel_revision: v1.2\ntrust_remote_code: true\n"
                    "attn_implementation: eager\ndevice_map: auto\n")
    (cfg,) = parse_recipe_config(_eval(), ["--config", str(path), "--output_dir", str(tmp_path / "out")])
    assert (cfg.model_revision, cfg.trust_remote_code, cfg.attn_implementation, cfg.device_map) == (
        "v1.2", True, "eager", "auto")
    flags = ["--model_revision", "v1", "--attn_implementation", "sdpa", "--trust_remote_code", "true"]
    for name, model_key in (("lpo/collect_tiny.yaml", "--base_model"), ("experiments/tiny.yaml", "--model"),
                            ("hag/build_tiny.yaml", "--base_model"), ("hag/sft_tiny.yaml", "--base_model")):
        classes = recipe_classes(CONFIGS / name)
        assert {"model_revision", "load_in_4bit", "load_in_8bit", "device_map"} <= set(classes[0].__dataclass_fields__)
        needs_out = "output_dir" not in load_config(CONFIGS / name) and any("output_dir" in c.__dataclass_fields__
                                                                             for c in classes)
        extra = ["--output_dir", str(tmp_path / "out")] if needs_out else []
        (cfg, *_) = parse_recipe_config(classes, ["--config", str(CONFIGS / name), model_key, "org/some-lm", *flags,
                                                  *extra])
        assert cfg.load_identity() == {"revision": "v1", "attn_implementation": "sdpa", "trust_remote_code": True}
