"""The label-free mixed-traffic benchmark (configs/experiments/mixed_traffic.yaml): its task files load and score
known replies with hand-computed rewards, the distinct-items reward counts by hand, the generated prompt sets
are what their generator writes, and the experiment and headroom configs load and describe the same benchmark."""

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import shared_data

from adaptive_decoder.configs import load_config
from adaptive_decoder.rewards import DistinctItems, build_reward, list_items
from adaptive_decoder.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "configs" / "experiments" / "mixed_traffic.yaml"
HEADROOM = REPO / "configs" / "eval" / "headroom_mixed_traffic.yaml"


# ------------------------------------------------------------------------------------------------------------
# the distinct-items reward
def test_list_items_splits_at_separators_and_drops_list_marks():
    assert list_items("1. Apple\n2. Pear.") == ["apple", "pear"]
    # a gloss after the item is not part of it
    assert list_items("1. Cow (Bovine)\n2. Gold: a soft metal\n3. Oak - a tree\n4. Sea-lion") == ["cow", "gold", "oak",
                                                                                                "sea-lion"]
    assert list_items("- Red;  - dark  Blue\n\n* green!") == ["red", "dark blue", "green"]
    assert list_items("cats, dogs and mice") == ["cats", "dogs", "mice"]
    assert list_items("") == [] and list_items(" ,\n; ") == []


@pytest.mark.parametrize("reply, n, expected", [
    ("apple, banana, pear, plum", 4, 1.0),
    ("apple, banana, apple, the best fruit is a mango", 4, 0.5),    # apple counts once; 6 words is no item
    ("Apple, APPLE, apple.", 3, 1 / 3),                             # case and a final "." ignored: one item
    ("apple, banana, pear, plum, kiwi, fig", 4, 1.0),               # items past the 4th never count
    ("apple, apple, pear, plum, kiwi", 4, 0.75),                    # ... nor make up for a repeat
    ("1. Apple\n2. Pear\n3. Fig", 5, 0.6),                          # too few: 3 of 5
    ("apple 1, banana, pear", 3, 2 / 3),                            # a digit makes "apple 1" no item
    ("1. Cow (Bovine)\n2. Cow: again\n3. Pig", 3, 2 / 3),            # glosses cut: cow, cow, pig
    ("", 3, 0.0),
])
def test_distinct_items_by_hand(reply, n, expected):
    assert DistinctItems(max_words=3).score([reply], [{"n": n}]) == [pytest.approx(expected)]


def test_distinct_items_refuses_bad_input_in_one_line():
    with pytest.raises(ValueError, match="needs the field 'n'"):
        DistinctItems().score(["a"], [{"count": 3}])
    with pytest.raises(ValueError, match="'n' must be an integer >= 1, got 0"):
        DistinctItems().score(["a"], [{"n": 0}])
    with pytest.raises(ValueError, match="max_words must be an integer >= 1"):
        DistinctItems(max_words=0)
    with pytest.raises(ValueError, match="unknown key"):
        build_reward({"distinct_items": {"max_word": 2}})


# ------------------------------------------------------------------------------------------------------------
# the task files
def test_list_items_task_scores_distinct_items_and_novelty_by_hand():
    task = get_task("list_items")
    ex = task.examples()[0]
    assert ex["category"] == "fruits" and ex["n"] == 4
    assert ex["prompt"] == "Name 4 different fruits. Reply with a comma-separated list only."
    s, _ = task.setup_scoring().score(["apple, banana, pear, plum", " apple, banana, pear, plum\n", "apple, kiwi"], ex)
    # distinct_items: 4/4, 4/4, 2/4. novelty (unigrams, whitespace split): the first two replies are equal after
    # the strip filter -> max Jaccard 1 -> 0; "apple, kiwi" shares "apple," with them: 1 / 5 -> 1 - 0.2 = 0.8.
    assert [x["distinct_items"] for x in s] == [1.0, 1.0, 0.5]
    assert [x["novelty"] for x in s] == [0.0, 0.0, pytest.approx(0.8)]
    assert [x["reward"] for x in s] == [1.0, 1.0, pytest.approx(0.5 + 0.5 * 0.8)]


def test_arithmetic_simple_asks_small_sums_with_the_arithmetic_template_and_scores_the_last_number():
    task = get_task("arithmetic_simple")
    exs = task.examples()
    assert len(exs) == 200 and exs[0]["question"] == "14 + 8" and exs[0]["answer"] == "#### 22"
    assert exs[0]["prompt"] == get_task("arithmetic").opts["template"].format(question="14 + 8")
    for e in exs:  # a in [2, 20], b in [2, 9], the answer is the result
        a, op, b = e["question"].split()
        assert 2 <= int(a) <= 20 and 2 <= int(b) <= 9
        assert e["answer"] == f"#### {int(a) + int(b) if op == '+' else int(a) - int(b)}"
    s, _ = task.setup_scoring().score(["22", "14 + 8 = 22.", "23", "22 is wrong, it is 21", "twenty-two"], exs[0])
    assert [x["reward"] for x in s] == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_translation_wmt_short_keeps_4_to_15_words_disjoint_from_copy_text_and_scores_chrf():
    path = str(shared_data("translation/wmt22.en-de.jsonl"))
    task, copy = get_task("translation_wmt_short", path=path), get_task("copy_text", path=path)
    exs = task.examples()
    assert exs and all(4 <= len(e["source"].split()) <= 15 for e in exs)
    assert not {e["source"] for e in exs} & {e["text"] for e in copy.examples()}  # no prompt is in both tasks
    ex = exs[0]
    assert ex["prompt"].endswith("\n\n" + ex["source"].strip())
    s, _ = task.setup_scoring().score([ex["reference"] + "\nNote: done.", "", ex["reference"]], ex)
    assert [x["reward"] for x in s] == [pytest.approx(1.0), 0.0, pytest.approx(1.0)]  # chrF of the first line


