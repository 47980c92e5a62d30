"""Two runs' heads compared (adaptive_decoder.experiment.compare, `adaptive-decoder compare`): on tiny run
directories holding only what the loader reads (experiment_config.json, seed-S/eval/results.json), the normalized
values and the paired difference B - A against hand-computed numbers, the interval against the bar's own code, the
seeds' spread with several seeds, and a refusal naming the key for every way the runs can fail to pair."""

import copy
import json

import pytest

from adaptive_decoder import cli
from adaptive_decoder.evaluation.aggregate import aggregate_units
from adaptive_decoder.experiment.compare import compare_markdown, compare_runs

FIX0 = {"type": "FixedPolicy", "role": "fixed", "temperature": 0.0, "top_p": 1.0, "top_k": 0}
FIX1 = {"type": "FixedPolicy", "role": "fixed", "temperature": 1.0, "top_p": 1.0, "top_k": 0}
HEAD = {"type": "AdaptivePolicy", "role": "adaptive", "head_path": "seed-0/train-sequence/head"}
METHODS = {"T=0.0": FIX0, "T=1.0": FIX1, "adseq": HEAD}
CONFIG = {"model": "tiny", "dtype": "float32", "num_samples": 4, "max_new_tokens": 16, "temperatures": [0.0, 1.0],
          "tasks": {"a": {}, "b": {}}, "n_bootstrap": 200}

# task a: dev means T=0.0 0.2, T=1.0 0.6 -> zero 0.2, scale 0.4; task b: dev means 1.0 and 3.0 -> zero 1, scale 2
DEV = {("a", "T=0.0"): {"d0": 0.2, "d1": 0.2}, ("a", "T=1.0"): {"d0": 0.4, "d1": 0.8},
       ("b", "T=0.0"): {"e0": 1.0, "e1": 1.0}, ("b", "T=1.0"): {"e0": 3.0, "e1": 3.0}}
GRID = {("a", "T=0.0"): {"p0": 0.2, "p1": 0.2, "p2": 0.2}, ("a", "T=1.0"): {"p0": 0.6, "p1": 0.6, "p2": 0.6},
        ("b", "T=0.0"): {"q0": 1.0, "q1": 1.0}, ("b", "T=1.0"): {"q0": 3.0, "q1": 3.0}}
# normalized, A: a [0, 1, 1] (mean 2/3), b [1, 1] (1); B: a [1, 1, 2] (4/3), b [0.5, 0.5] (1/2)
HEAD_A = {"a": {"p0": 0.2, "p1": 0.6, "p2": 0.6}, "b": {"q0": 3.0, "q1": 3.0}}
HEAD_B = {"a": {"p0": 0.6, "p1": 0.6, "p2": 1.0}, "b": {"q0": 2.0, "q1": 2.0}}


def _unit(seed, split, task, method, prompt, reward):
    return {"split": split, "task": task, "method": method, "prompt_id": prompt, "reward": reward, "seed": seed,
            "example": {"id": prompt, "prompt": f"the text of {task}/{prompt}"}}


def _run(head: dict, seeds=(0,), dev=DEV, grid=GRID, methods=METHODS) -> dict:
    """A run as {"seeds", "n_bootstrap", "results": {seed: results.json}}; `head`: {seed: {task: {prompt: reward}}}
    or, for every seed alike, {task: {prompt: reward}}."""
    results = {}
    for s in seeds:
        by_task = head.get(s, head)
        units = [_unit(s, "dev", t, m, p, r) for (t, m), by_p in dev.items() for p, r in by_p.items()]
        units += [_unit(s, "test", t, m, p, r) for (t, m), by_p in grid.items() for p, r in by_p.items()]
        units += [_unit(s, "test", t, "adseq", p, r) for t, by_p in by_task.items() for p, r in by_p.items()]
        tasks = sorted({t for t, _ in grid})
        results[s] = {"config": {**CONFIG, "seed": s, "tasks": {t: {} for t in tasks}}, "methods": dict(methods),
                      "tasks": {t: {"reward": {"exact": 1.0}, "max_new_tokens": 16} for t in tasks}, "units": units}
    return {"seeds": list(seeds), "n_bootstrap": 200, "results": results}


def _write(root, run: dict):
    root.mkdir()
    (root / "experiment_config.json").write_text(json.dumps({"seeds": run["seeds"], "n_bootstrap": run["n_bootstrap"]}))
    for s, res in run["results"].items():
        (root / f"seed-{s}" / "eval").mkdir(parents=True)
        (root / f"seed-{s}" / "eval" / "results.json").write_text(json.dumps(res))
    return root


@pytest.fixture
def runs(tmp_path):
    return _write(tmp_path / "lpo", _run(HEAD_A)), _write(tmp_path / "er", _run(HEAD_B))


