"""The evaluation harness end to end on a tiny random Llama: every method, its outputs, task options and splits,
bad input refused by name."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml
from eval_support import ALL_TASKS, REPO, char_tokenizer, save_head, save_tiny, tiny_cfg, units_by

from adaptive_decoder import AdaptiveDecoderConfig
from adaptive_decoder.evaluation.config import EvalConfig
from adaptive_decoder.evaluation.harness import run_evaluation
from adaptive_decoder.tasks.data_task import PACKAGED_TASK_DIR


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


def test_end_to_end_every_method(tiny_dir, tmp_path):
    heads = [save_head(tmp_path / "seq", "sequence", str(tiny_dir)), save_head(tmp_path / "tok", "token", str(tiny_dir))]
    cfg = tiny_cfg(tiny_dir, tmp_path / "out", methods=["greedy", "fixed", "random", "oracle", "adaptive"],
                   head_paths=heads, report_to="wandb")
    res = run_evaluation(cfg)
    methods = ["greedy", "T=0.0", "T=1.0", "random", "oracle", "adseq", "adtok"]
    assert list(res["methods"]) == methods
    for t in ALL_TASKS:
        for m in methods:
            us = units_by(res, m, t)
            assert len(us) == 3 and all(len(u["samples"]) == 2 for u in us.values()), (m, t)
            r = res["tasks"][t]["methods"][m]["reward"]
            assert r["lo"] <= r["mean"] <= r["hi"]
        # greedy and T=0.0 are the same config: same samples (the second reuses the first)
        g, t0 = units_by(res, "greedy", t), units_by(res, "T=0.0", t)
        assert all(g[k]["samples"] == t0[k]["samples"] for k in g)
        # the oracle decodes the test prompts with the setting that won on the dev split
        o = res["tasks"][t]["oracle"]["oracle"]
        assert o["chosen"] == max(o["dev_scores"], key=lambda k: (o["dev_scores"][k], -list(o["dev_scores"]).index(k)))
        chosen = units_by(res, o["chosen"], t)
        assert all(u["samples"] == chosen[k]["samples"] for k, u in units_by(res, "oracle", t).items())
        assert len(units_by(res, "T=1.0", t, "dev")) == 2
    # dev and test prompts are disjoint
    dev_ids = set(units_by(res, "T=1.0", "gsm8k", "dev"))
    assert not dev_ids & set(units_by(res, "T=1.0", "gsm8k", "test"))
    # AD samples carry the chosen bins: one per sample (sequence) or one per generated token (token level)
    s = next(iter(units_by(res, "adseq", "gsm8k").values()))["samples"][0]
    assert isinstance(s["choices"]["temperature"], int) and isinstance(s["values"]["temperature"], float)
    s = next(iter(units_by(res, "adtok", "gsm8k").values()))["samples"][0]
    assert len(s["choices"]["temperature"]) == len(s["values"]["top_p"]) == s["num_tokens"]
    # one comparison set (evaluation.aggregate.comparison_set), the experiment's: every non-fixed method against every
    # fixed temperature, a trained head also against the oracle and the random control; per task and pooled (overall)
    want = {(m, f) for m in ("greedy", "random", "oracle", "adseq", "adtok") for f in ("T=0.0", "T=1.0")}
    want |= {(h, c) for h in ("adseq", "adtok") for c in ("oracle", "random")}
    for t in [*ALL_TASKS, "overall"]:
        assert {(c["method"], c["baseline"]) for c in res["comparisons"] if c["task"] == t} == want
    assert len(res["comparisons"]) == (len(ALL_TASKS) + 1) * 14
    out = tmp_path / "out"
    md = (out / "results.md").read_text()
    assert "| adtok | T=1.0 |" in md and "win [95% CI]" in md
    for c in res["comparisons"]:  # the table never shows a win rate without its interval
        assert f"{c['win']:.2f} [{c['win_lo']:.2f}, {c['win_hi']:.2f}]" in md
    # the scale-free view, from the same per-prompt rewards (normalized on the oracle's dev runs of the grid)
    sf = res["scale_free"]
    assert list(sf["tasks"]) == ALL_TASKS and sf["fixed"] == ["T=0.0", "T=1.0"]
    assert set(sf["win_rates"]) == {"greedy", "random", "oracle", "adseq", "adtok"}
    assert any(sf["tasks"][t]["normalization"]["source"] == "dev" for t in ALL_TASKS)
    for t in ALL_TASKS:
        n = sf["tasks"][t]["normalization"]
        if n["source"] == "dev":
            dev = {f: sum(u["reward"] for u in units_by(res, f, t, "dev").values()) / 2 for f in sf["fixed"]}
            assert n["zero"] == pytest.approx(min(dev.values()))
            assert n["scale"] == pytest.approx(max(dev.values()) - min(dev.values()))
    assert set(res["bar"]) == {"adseq", "adtok"} and all(b["evaluated"] for b in res["bar"].values())
    assert "## Normalized reward per task" in md and "## Win rate vs each fixed temperature" in md
    assert "A head meets the bar when" in md and ("- BAR MET: adseq" in md or "- BAR NOT MET: adseq" in md)
    assert json.loads((out / "results.json").read_text())["config"]["model"] == str(tiny_dir)
    for png in ("reward_vs_temperature.png", "chosen_params.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    media = list((out / "wandb").glob("offline-run-*/files/media/**/*"))  # offline wandb: tables + images logged
    assert {p.name.split("_0_")[0] for p in media if p.suffix in (".png", ".json")} >= {
        "reward_vs_temperature", "chosen_params", "summary", "comparisons"}, media
    # the translation summary has corpus metrics, the writing tasks diversity and fluency
    assert res["tasks"]["translation"]["methods"]["T=1.0"]["metrics"]["corpus_chrf"] is not None
    assert "self_bleu" in res["tasks"]["constrained_writing"]["methods"]["T=1.0"]["metrics"]
    assert res["tasks"]["creative_writing"]["methods"]["T=1.0"]["metrics"]["fluency"] < 0


def test_samples_do_not_depend_on_which_other_methods_run(tiny_dir, tmp_path):
    a = run_evaluation(tiny_cfg(tiny_dir, tmp_path / "a", tasks={"translation": {}}, methods=["fixed"]))
    b = run_evaluation(tiny_cfg(tiny_dir, tmp_path / "b", tasks={"translation": {}}, methods=["random", "fixed"]))
    ua, ub = units_by(a, "T=1.0", "translation"), units_by(b, "T=1.0", "translation")
    assert {k: u["samples"] for k, u in ua.items()} == {k: u["samples"] for k, u in ub.items()}


def test_empty_generations_are_scored(tmp_path):
    model_dir = save_tiny(tmp_path / "mute", zero_lm_head=True)
    res = run_evaluation(tiny_cfg(model_dir, tmp_path / "out", methods=["greedy"], num_dev_prompts=0))
    for t in ALL_TASKS:
        us = units_by(res, "greedy", t)
        assert all(s["text"] == "" and s["num_tokens"] == 0 for u in us.values() for s in u["samples"])
    rewards = {t: res["tasks"][t]["methods"]["greedy"]["reward"]["mean"] for t in ALL_TASKS}
    # documented empty values: no answer, chrF 0, no coverage + repetition 0, repetition 0 + 0.1 * fluency floor (-20)
    assert rewards == pytest.approx({"gsm8k": 0.0, "translation": 0.0, "constrained_writing": 0.0, "creative_writing": -2.0})
    md = (tmp_path / "out" / "results.md").read_text()
    assert "greedy" in md and "add method 'fixed' to compare" in md
    assert "scale_free" not in res and "Normalized reward" not in md  # no fixed grid to normalize by


def test_a_given_model_in_another_dtype_than_the_config_is_refused(tiny_dir, tmp_path):
    from adaptive_decoder.modeling.models import load_base_model

    model, tok = load_base_model(str(tiny_dir), dtype="bfloat16")
    cfg = tiny_cfg(tiny_dir, tmp_path / "out", tasks={"gsm8k": {}}, methods=["greedy"], num_dev_prompts=0)
    with pytest.raises(ValueError, match=r"the given model runs in bfloat16 but the config's dtype is float32"):
        run_evaluation(cfg, model, tok)


# --- bad input --------------------------------------------------------------------------------------------


def test_unknown_task_method_and_config_key(tmp_path):
    # valid: the Python tasks and the task files (adaptive_decoder/tasks/configs/*.yaml)
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['gsm9k'\]; valid: \[.*'constrained_writing', .*'control_qa', "
                                         r".*'gsm8k', .*'translation'.*\] \(or a path"):
        EvalConfig(tasks={"gsm9k": {}})
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['beam'\]; valid: \['adaptive', 'best_joint', 'best_joint_mix', "
                                         r"'edt', 'edt_mix', 'epsilon', 'epsilon_mix', 'eta', 'eta_mix', 'fixed', 'greedy', "
                                         r"'hag', 'hag_untrained', 'meanshift', 'min_p', 'min_p_mix', 'oracle', 'random', "
                                         r"'random_token', 'top_h', 'top_h_mix', 'top_nsigma', 'top_nsigma_mix', 'typical_p', "
                                         r"'typical_p_mix'\]"):
        EvalConfig(methods=["greedy", "beam"])
    # the list + task_options form: one line saying how to write it
    with pytest.raises(ValueError, match=r"a list of names \(with task_options\) is no longer read: .*"
                                         r"\(tasks: \{gsm8k: \{\}\}\)"):
        EvalConfig(tasks=["gsm8k"])
    with pytest.raises(ValueError, match=r"task_options is no longer read: .*\(tasks: \{translation: \{path: x\}\}\)"):
        EvalConfig(tasks={"gsm8k": {}}, task_options={"translation": {"path": "x"}})
    spec = importlib.util.spec_from_file_location("run_suite", REPO / "eval" / "run_suite.py")
    run_suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_suite)
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [gsm8k]\nnum_promts: 3\n")
    with pytest.raises(ValueError, match="num_promts"):
        run_suite.main(["--config", str(bad)])
    good = tmp_path / "good.yaml"
    good.write_text("tasks: [gsm8k]\n")
    with pytest.raises(ValueError, match="bogus_flag"):  # unknown CLI flag
        run_suite.main(["--config", str(good), "--bogus_flag", "1"])


def _upto_lowercase(text: str) -> str:
    i = next((i for i, c in enumerate(text) if "a" <= c <= "z"), None)
    return text if i is None else text[:i + 1]


def test_stop_when_scored_keeps_every_reward_and_stops_at_the_scored_end(tiny_dir, tmp_path, monkeypatch):
    from adaptive_decoder.tasks.translation import Translation

    # the char-level tiny model never writes a newline, so the task here is scored up to its first lowercase
    # letter: a scored end it reaches about as often as a chat model ends a first line
    monkeypatch.setattr(Translation, "postprocess", lambda self, text: _upto_lowercase(text))
    monkeypatch.setattr(Translation, "stop_predicate", lambda self: lambda text: any("a" <= c <= "z" for c in text))
    kw = dict(tasks={"translation": {}}, methods=["greedy", "fixed", "random", "oracle"], max_new_tokens=16)
    free = run_evaluation(tiny_cfg(tiny_dir, tmp_path / "free", **kw))
    cut = run_evaluation(tiny_cfg(tiny_dir, tmp_path / "cut", stop_when_scored=True, **kw))
    shorter = 0
    assert len(free["units"]) == len(cut["units"])
    for uf in free["units"]:
        uc = units_by(cut, uf["method"], "translation", uf["split"])[uf["prompt_id"]]
        assert uc["reward"] == uf["reward"]
        for sf, sc in zip(uf["samples"], uc["samples"]):
            assert sf["text"].startswith(sc["text"]) and _upto_lowercase(sf["text"]) == sc["text"]
            assert sc["metrics"] == sf["metrics"]
            shorter += sc["num_tokens"] < sf["num_tokens"]
    assert shorter > 10, "hardly any sample stopped early: the option is not tested"
    # recorded at its value, off included
    assert json.loads((tmp_path / "cut" / "run_config.json").read_text())["stop_when_scored"] is True
    assert json.loads((tmp_path / "free" / "run_config.json").read_text())["stop_when_scored"] is False
    with pytest.raises(ValueError, match="different config.*stop_when_scored"):
        run_evaluation(tiny_cfg(tiny_dir, tmp_path / "free", **kw, stop_when_scored=True))
    assert EvalConfig(backend="vllm", stop_when_scored=True).stop_when_scored  # vLLM stops rows too (stops.py)


def test_task_options_reach_the_task_and_bad_data_fails(tiny_dir, tmp_path):
    bad = tmp_path / "g.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "#### 2"}\n{oops\n' + '{"question": "2+2?", "answer": "#### 4"}\n' * 3)
    with pytest.raises(ValueError, match=r"g\.jsonl:2: malformed"):
        run_evaluation(tiny_cfg(tiny_dir, tmp_path / "o", tasks={"gsm8k": {"path": str(bad)}}, num_dev_prompts=0))
    res = run_evaluation(tiny_cfg(tiny_dir, tmp_path / "o2", num_dev_prompts=0, methods=["greedy"],
                                  tasks=json.dumps({"gsm8k": {"path": str(bad)}}), on_bad_line="skip"))
    assert res["tasks"]["gsm8k"]["source"] == str(bad) and res["tasks"]["gsm8k"]["num_test"] == 3


def test_per_task_max_new_tokens(tiny_dir, tmp_path):
    res = run_evaluation(tiny_cfg(tiny_dir, tmp_path / "o", tasks={"gsm8k": {"max_new_tokens": 2}, "translation": {}},
                                  methods=["fixed"], num_dev_prompts=0, max_new_tokens=6))
    longest = {t: max(s["num_tokens"] for u in res["units"] if u["task"] == t for s in u["samples"])
               for t in ("gsm8k", "translation")}
    assert longest["gsm8k"] <= 2 < longest["translation"] <= 6
    md = (tmp_path / "o" / "results.md").read_text()
    assert res["tasks"]["gsm8k"]["max_new_tokens"] == 2 and "max_new_tokens=2" in md
    assert "only fixed temperatures were run" in md  # nothing to pair them with, and the note says what to add
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        run_evaluation(tiny_cfg(tiny_dir, tmp_path / "o2", tasks={"gsm8k": {"max_new_tokens": 0}}))


def test_head_for_another_base_model_is_refused(tiny_dir, tmp_path):
    other = save_head(tmp_path / "other", "sequence", "HuggingFaceTB/SmolLM2-1.7B-Instruct")
    with pytest.raises(ValueError, match=r"other cannot be used: .*trained for base model 'HuggingFaceTB/SmolLM2-1.7B-Instruct'"):
        run_evaluation(tiny_cfg(tiny_dir, tmp_path / "o", tasks={"gsm8k": {}}, methods=["adaptive"], head_paths=[other]))
    wide = save_head(tmp_path / "wide", "sequence", str(tiny_dir), hidden=48)
    with pytest.raises(ValueError, match="hidden size 48"):
        run_evaluation(tiny_cfg(tiny_dir, tmp_path / "o2", tasks={"gsm8k": {}}, methods=["adaptive"], head_paths=[wide]))
    with pytest.raises(FileNotFoundError, match="directory not found: .*nope .*skip_missing_heads"):
        run_evaluation(tiny_cfg(tiny_dir, tmp_path / "o3", tasks={"gsm8k": {}}, methods=["adaptive"],
                                head_paths=[str(tmp_path / "nope")]))
    # skip_missing_heads drops it; greedy still runs
    res = run_evaluation(tiny_cfg(tiny_dir, tmp_path / "o4", tasks={"gsm8k": {}}, methods=["greedy", "adaptive"],
                                  head_paths=[str(tmp_path / "nope")], skip_missing_heads=True, num_dev_prompts=0))
    assert list(res["methods"]) == ["greedy"]


# --- policies ---------------------------------------------------------------------------------------------


def test_creative_writing_reward_model_score(tmp_path):
    """With reward_model= configured, the creative-writing reward IS the reward model's score (a tiny random
    sequence-classification Llama here), reported per sample next to the quality metrics."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from adaptive_decoder.tasks import get_task

    torch.manual_seed(0)
    rm = LlamaForSequenceClassification(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                    num_attention_heads=4, num_key_value_heads=2, num_labels=1,
                                                    pad_token_id=0, eos_token_id=1, bos_token_id=2))
    rm.save_pretrained(tmp_path / "rm")
    char_tokenizer().save_pretrained(tmp_path / "rm")
    task = get_task("creative_writing", reward_model=str(tmp_path / "rm"))
    task.setup_scoring()  # no scorer LM: fluency is left out, the reward model is still used
    samples, per_prompt = task.score(["Once upon a time.", "The end, the end, the end."], {"id": "0", "prompt": "Write."})
    assert all(s["reward"] == s["reward_model"] for s in samples)
    assert samples[0]["reward"] != samples[1]["reward"] and "repetition" in samples[0] and "self_bleu" in per_prompt


