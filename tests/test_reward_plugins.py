"""Open rewards: a reward spec key may be a registered name (`@register_reward`), an import path or an entry point
of group `adaptive_decoder.rewards`, in the library's convention or TRL's; broken rewards stop with one line
naming them, before anything is written; a reward given by import path and one given by entry point train a head."""

import json
import math
from pathlib import Path

import pytest
import yaml

import adaptive_decoder.rewards as rewards_mod
import reward_plugin_helpers as helpers
from adaptive_decoder.rewards import (
    available_rewards,
    build_reward,
    group_components,
    register_reward,
    reward_options,
    spec_needs_group,
)

ROOT = Path(__file__).resolve().parents[1]
H = "reward_plugin_helpers"  # tests/ is on sys.path, so the helper module imports by this name
FINITE = "(or declare allow_nonfinite: true to keep them and leave those samples out of the pairs)"


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry, so that names registered by a test do not outlive it."""
    from adaptive_decoder.rewards import registry as reg

    monkeypatch.setattr(reg, "REWARDS", dict(reg.REWARDS))
    return reg.REWARDS


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """An installed distribution 'fake-rewards' (a .dist-info folder on sys.path) with entry points in the group."""
    site = tmp_path / "site"
    dist = site / "fake_rewards-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-rewards\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[adaptive_decoder.rewards]\nchar_variety = {H}:char_variety\n"
                                           f"length = {H}:LengthScore\nbroken = {H}:no_such_function\n")
    monkeypatch.syspath_prepend(str(site))
    return dist


EXAMPLES = [{"id": "0", "prompt": "What is 2+2?", "answer": "#### 4"}, {"id": "1", "prompt": "What is 3+3?", "answer": "#### 6"}]


# ------------------------------------------------------------------------------------------------ conventions
def test_import_path_to_a_function_with_a_fixed_option():
    r = build_reward({f"{H}:keyword_bonus": {"keyword": "cat", "weight": 2.0}, "repetition": {"weight": 0.0}})
    comps = r.score_components(["a cat", "a dog"], [{"prompt": "p"}] * 2)
    assert comps[f"{H}:keyword_bonus"] == [1.0, 0.0] and comps["total"] == [2.0, 0.0]
    assert reward_options(f"{H}:keyword_bonus") is None  # **kwargs: TRL passes every column, so any option is taken


def test_trl_function_receives_completions_prompts_and_every_example_field():
    helpers.CALLS.clear()
    r = build_reward({f"{H}:trl_style": {}})
    assert r.score(["4", "7"], EXAMPLES) == [1.0, 0.0]
    assert helpers.CALLS == [{"completions": ["4", "7"], "prompts": ["What is 2+2?", "What is 3+3?"],
                              "answer": ["#### 4", "#### 6"], "kwargs": {"id": ["0", "1"]}}]


def test_function_without_kwargs_receives_only_what_it_names():
    r = build_reward({f"{H}:named_only": {}})
    assert r.score(["#### 4", "no"], EXAMPLES) == [1.0, 0.0]
    with pytest.raises(ValueError) as e:
        r.score(["x"], [{"id": "0", "prompt": "p"}])
    assert str(e.value) == f"reward '{H}:named_only' needs the field 'answer' in every example; got fields ['id', 'prompt']"


def test_classes_of_both_conventions_take_their_options_in_the_constructor():
    r = build_reward({f"{H}:LengthScore": {"scale": 0.5}, f"{H}:CallableBonus": {"bonus": 2.0, "weight": 0.5}})
    comps = r.score_components(["abcd", "one two three"], [{}, {}])
    assert comps[f"{H}:LengthScore"] == [2.0, 6.5] and comps[f"{H}:CallableBonus"] == [2.0, 6.0]
    with pytest.raises(ValueError) as e:
        build_reward({f"{H}:LengthScore": {"scal": 2}})
    assert str(e.value) == (f"unknown key(s) ['scal'] for reward '{H}:LengthScore'; "
                            "valid: ['weight', 'scale', 'needs_group', 'allow_nonfinite']")


def test_register_reward_decorator_shares_the_builtins_registry(registry):
    @register_reward("vowels")
    def vowels(completions, **kwargs):
        return [float(sum(ch in "aeiou" for ch in c)) for c in completions]

    register_reward("length")(helpers.LengthScore)
    assert registry["gsm8k"] is rewards_mod.GSM8KCorrectness and {"vowels", "length"} <= set(available_rewards())
    r = build_reward({"vowels": {}, "length": {"scale": 2.0}})
    assert r.score_components(["banana"], [{}]) == {"vowels": [3.0], "length": [12.0], "total": [15.0]}
    register_reward("vowels")(vowels)  # the same object again (a module imported twice): a no-op
    with pytest.raises(ValueError) as e:
        register_reward("gsm8k")(helpers.keyword_bonus)
    assert str(e.value) == (f"reward name 'gsm8k' is already registered to adaptive_decoder.rewards.metrics.GSM8KCorrectness; "
                            f"register {H}.keyword_bonus under another name")
    with pytest.raises(ValueError) as e:
        register_reward("my.mod:f")
    assert str(e.value) == "reward name must be a non-empty string without ':' (':' marks an import path), got 'my.mod:f'"


def test_entry_point_rewards_load_by_name(fake_distribution):
    assert {"char_variety", "length", "broken"} <= set(available_rewards())
    r = build_reward({"char_variety": {}, "length": {"scale": 0.5}})
    assert r.score_components(["aab"], [{}]) == {"char_variety": [pytest.approx(2 / 3)], "length": [1.5],
                                                  "total": [pytest.approx(2 / 3 + 1.5)]}
    with pytest.raises(ValueError) as e:
        build_reward({"broken": {}})
    assert str(e.value) == (f"reward 'broken': its entry point '{H}:no_such_function' (group adaptive_decoder.rewards) "
                            f"does not load: module '{H}' has no attribute 'no_such_function'")
    with pytest.raises(ValueError) as e:
        build_reward({"no_such_reward": {}})
    assert str(e.value) == (f"unknown reward name(s) ['no_such_reward']; valid: {available_rewards()} (or an import "
                            "path 'module:attribute')")
    assert "char_variety" in str(e.value)


def test_a_group_reward_declares_it_by_attribute_or_option():
    r = build_reward({f"{H}:first_word_unique": {}, f"{H}:keyword_bonus": {}})
    assert group_components(r) == [f"{H}:first_word_unique"]
    exs = [{"id": "a"}] * 3 + [{"id": "b"}] * 2
    assert r.score_components(["x 4", "x y", "z", "x", "z"], exs)[f"{H}:first_word_unique"] == [0, 0, 1, 1, 1]
    assert group_components(build_reward({f"{H}:keyword_bonus": {"needs_group": True}})) == [f"{H}:keyword_bonus"]
    assert spec_needs_group(f"{H}:first_word_unique", {}) and spec_needs_group("novelty", None)
    assert not spec_needs_group(f"{H}:first_word_unique", {"needs_group": False}) and not spec_needs_group("chrf", {})
    with pytest.raises(ValueError) as e:
        build_reward({f"{H}:keyword_bonus": {"needs_group": "yes"}})
    assert str(e.value) == f"reward '{H}:keyword_bonus': needs_group must be true or false, got 'yes'"


# ------------------------------------------------------------------------------------------------ one-line errors
@pytest.mark.parametrize("key,kind,message", [
    ("no_such_module_xyz:fn", ValueError, "reward 'no_such_module_xyz:fn': cannot import 'no_such_module_xyz' (No module "
     "named 'no_such_module_xyz'); install it or add its directory to PYTHONPATH"),
    (f"{H}:nope", ValueError, f"reward '{H}:nope': module '{H}' has no attribute 'nope'; check the name after ':'"),
    (f"{H}:NOT_CALLABLE", TypeError, f"reward '{H}:NOT_CALLABLE': int 42 is not callable; name a reward class, a "
     "reward function or an object with score(completions, examples)"),
    (":fn", ValueError, "reward ':fn': an import path is 'module:attribute', e.g. my_pkg.rewards:keyword_bonus"),
    (f"{H}:no_completions", TypeError, f"reward '{H}:no_completions' takes no 'completions' argument; a reward "
     "function is called as fn(completions=[...], prompts=[...], **example_fields)"),
])
def test_a_bad_import_path_is_one_line_naming_the_reward(key, kind, message):
    with pytest.raises(kind) as e:
        build_reward({key: {}})
    assert str(e.value) == message and "\n" not in message


@pytest.mark.parametrize("fn,kind,message", [
    ("wrong_length", ValueError, "returned 1 scores for 2 completions; it must return one number per completion"),
    ("gives_nan", ValueError, f"returned nan at index 0; scores must be finite {FINITE}"),
    ("gives_inf", ValueError, f"returned inf at index 1; scores must be finite {FINITE}"),
    ("gives_strings", TypeError, "returned a non-number at index 0: 'high' (str); it must return one float per completion"),
    ("gives_none", TypeError, "returned a non-number at index 0: None (NoneType); it must return one float per completion"),
    ("gives_number", TypeError, "returned float, not a list of 2 numbers (one per completion)"),
    ("gives_text", TypeError, "returned str, not a list of 2 numbers (one per completion)"),
])
def test_bad_scores_are_one_line_naming_the_reward(fn, kind, message):
    r = build_reward({"repetition": {}, f"{H}:{fn}": {}})
    with pytest.raises(kind) as e:
        r.score_components(["a b", "c d"], [{"id": "0"}, {"id": "0"}])
    assert str(e.value) == f"reward '{H}:{fn}' {message}"


def test_allow_nonfinite_keeps_nan_for_the_pairs_to_drop():
    comps = build_reward({f"{H}:gives_nan": {"allow_nonfinite": True}}).score_components(["a", "b"], [{}, {}])
    assert math.isnan(comps["total"][0]) and comps["total"][1] == 0.0
    assert rewards_mod.RewardModelScorer.allow_nonfinite  # a reward model may overflow; pairs.py drops and counts


# ------------------------------------------------------------------------------------------------ task files
def _task_file(tmp_path, reward) -> Path:
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"text": t, "answer": t}) + "\n" for t in ("cat", "dog")))
    path = tmp_path / "plugin_task.yaml"
    path.write_text(yaml.safe_dump({"dataset": {"path": "data.jsonl"}, "fields": ["text", "answer"],
                                    "template": "Say {text}", "reward": reward}))
    return path


def test_task_file_rewards_by_import_path_and_entry_point(tmp_path, fake_distribution):
    from adaptive_decoder.tasks import get_task

    task = get_task(str(_task_file(tmp_path, {f"{H}:keyword_bonus": {"keyword": "cat"}, "char_variety": {"weight": 0.0}})))
    samples, _ = task.score(["a cat", "a dog"], task.examples()[0])
    assert [s["reward"] for s in samples] == [1.0, 0.0] and samples[0]["char_variety"] == pytest.approx(4 / 5)


@pytest.mark.parametrize("reward,key,message", [
    ({"nope": {}}, "reward", "unknown reward 'nope'; valid: {valid} (or an import path 'module:attribute')"),
    ({f"{H}:nope": {}}, "reward", f"reward '{H}:nope': module '{H}' has no attribute 'nope'; check the name after ':'"),
    ({f"{H}:LengthScore": {"bogus": 1}}, f"reward.{H}:LengthScore",
     "unknown option(s) ['bogus']; valid: ['weight', 'scale', 'needs_group', 'allow_nonfinite']"),
])
def test_task_file_reward_errors_name_the_file_and_key(tmp_path, fake_distribution, reward, key, message):
    from adaptive_decoder.tasks import TaskFileError, get_task

    path = _task_file(tmp_path, reward)
    with pytest.raises(TaskFileError) as e:
        get_task(str(path))
    assert str(e.value) == f"task file {path}: key {key!r}: " + message.format(valid=available_rewards())


def test_a_task_reward_option_is_checked_when_the_task_is_built(tmp_path):
    """A config's `reward:` for a task fails where the task is built (Experiment / Evaluator construction), before
    a run directory or a model exists."""
    from adaptive_decoder.experiment.config import ExperimentConfig
    from adaptive_decoder.experiment.pipeline import Experiment
    from adaptive_decoder.tasks import get_task

    with pytest.raises(ValueError) as e:
        get_task("gsm8k", reward={f"{H}:nope": {}})
    assert str(e.value) == (f"task 'gsm8k', option 'reward': reward '{H}:nope': module '{H}' has no attribute 'nope'; "
                            "check the name after ':'")
    assert get_task("gsm8k", reward={f"{H}:keyword_bonus": {}}).reward_spec == {f"{H}:keyword_bonus": {}}
    cfg = ExperimentConfig(run_dir=str(tmp_path / "run"), tasks={"gsm8k": {"reward": {f"{H}:LengthScore": {"x": 1}}}},
                           num_train=2, num_dev=0, num_test=2, methods=["fixed", "adaptive"])
    with pytest.raises(ValueError, match=r"^task 'gsm8k', option 'reward': unknown key\(s\) \['x'\] for reward"):
        Experiment(cfg)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ collection + training
def test_a_broken_reward_stops_the_collection_before_anything_is_written(tmp_path):
    from adaptive_decoder.lpo.collection import collect
    from adaptive_decoder.lpo.store import CollectionSettings
    from test_collection import make_adm, prompts

    with pytest.raises(ValueError, match=f"^reward '{H}:wrong_length' returned 1 scores for 8 completions"):
        collect(make_adm(), prompts(4), {"arith": build_reward({f"{H}:wrong_length": {}})}, tmp_path / "c",
                CollectionSettings(num_samples=4, max_new_tokens=4, prompts_per_batch=2), progress=False)
    assert not list((tmp_path / "c").glob("shards/*")) and not list((tmp_path / "c").glob("hidden/*"))


@pytest.mark.parametrize("key", [f"{H}:char_variety", "char_variety"], ids=["import_path", "entry_point"])
def test_a_plugin_reward_collects_and_trains_a_head(tmp_path, fake_distribution, key):
    from adaptive_decoder.lpo.collection import collect
    from adaptive_decoder.lpo.data import build_head_and_dataset
    from adaptive_decoder.lpo.store import CollectionSettings, read_collection
    from adaptive_decoder.lpo.trainer import LPOConfig, LPOTrainer
    from test_collection import make_adm, prompts

    adm = make_adm()
    out = tmp_path / "collection"
    settings = CollectionSettings(num_samples=4, max_new_tokens=6, epsilon=0.3, prompts_per_batch=3)
    collect(adm, prompts(6), {"arith": build_reward({key: {}})}, out, settings, progress=False)
    _, recs = read_collection(out)
    assert len(recs) == 24 and all(r["rewards"][key] == r["rewards"]["total"] for r in recs)
    tiny = yaml.safe_load((ROOT / "configs" / "lpo" / "train_tiny.yaml").read_text())
    cfg = LPOConfig(**{**tiny, "output_dir": str(tmp_path / "run"), "synthetic_pairs": 0, "collection_dir": str(out),
                       "head": {"num_layers": 2, "intermediate_size": 8}, "max_steps": 3,
                       "per_device_train_batch_size": 2})
    head, data = build_head_and_dataset(cfg)
    assert len(data) > 0
    summary = LPOTrainer(cfg, head, data).train()
    assert summary["step"] == 3 and (tmp_path / "run" / "head" / "model.safetensors").exists()