def test_difference_and_values_are_the_bars_normalized_rewards(runs):
    cmp = compare_runs(*runs)
    a, b, overall = cmp["tasks"]["a"], cmp["tasks"]["b"], cmp["overall"]
    assert a["normalization"] == {"source": "dev", "zero": pytest.approx(0.2), "scale": pytest.approx(0.4),
                                  "worst": "T=0.0", "best": "T=1.0"}
    assert (a["n"], b["n"], overall["n"]) == (3, 2, 5)
    assert (a["a"], a["b"], a["diff"]["mean"]) == pytest.approx((2 / 3, 4 / 3, 2 / 3))
    assert (b["a"], b["b"], b["diff"]["mean"]) == pytest.approx((1.0, 0.5, -0.5))
    assert b["diff"]["lo"] == b["diff"]["hi"] == pytest.approx(-0.5)  # -0.5 on every prompt of b
    # tasks weighted equally, not prompts: (2/3 + 1) / 2, (4/3 + 1/2) / 2, (2/3 - 1/2) / 2
    assert (overall["a"], overall["b"], overall["diff"]["mean"]) == pytest.approx((5 / 6, 11 / 12, 1 / 12))
    assert cmp["n_boot"] == 200 and cmp["ci_levels"] == "prompts within task" and "per_seed" not in overall


def test_one_seeds_interval_is_the_one_the_bars_code_gives_both_heads_in_one_run(runs):
    """A's units plus B's head as a second head of the same run, through the one aggregator with the experiment's
    bootstrap seed (0) and n_bootstrap: its head-to-head difference is the comparison's, to the last bit."""
    lpo, er = _run(HEAD_A), _run(HEAD_B)
    units = lpo["results"][0]["units"] + [{**u, "method": "adseq_b"} for u in er["results"][0]["units"]
                                          if u["method"] == "adseq"]
    stats = aggregate_units(units, {**METHODS, "adseq_b": HEAD}, ["a", "b"], n_boot=200, seed=0)
    want = stats["scale_free"]["head_to_head"]["adseq_b"]["adseq"]["difference"]
    cmp = compare_runs(*runs)
    assert cmp["overall"]["diff"] == want["overall"] and {t: cmp["tasks"][t]["diff"] for t in "ab"} == want["tasks"]
    assert cmp["overall"]["a"] == stats["scale_free"]["normalized"]["adseq"]["overall"]["mean"]
    assert want["overall"]["lo"] < want["overall"]["hi"]  # a real interval: task a's differences vary by prompt


def test_several_seeds_widen_the_interval_with_each_seeds_difference(tmp_path):
    # one task, no dev units: normalized on the test grid, T=0.0 (0) -> 0 and T=1.0 (2) -> 1, scale 2. A scores 1
    # everywhere; B 3 with seed 0 and -1 with seed 1: seed-averaged they tie on every prompt, the seeds differ by
    # (3 - 1) / 2 = +1 and (-1 - 1) / 2 = -1
    prompts = {f"p{i}": None for i in range(4)}
    grid = {("a", "T=0.0"): dict.fromkeys(prompts, 0.0), ("a", "T=1.0"): dict.fromkeys(prompts, 2.0)}
    a = _write(tmp_path / "a", _run({"a": dict.fromkeys(prompts, 1.0)}, seeds=(0, 1), dev={}, grid=grid))
    b = _write(tmp_path / "b", _run({0: {"a": dict.fromkeys(prompts, 3.0)}, 1: {"a": dict.fromkeys(prompts, -1.0)}},
                                    seeds=(0, 1), dev={}, grid=grid))
    cmp = compare_runs(a, b, n_boot=400)
    ov = cmp["overall"]
    assert cmp["tasks"]["a"]["normalization"]["source"] == "test" and (ov["a"], ov["b"]) == pytest.approx((0.5, 0.5))
    assert ov["per_seed"] == {"0": pytest.approx(1.0), "1": pytest.approx(-1.0)}
    # seeds drawn with replacement: the mean of two draws is -1 with probability 1/4, so the 2.5% quantile is -1
    assert ov["diff"] == {"mean": pytest.approx(0.0), "lo": pytest.approx(-1.0), "hi": pytest.approx(1.0)}
    assert cmp["tasks"]["a"]["diff"] == ov["diff"] and cmp["ci_levels"] == "training seeds, then prompts within task"
    assert "Overall B - A per seed: seed 0 +1.000, seed 1 -1.000." in compare_markdown(cmp)


def _config(run, key, value):
    run["results"][0]["config"][key] = value


def _reward(run):
    run["results"][0]["tasks"]["a"]["reward"] = {"exact": 0.5}


def _drop_task_b(run):
    res = run["results"][0]
    del res["tasks"]["b"]
    res["units"] = [u for u in res["units"] if u["task"] != "b"]