def test_explicit_splits_replace_the_task_subset_and_are_checked(tiny_dir, tmp_path):
    """Callers (the experiment driver) pass disjoint test/dev prompts; unknown tasks or examples are refused."""
    from adaptive_decoder.evaluation.harness import Evaluator
    from adaptive_decoder.tasks import get_task

    cfg = tiny_cfg(tiny_dir, tmp_path / "out", tasks={"gsm8k": {}}, methods=["greedy", "oracle"])
    exs = get_task("gsm8k").examples()
    ev = Evaluator(cfg, splits={"gsm8k": (exs[10:12], exs[20:21])})
    assert [e["id"] for e in ev.splits["gsm8k"][0]] == [e["id"] for e in exs[10:12]]
    assert [e["id"] for e in ev.splits["gsm8k"][1]] == [exs[20]["id"]]
    with pytest.raises(ValueError, match=r"splits must cover exactly the configured tasks \['gsm8k'\]"):
        Evaluator(cfg, splits={"translation": ([], [])})
    with pytest.raises(ValueError, match=r"split examples \['nope'\] are not among the task's examples"):
        Evaluator(cfg, splits={"gsm8k": ([{"id": "nope"}], [])})


def test_a_task_file_given_by_path_keys_units_and_results_by_its_name(tiny_dir, tmp_path):
    """A task file named by its path evaluates like one named by its name: units and results are keyed by its
    `task:` key (or stem), as are its entry in the config and its explicit splits."""
    from adaptive_decoder.evaluation.harness import Evaluator
    from adaptive_decoder.tasks import get_task

    spec = yaml.safe_load((PACKAGED_TASK_DIR / "control_qa.yaml").read_text())
    spec.pop("task")
    path = str(tmp_path / "tasks" / "my_qa.yaml")
    Path(path).parent.mkdir()
    Path(path).write_text(yaml.safe_dump(spec))
    cfg = tiny_cfg(tiny_dir, tmp_path / "out", tasks={path: {"max_new_tokens": 2}},
                   methods=["greedy", "oracle"], num_prompts=2, num_dev_prompts=1)
    assert list(cfg.tasks) == ["my_qa"]
    res = run_evaluation(cfg)
    assert list(res["tasks"]) == ["my_qa"] and res["tasks"]["my_qa"]["max_new_tokens"] == 2
    assert {u["task"] for u in res["units"]} == {"my_qa"} and len(units_by(res, "greedy", "my_qa")) == 2
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| method | my_qa (n=2) |" in md and "## my_qa\n" in md and path not in md
    exs = get_task(path).examples()
    ev = Evaluator(cfg, splits={"my_qa": (exs[3:5], exs[7:8])})
    assert list(ev.splits) == ["my_qa"] and [e["id"] for e in ev.splits["my_qa"][1]] == [exs[7]["id"]]