def test_shipped_prompt_sets_are_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("make_mixed_traffic_data", REPO / "eval" / "make_mixed_traffic_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, recs in (("list_items.jsonl", mod.records()), ("arithmetic_simple.jsonl", mod.arithmetic_records())):
        shipped = (mod.OUT / name).read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in shipped] == recs, name
    cats = [r["category"] for r in mod.records()]
    assert len(set(cats)) == len(cats) and {r["n"] for r in mod.records()} == {3, 4, 5}


# ------------------------------------------------------------------------------------------------------------
# the configs
def test_experiment_config_is_a_mix_of_six_task_types_with_the_label_free_baselines():
    from adaptive_decoder.experiment.config import ExperimentConfig

    cfg = ExperimentConfig(**load_config(EXPERIMENT))
    assert list(cfg.tasks) == ["control_qa", "arithmetic_simple", "copy_text", "translation_wmt_short", "list_items",
                               "constrained_writing"]
    label_free = {"fixed", "min_p_mix", "best_joint_mix", "meanshift", "adaptive"}
    labeled = {"oracle", "min_p", "best_joint"}
    assert label_free | labeled <= set(cfg.methods)
    # every task's reward is its own: no two tasks share a reward spec except the two chrF tasks' plain chrf
    rewards = {t: json.dumps(cfg.build_task(t).reward_spec, sort_keys=True) for t in cfg.tasks}
    assert len(set(rewards.values())) == 5


def test_experiment_splits_fit_every_tasks_records():
    from adaptive_decoder.experiment.config import ExperimentConfig
    from adaptive_decoder.experiment.splits import make_splits

    shared_data("translation/wmt22.en-de.jsonl")
    shared_data("creative_writing/commongen.dev.jsonl")
    cfg = ExperimentConfig(**load_config(EXPERIMENT))
    splits = make_splits(cfg)  # 81 questions: 45 + 12 + 24; 71 categories: 35 + 12 + 24
    assert {t: [len(p[k]) for k in ("train", "dev", "test")] for t, p in splits.items()} == {
        t: [cfg.split_sizes(t)["num_train"], 12, 24] for t in cfg.tasks}


def test_headroom_config_measures_the_experiments_tasks_rewards_and_grid():
    from adaptive_decoder.evaluation.config import EvalConfig
    from adaptive_decoder.experiment.config import ExperimentConfig

    exp = ExperimentConfig(**load_config(EXPERIMENT))
    hr = EvalConfig(**load_config(HEADROOM))
    assert hr.tasks == {t: exp.task_options(t) for t in exp.tasks}
    assert hr.temperatures == exp.temperatures and hr.num_samples == exp.eval["num_samples"] == 8
    assert hr.stop_when_scored and exp.stop_when_scored and not hr.fluency
    # headroom against the best label-free single setting: the experiment's ones that need no head are run too
    from adaptive_decoder.evaluation.headroom import headroom_config, label_free_settings

    assert headroom_config(hr).methods == ["greedy", "fixed", "oracle", *label_free_settings(exp.methods)]
    assert label_free_settings(exp.methods) == ["min_p_mix", "best_joint_mix"]


def test_hag_search_config_searches_the_experiments_train_prompts_of_every_task():
    from conftest import training_recipe
    from adaptive_decoder.configs import parse_recipe_config
    from adaptive_decoder.experiment.config import ExperimentConfig
    from adaptive_decoder.experiment.splits import make_splits

    shared_data("translation/wmt22.en-de.jsonl")
    shared_data("creative_writing/commongen.dev.jsonl")
    build = training_recipe("build_hag_data")
    hag_cfg = REPO / "configs" / "hag" / "build_mixed_traffic.yaml"
    (cfg,) = parse_recipe_config((build.BuildHAGConfig,), ["--config", str(hag_cfg)])
    assert Path(cfg.experiment_config).resolve() == EXPERIMENT
    tasks, examples = build.load_examples(cfg.tasks, cfg.experiment_config)
    splits = make_splits(ExperimentConfig(**load_config(EXPERIMENT)))
    train_ids = {f"{t}/{e['id']}" for t, p in splits.items() for e in p["train"]}
    assert sorted(tasks) == sorted(splits) and len(examples) == 6 * 32
    assert {e["id"] for e in examples} <= train_ids  # never a dev or test prompt of the experiment