def _head_unit(run, prompt):
    return next(u for u in run["results"][0]["units"] if (u["method"], u["task"], u["split"], u["prompt_id"]) ==
                ("adseq", "a", "test", prompt))


def _other_prompt(run):
    _head_unit(run, "p2")["prompt_id"] = "p9"


def _other_text(run):
    _head_unit(run, "p0")["example"]["prompt"] = "another text"


def _other_dev(run):
    next(u for u in run["results"][0]["units"] if (u["method"], u["task"], u["split"], u["prompt_id"]) ==
         ("T=1.0", "a", "dev", "d1"))["reward"] = 1.0  # dev mean 0.7: scale 0.5


def _fewer_seeds(run):
    run["seeds"] = [0]


@pytest.mark.parametrize("change, message", [
    (lambda r: _config(r, "num_samples", 8), "seed 0's evaluation setting 'num_samples': run A 4, run B 8"),
    (lambda r: _config(r, "max_new_tokens", 32), "seed 0's evaluation setting 'max_new_tokens': run A 16, run B 32"),
    (lambda r: _config(r, "seed", 1), "seed 0's evaluation setting 'seed': run A 0, run B 1"),
    (_reward, "the reward of task 'a' (seed 0): run A {'exact': 1.0}, run B {'exact': 0.5}"),
    (_drop_task_b, "seed 0's tasks: run A ['a', 'b'], run B ['a']"),
    (_other_prompt, "test prompt 'p2' of task 'a' (seed 0) has a 'adseq' unit in run A only"),
    (_other_text, "the text of test prompt 'p0' of task 'a' (seed 0): run A 'the text of a/p0', run B 'another text'"),
    (_other_dev, "the normalization of task 'a' (scale, from the fixed temperatures as the bar's): run A 0.4"),
])
def test_runs_that_do_not_pair_are_refused_naming_the_key(tmp_path, change, message):
    b = _run(HEAD_B)
    change(b)
    with pytest.raises(ValueError) as e:
        compare_runs(_write(tmp_path / "a", _run(HEAD_A)), _write(tmp_path / "b", b))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_seed_or_method_one_run_lacks_is_refused_by_name(tmp_path):
    a = _write(tmp_path / "a", _run(HEAD_A, seeds=(0, 1)))
    b = _write(tmp_path / "b", _run(HEAD_B, seeds=(0,)))
    with pytest.raises(ValueError, match=r"^seed 1 is in run A only \(run A: seeds \[0, 1\], run B: seeds \[0\]\)"):
        compare_runs(a, b)
    # a token head in run A only: the default (adseq) pairs, adtok is refused naming run B
    lpo = _run(HEAD_A, methods={**METHODS, "adtok": {**HEAD, "head_path": "seed-0/train-token/head"}})
    lpo["results"][0]["units"] += [{**u, "method": "adtok"} for u in copy.deepcopy(lpo["results"][0]["units"])
                                   if u["method"] == "adseq"]
    a2, b2 = _write(tmp_path / "a2", lpo), _write(tmp_path / "b2", _run(HEAD_B))
    assert compare_runs(a2, b2)["method"] == "adseq"
    with pytest.raises(ValueError, match=r"^method 'adtok' is not in run B \(seed 0\), which evaluated "
                                         r"\['T=0.0', 'T=1.0', 'adseq'\]$"):
        compare_runs(a2, b2, method="adtok")
    with pytest.raises(FileNotFoundError, match="is not an experiment run_dir"):
        compare_runs(tmp_path, b2)


def test_command_prints_the_table_and_writes_the_json(runs, tmp_path, capsys):
    out = tmp_path / "cmp.json"
    assert cli.main(["compare", str(runs[0]), str(runs[1]), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"- run A: `{runs[0]}`" in text and f"- run B: `{runs[1]}`" in text
    assert "a: 0 = T=0.0 (0.200), 1 = T=1.0 (0.600), means on dev; b: 0 = T=0.0 (1.000), 1 = T=1.0 (3.000)" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert rows[0] == "| task | prompts | A | B | B - A [95% CI] |"
    assert rows[1].startswith("| a | 3 | 0.667 | 1.333 | +0.667 [")
    assert rows[2] == "| b | 2 | 1.000 | 0.500 | -0.500 [-0.500, -0.500] |"
    assert rows[3].startswith("| **overall** | 5 | 0.833 | 0.917 | +0.083 [")
    assert json.loads(out.read_text()) == json.loads(json.dumps(compare_runs(*runs)))


def test_command_refusal_is_one_line(runs, tmp_path, capsys):
    b = _run(HEAD_B)
    _config(b, "num_samples", 8)
    with pytest.raises(SystemExit) as e:
        cli.main(["compare", str(runs[0]), str(_write(tmp_path / "b8", b))])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith("adaptive-decoder compare: error: the runs differ in seed 0's evaluation setting 'num_samples'")