def test_an_entry_named_apart_from_its_task_keys_units_and_results_by_the_entry(tiny_dir, tmp_path):
    """`arith: {task: arithmetic}` beside `arithmetic: {}`: each entry's units, prompt seeds and results are keyed by
    its own name (no KeyError in aggregate), and both draw the same prompts (the subset is the task's)."""
    cfg = tiny_cfg(tiny_dir, tmp_path / "out", tasks={"arith": {"task": "arithmetic"}, "arithmetic": {}},
                   methods=["greedy"], num_dev_prompts=0, num_prompts=2)
    res = run_evaluation(cfg)
    assert list(res["tasks"]) == ["arith", "arithmetic"] and {u["task"] for u in res["units"]} == {"arith", "arithmetic"}
    alias, own = units_by(res, "greedy", "arith"), units_by(res, "greedy", "arithmetic")
    assert len(alias) == 2 and alias.keys() == own.keys()
    assert [alias[i]["samples"][0]["text"] for i in alias] == [own[i]["samples"][0]["text"] for i in alias]
    assert run_evaluation(cfg)["units_computed_this_run"] == 0  # a resume finds them under the same names


def test_run_suite_every_baseline_method(tiny_dir, tmp_path):
    """configs/eval/baselines_tiny.yaml through eval/run_suite.py: each tuned sampler picks among as many settings as
    the oracle, on the same dev prompts; best_joint among the joint bins; meanshift decodes its head's mean."""
    spec = importlib.util.spec_from_file_location("run_suite", REPO / "eval" / "run_suite.py")
    run_suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_suite)
    head = save_head(tmp_path / "seq", "sequence", str(tiny_dir))
    out = tmp_path / "out"
    run_suite.main(["--config", str(REPO / "configs" / "eval" / "baselines_tiny.yaml"), "--model", str(tiny_dir),
                    "--output_dir", str(out), "--head_paths", head])
    res = json.loads((out / "results.json").read_text())
    samplers = {"min_p": "min_p", "typical_p": "typical_p", "epsilon": "epsilon_cutoff", "eta": "eta_cutoff",
                "top_h": "top_h", "top_nsigma": "top_nsigma", "edt": "edt_theta"}
    new = ["best_joint", *samplers, "meanshift-adseq"]
    assert [m for m in res["methods"] if m in new] == new
    fits = res["tasks"]["gsm8k"]["oracle"]
    assert len(fits["oracle"]["dev_scores"]) == 3
    for m, key in samplers.items():
        assert len(fits[m]["dev_scores"]) == 3, m  # the oracle's budget
        assert res["methods"][m]["sampler"] == key and len(res["methods"][m]["grid"]) == 3
        test = units_by(res, m, "gsm8k")
        assert len(test) == 2 and all(s["values"][key] == res["methods"][m]["chosen"][key]
                                      for u in test.values() for s in u["samples"])
        assert len(units_by(res, fits[m]["chosen"], "gsm8k", "dev")) == 2
    assert len(fits["best_joint"]["dev_scores"]) == 3 * 2 * 2
    ms = fits["meanshift-adseq"]
    dev = [s["values"]["temperature"] for u in units_by(res, "adseq", "gsm8k", "dev").values() for s in u["samples"]]
    assert ms["mean_temperature"] == pytest.approx(sum(dev) / len(dev))
    t = res["methods"]["meanshift-adseq"]["chosen"]["temperature"]
    assert t in AdaptiveDecoderConfig().temperature_bins
    assert all(abs(t - ms["mean_temperature"]) <= abs(b - ms["mean_temperature"])
               for b in AdaptiveDecoderConfig().temperature_bins)
    md = (out / "results.md").read_text()
    for m in new:
        assert f"| {m} |" in md, m
    assert "mean temperature on the dev prompts" in md


def test_the_mix_sampler_runs_beside_the_per_task_one_on_shared_dev_units(tiny_dir, tmp_path):
    """min_p_mix and min_p share their dev units (and the grid's, which normalize the fit); the mix value is one
    for every task, the argmax of the normalized dev means recomputed from the stored units."""
    import numpy as np

    cfg = tiny_cfg(tiny_dir, tmp_path / "out", methods=["fixed", "oracle", "min_p", "min_p_mix"], batch_size=3)
    res = run_evaluation(cfg)
    cands = res["methods"]["min_p_mix"]["candidates"]
    assert cands == res["methods"]["min_p"]["candidates"]
    keys = [(u["method"], u["task"], u["split"], u["prompt_id"]) for u in res["units"]]
    assert len(keys) == len(set(keys))  # no unit twice, though four methods read the dev split
    chosen = {res["tasks"][t]["oracle"]["min_p_mix"]["chosen"] for t in ALL_TASKS}
    assert len(chosen) == 1
    score = {}
    for c in cands:
        per_task = []
        for t in ALL_TASKS:
            grid = [np.mean([u["reward"] for u in units_by(res, f, t, "dev").values()]) for f in ("T=0.0", "T=1.0")]
            mean = np.mean([u["reward"] for u in units_by(res, c, t, "dev").values()])
            per_task.append((mean - min(grid)) / (max(grid) - min(grid)) if max(grid) > min(grid) else mean)
        score[c] = np.mean(per_task)
    assert chosen == {max(cands, key=lambda c: (score[c], -cands.index(c)))}
    for t in ALL_TASKS:
        assert len(units_by(res, "min_p_mix", t)) == 3
    assert "for every task, on the dev prompts of all tasks" in (tmp_path / "out" / "results.md").read_text()
    # one task: normalizing is then monotone, so the mix value is the per-task one and its test units are copied
    one = run_evaluation(tiny_cfg(tiny_dir, tmp_path / "one", tasks={"gsm8k": {}}, methods=["fixed", "min_p", "min_p_mix"]))
    fits = one["tasks"]["gsm8k"]["oracle"]
    assert fits["min_p_mix"]["chosen"] == fits["min_p"]["chosen"]
    per_task, mix = units_by(one, "min_p", "gsm8k"), units_by(one, "min_p_mix", "gsm8k")
    assert all(u["extra"]["reused_from"] == "min_p" and u["samples"] == per_task[p]["samples"] for p, u in mix.items())
