"""HAG data search (prune + greedy, budget, resume) and the TRL SFT recipe, on tiny random models (offline)."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from adaptive_decoder.modeling.generation import AdaptiveDecodingModel
from adaptive_decoder.hag.policy import KEYS, parse_config
from adaptive_decoder.hag.search import ConfigSearch, SearchSettings, SearchSpace, canonical, read_records, run_search
from conftest import training_recipe
from test_hag import char_tokenizer

ROOT = Path(__file__).resolve().parents[1]
BUILD_TINY = ROOT / "configs" / "hag" / "build_tiny.yaml"
SFT_TINY = ROOT / "configs" / "hag" / "sft_tiny.yaml"


def _recipe(name):
    return training_recipe(name)


def save_tiny(path: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=1024, eos_token_id=1, pad_token_id=0, bos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("hag") / "model")


# ------------------------------------------------------------------------------------------ search logic
class ScriptedScorer:
    """Reward = a known function of the config that produced the row (read back from the forced values), so the
    search outcome can be computed by hand: best at temperature 0.9, top_p 0.9, top_k 0, repetition 1.1."""

    def __init__(self, adm):
        self.adm = adm

    def score(self, texts, examples):
        # every generate call since the last scoring (max_rows may split one step into several calls)
        vals = {k: torch.cat([v[k][:, 0] for v in self.adm.pending]) for k in KEYS}  # one config per row
        self.adm.pending.clear()
        assert len(vals["temperature"]) == len(texts)
        return [-abs(t - 0.9) - abs(p - 0.9) - k / 100 - abs(r - 1.1)
                for t, p, k, r in zip(vals["temperature"].tolist(), vals["top_p"].tolist(), vals["top_k"].tolist(),
                                      vals["repetition_penalty"].tolist())]


class RecordingADM(AdaptiveDecodingModel):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls, self.pending = [], []

    def generate(self, *a, **kw):
        out = super().generate(*a, **kw)
        self.pending.append(out.values)
        self.calls.append(out.values["temperature"].shape[0])
        return out


def test_prune_then_greedy_finds_the_hand_computed_best_and_respects_budget():
    from conftest import tiny_llama

    adm = RecordingADM(tiny_llama(vocab_size=128, hidden_size=32), char_tokenizer())
    scorer = ScriptedScorer(adm)
    space = SearchSpace(temperature=[0.0, 0.3, 0.6, 0.9], top_p=[1.0, 0.9, 0.5], top_k=[0, 20],
                        repetition_penalty=[1.0, 1.1, 1.5], base={"temperature": 0.3, "top_p": 1.0, "top_k": 20,
                                                                   "repetition_penalty": 1.0})
    settings = SearchSettings(samples_per_config=2, max_new_tokens=2, keep_per_key=2, prune_margin=1.0, chat=False,
                              max_rows=7)
    exs = [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two two"}]
    recs = ConfigSearch(adm, scorer.score, space, settings).search(exs)
    for r in recs:
        # the optimum is off the base's axes: only the greedy phase (moving several coordinates) can reach it
        assert r["best_config"] == {"temperature": 0.9, "top_p": 0.9, "top_k": 0, "repetition_penalty": 1.1}
        assert r["best_reward"] == pytest.approx(0.0, abs=1e-6)
        assert r["kept"] == {"temperature": [0.9, 0.6], "top_p": [0.9, 1.0], "top_k": [0, 20],
                             "repetition_penalty": [1.1, 1.0]}
        # cost accounting: a greedy config is one sample, every other config samples_per_config samples
        want = sum(1 if e["config"]["temperature"] == 0 else 2 for e in r["evaluated"])
        assert r["samples"] == want and r["num_configs"] == len({canonical(e["config"]) for e in r["evaluated"]})
        assert not r["all_tied"] and r["base_reward"] is not None
    assert max(adm.calls) <= 7  # max_rows splits the batched generate calls
    # budget: never more samples per prompt than allowed, and the best so far is still returned
    adm.calls.clear()
    small = SearchSettings(**{**settings.__dict__, "budget_samples": 5})
    recs = ConfigSearch(adm, scorer.score, space, small).search(exs)
    assert all(r["samples"] <= 5 for r in recs)
    assert all(parse_config(", ".join(f"{k}={r['best_config'][k]}" for k in KEYS)).status == "ok" for r in recs)


def test_ties_keep_the_first_evaluated_config_and_are_flagged():
    from conftest import tiny_llama

    adm = AdaptiveDecodingModel(tiny_llama(vocab_size=128, hidden_size=32), char_tokenizer())
    space = SearchSpace(temperature=[0.0, 0.5], top_p=[1.0], top_k=[0], repetition_penalty=[1.0],
                        base={"temperature": 0.5, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0})
    rec = ConfigSearch(adm, lambda t, e: [0.0] * len(t), space,
                       SearchSettings(samples_per_config=2, max_new_tokens=2, chat=False)).search([{"id": "x", "prompt": "p"}])[0]
    assert rec["all_tied"] and rec["best_config"]["temperature"] == 0.0  # the temperature sweep runs first


def test_a_group_reward_is_scored_within_each_configs_own_samples():
    """Novelty compares samples: the search scores it within one (prompt, config), as evaluation scores a fixed
    config's k samples, and a greedy config's single sample beside its own copy (novelty 0, as k greedy samples)."""
    from conftest import tiny_llama

    from adaptive_decoder.rewards import Novelty

    seen = []

    def scorer(texts, examples):
        seen.append([e["id"] for e in examples])
        return Novelty(n=1).score(texts, examples)

    scorer.needs_group = True
    adm = AdaptiveDecodingModel(tiny_llama(vocab_size=128, hidden_size=32), char_tokenizer())
    space = SearchSpace(temperature=[0.0, 0.8, 1.5], top_p=[1.0], top_k=[0], repetition_penalty=[1.0],
                        base={"temperature": 0.8, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0})
    settings = SearchSettings(samples_per_config=3, max_new_tokens=6, chat=False)
    recs = ConfigSearch(adm, scorer, space, settings).search([{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}])
    for r in recs:
        by_t = {e["config"]["temperature"]: e["rewards"] for e in r["evaluated"]}
        assert by_t[0.0] == [0.0] and len(by_t[0.8]) == len(by_t[1.5]) == 3
        best = r["best_texts"]  # the best config's samples, scored among themselves only
        assert r["evaluated"][[e["config"] for e in r["evaluated"]].index(r["best_config"])]["rewards"] == \
            pytest.approx(Novelty(n=1).score(best, [{"id": "g"}] * len(best)))
    ids = [i for call in seen for i in call]
    assert all(ids.count(i) in (2, 3) for i in set(ids)) and len({i.split("|")[0] for i in ids}) == 2
    with pytest.raises(ValueError, match="samples_per_config >= 2"):
        ConfigSearch(adm, scorer, space, SearchSettings(samples_per_config=1, chat=False)).search([{"id": "a", "prompt": "x"}])


def _upto_lowercase(text):
    i = next((i for i, c in enumerate(text) if "a" <= c <= "z"), None)
    return text if i is None else text[:i + 1]


def test_stop_when_scored_keeps_every_reward_and_stops_at_the_scored_end(tmp_path):
    """With stop_when_scored each sample ends where its task's scored text is final: every config's rewards are
    those of the full-length search, and the texts are their scored prefixes. (The char-level tiny model never
    writes a newline, so the task here is scored up to its first lowercase letter.)"""
    from conftest import tiny_llama

    def scorer(texts, examples):
        return [float(len(_upto_lowercase(t))) for t in texts]

    scorer.stop_predicates = {"t": lambda text: any("a" <= c <= "z" for c in text)}
    adm = AdaptiveDecodingModel(tiny_llama(vocab_size=128, hidden_size=32), char_tokenizer())
    space = SearchSpace(temperature=[0.0, 0.8, 1.5], top_p=[1.0, 0.9], top_k=[0], repetition_penalty=[1.0],
                        base={"temperature": 0.8, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0})
    examples = [{"id": f"p{i}", "prompt": p, "task": "t"} for i, p in enumerate(["one", "two", "three", "four"])]
    runs = {stop: ConfigSearch(adm, scorer, space, SearchSettings(samples_per_config=3, max_new_tokens=24, chat=False,
                                                                  stop_when_scored=stop)).search(examples)
            for stop in (False, True)}
    shorter = 0
    for free, cut in zip(runs[False], runs[True]):
        assert cut["evaluated"] == free["evaluated"] and cut["best_config"] == free["best_config"]
        for f, c in zip(free["best_texts"], cut["best_texts"]):
            assert f.startswith(c) and _upto_lowercase(f) == c
            shorter += len(c) < len(f)
    assert shorter > 3, "hardly any sample stopped early: the option is not tested"
    # recorded in the resume fingerprint at its value, off included; a directory of format 0 (recorded only when
    # on) is migrated: it was searched with the option off
    for stop in (False, True):
        run_search(adm, examples[:1], scorer, tmp_path / str(stop), space,
                   SearchSettings(samples_per_config=2, max_new_tokens=8, chat=False, stop_when_scored=stop),
                   progress=False)
        assert json.loads((tmp_path / str(stop) / "search_config.json").read_text())["settings.stop_when_scored"] is stop
    cfg_file = tmp_path / "False" / "search_config.json"
    old = json.loads(cfg_file.read_text())
    del old["settings.stop_when_scored"], old["format_version"]
    cfg_file.write_text(json.dumps(old))
    settings = SearchSettings(samples_per_config=2, max_new_tokens=8, chat=False)
    assert run_search(adm, examples[:2], scorer, tmp_path / "False", space, settings, progress=False)["prompts"] == 2
    with pytest.raises(ValueError, match=r"holds a search with a different configuration \(settings\.stop_when_scored "
                                         r"differ\)"):
        run_search(adm, examples[:2], scorer, tmp_path / "False", space,
                   SearchSettings(samples_per_config=2, max_new_tokens=8, chat=False, stop_when_scored=True),
                   progress=False)
    plain = lambda texts, examples: [0.0] * len(texts)  # noqa: E731
    with pytest.raises(ValueError, match="stop_when_scored needs a scorer that says where each task's scored text"):
        ConfigSearch(adm, plain, space, SearchSettings(stop_when_scored=True))


def test_a_search_resumed_after_its_task_changed_is_refused_naming_the_task(tmp_path, caplog):
    """The caller's `task_contents` ({task: digest}) is compared by task: another digest is refused naming the
    task; a directory of format 1, which did not record it, resumes with a warning and records it."""
    from conftest import tiny_llama

    adm = AdaptiveDecodingModel(tiny_llama(vocab_size=128, hidden_size=32), char_tokenizer())
    space = SearchSpace(temperature=[0.0, 0.8], top_p=[1.0], top_k=[0], repetition_penalty=[1.0],
                        base={"temperature": 0.8, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0})
    settings = SearchSettings(samples_per_config=2, max_new_tokens=4, chat=False)
    examples = [{"id": f"p{i}", "prompt": p, "task": "t"} for i, p in enumerate(["one", "two"])]
    scorer = lambda texts, examples: [float(len(t)) for t in texts]  # noqa: E731

    def search(n, digest):
        return run_search(adm, examples[:n], scorer, tmp_path, space, settings, progress=False,
                          fingerprint={"task_contents": {"t": digest}})

    search(1, "a")
    with pytest.raises(ValueError, match=r"different configuration \(contents of task 't' differ\)"):
        search(2, "b")
    record = tmp_path / "search_config.json"
    old = json.loads(record.read_text())
    del old["task_contents"]
    record.write_text(json.dumps({**old, "format_version": 1}))
    with caplog.at_level("WARNING", logger="adaptive_decoder.tasks.identity"):
        assert search(2, "b")["prompts"] == 2
    assert "cannot be detected" in caplog.text and json.loads(record.read_text())["task_contents"] == {"t": "b"}


def test_space_and_settings_validation():
    with pytest.raises(ValueError, match="top_p"):
        SearchSpace(top_p=[1.0, 1.5])
    with pytest.raises(ValueError, match="base temperature must be > 0"):
        SearchSpace(base={"temperature": 0.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0})
    with pytest.raises(ValueError, match="duplicates"):
        SearchSpace(top_k=[0, 0])
    with pytest.raises(ValueError, match="samples_per_config"):
        SearchSettings(samples_per_config=0)


# ------------------------------------------------------------------------------------------ the build recipe
def _build_args(tiny_dir, out, extra=()):
    return ["--config", str(BUILD_TINY), "--base_model", str(tiny_dir), "--output_dir", str(out), *extra]


def _strip(recs):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in recs]


def test_build_recipe_outputs_and_resume_equals_uninterrupted(tmp_path, tiny_dir):
    build = _recipe("build_hag_data")
    full = tmp_path / "full"
    summary = build.main(_build_args(tiny_dir, full))
    recs = read_records(full / "search.jsonl")
    assert len(recs) == 6 and {r["task"] for r in recs} == {"gsm8k", "constrained_writing"}
    assert summary["prompts"] == 6 and summary["samples_generated"] == sum(r["samples"] for r in recs) > 0
    assert all(r["samples"] <= 40 for r in recs) and summary["this_run"]["seconds"] >= 0
    sft = [json.loads(x) for x in (full / "sft.jsonl").read_text().splitlines()]
    assert len(sft) == summary["sft_examples"] == 6 - summary["dropped_all_tied"]
    for s in sft:
        assert s["prompt"][0]["role"] == "user" and parse_config(s["completion"][0]["content"]).status == "ok"
    assert (full / "best_configs.png").stat().st_size > 1000
    # a crash after the first chunk (2 prompts) with a torn third line: the restart redoes only the rest
    part = tmp_path / "part"
    part.mkdir()
    (part / "search_config.json").write_text((full / "search_config.json").read_text())
    lines = (full / "search.jsonl").read_text().splitlines(keepends=True)
    (part / "search.jsonl").write_text("".join(lines[:2]) + lines[2][:40])
    summary2 = build.main(_build_args(tiny_dir, part))
    assert summary2["this_run"]["samples"] == sum(r["samples"] for r in recs[2:])
    assert _strip(read_records(part / "search.jsonl")) == _strip(recs)
    # a finished directory: nothing left to do
    assert build.main(_build_args(tiny_dir, part))["this_run"]["samples"] == 0


def test_build_recipe_refuses_changed_settings_and_unknown_keys(tmp_path, tiny_dir):
    build = _recipe("build_hag_data")
    out = tmp_path / "o"
    cfg = yaml.safe_load(BUILD_TINY.read_text())
    cfg["tasks"] = {"gsm8k": {"num_prompts": 1}}
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    first = read_records(Path(build.main(["--config", str(conf), "--base_model", str(tiny_dir), "--output_dir", str(out)])
                              ["config"]["output_dir"]) / "search.jsonl")
    # growing the prompt set is allowed: the seeded subset of 2 extends the one of 1, only the new prompt is searched
    cfg["tasks"] = {"gsm8k": {"num_prompts": 2}}
    conf.write_text(yaml.safe_dump(cfg))
    grown = build.main(["--config", str(conf), "--base_model", str(tiny_dir), "--output_dir", str(out)])
    recs = read_records(out / "search.jsonl")
    assert len(recs) == 2 and _strip(recs[:1]) == _strip(first) and grown["this_run"]["samples"] == recs[1]["samples"]
    with pytest.raises(ValueError, match="samples_per_config"):
        build.main(["--config", str(conf), "--base_model", str(tiny_dir), "--output_dir", str(out),
                    "--samples_per_config", "3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**cfg, "samples_per_confg": 2}))
    with pytest.raises(ValueError, match="samples_per_confg"):
        build.main(["--config", str(bad), "--output_dir", str(out)])
    bad.write_text(yaml.safe_dump({**cfg, "space": {"temprature": [0.1]}}))
    with pytest.raises(ValueError, match="temprature"):
        build.main(["--config", str(bad), "--output_dir", str(out)])
    bad.write_text(yaml.safe_dump({**cfg, "tasks": {"gsm8k": {"num_prompts": 1, "fewshot": 2}}}))
    with pytest.raises(ValueError, match="fewshot"):
        build.main(["--config", str(bad), "--output_dir", str(out)])


def test_build_recipe_searches_the_experiments_train_prompts_only(tmp_path, tiny_dir):
    """With experiment_config, HAG is searched on the prompts the head is trained on (the first num_prompts of each
    task's train split there, with its task options) and never on the experiment's dev or test prompts."""
    from adaptive_decoder.configs import parse_recipe_config
    from adaptive_decoder.experiment.config import ExperimentConfig
    from adaptive_decoder.experiment.splits import make_splits

    build = _recipe("build_hag_data")
    exp = ROOT / "configs" / "experiments" / "tiny.yaml"
    cfg = yaml.safe_load(BUILD_TINY.read_text())
    cfg.update(experiment_config=str(exp), tasks={"gsm8k": {"num_prompts": 2}, "constrained_writing": {"num_prompts": 1}})
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "o"
    build.main(["--config", str(conf), "--base_model", str(tiny_dir), "--output_dir", str(out)])
    splits = make_splits(parse_recipe_config((ExperimentConfig,), ["--config", str(exp)])[0])
    got = sorted(r["prompt_id"] for r in read_records(out / "search.jsonl"))
    assert got == sorted([f"gsm8k/{e['id']}" for e in splits["gsm8k"]["train"][:2]]
                         + [f"constrained_writing/{splits['constrained_writing']['train'][0]['id']}"])
    held_out = {f"{t}/{e['id']}" for t in splits for s in ("dev", "test") for e in splits[t][s]}
    assert not held_out & set(got)
    # each task's answers have its own length there (gsm8k: max_new_tokens 4; the build's own default is 8)
    lens = {t: max(len(x) for r in read_records(out / "search.jsonl") if r["task"] == t for x in r["best_texts"])
            for t in ("gsm8k", "constrained_writing")}
    assert lens["gsm8k"] <= 4 < lens["constrained_writing"]
    for tasks, match in [({"translation": {"num_prompts": 1}}, "not tasks of"),
                         ({"gsm8k": {"num_prompts": 1, "seed": 3}}, "remove"),
                         ({"gsm8k": {"num_prompts": 99}}, "train prompts of")]:
        conf.write_text(yaml.safe_dump({**cfg, "tasks": tasks}))
        with pytest.raises(ValueError, match=match):
            build.main(["--config", str(conf), "--base_model", str(tiny_dir), "--output_dir", str(tmp_path / "x")])


# ------------------------------------------------------------------------------------------ the SFT recipe
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def tiny_chat_dir(tmp_path_factory):
    d = save_tiny(tmp_path_factory.mktemp("hagchat") / "model")
    tok = char_tokenizer()
    tok.chat_template = CHAT
    tok.save_pretrained(d)
    return d


def _sft_args(base, data, out, extra=()):
    return ["--config", str(SFT_TINY), "--base_model", str(base), "--dataset_path", str(data), "--output_dir", str(out),
            *extra]


def test_sft_lora_run_saves_adapter_and_merged_model_usable_by_hag_policy(tmp_path, tiny_chat_dir):
    build, train = _recipe("build_hag_data"), _recipe("train_hag")
    data = tmp_path / "data"
    build.main(["--config", str(BUILD_TINY), "--base_model", str(tiny_chat_dir), "--output_dir", str(data),
                "--drop_all_tied", "false"])
    out = tmp_path / "sft"
    meta = train.main(_sft_args(tiny_chat_dir, data, out))
    assert meta["steps"] == 3 and meta["train_examples"] == 6 and meta["chat_template"] is True
    assert torch.isfinite(torch.tensor(meta["train_loss"]))
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "merged" / "config.json").exists()
    assert json.loads((out / "adapter" / "hag_training.json").read_text())["base_model"] == str(tiny_chat_dir)
    # the merged model and the adapter (merged on load onto the recorded base model) write the same configs
    from adaptive_decoder.hag.policy import HAGPolicy
    from adaptive_decoder.modeling.models import load_base_model

    model, tok = load_base_model(str(tiny_chat_dir))
    adm = AdaptiveDecodingModel(model, tok)
    prompts = ["What is 3 + 4?", "Write about a dog."]
    a = HAGPolicy(model_path=str(out / "merged"), max_config_tokens=16).propose(adm, prompts)
    b = HAGPolicy(model_path=str(out / "adapter"), max_config_tokens=16).propose(adm, prompts)
    assert [t for t, _ in a] == [t for t, _ in b]


def test_sft_full_finetune_teaches_the_config_line_end_to_end(tmp_path, tiny_chat_dir):
    """Full fine-tuning memorises two SFT examples; HAGPolicy then writes exactly those config lines and stage 2
    applies them: the TRL tokenisation and HAGPolicy's stage-1 prompt must agree for this to work."""
    from adaptive_decoder.hag.policy import HAGPolicy, sft_example
    from adaptive_decoder.modeling.models import load_base_model

    targets = {"Add 2 and 5.": {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0},
               "Tell a story.": {"temperature": 1.2, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1}}
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(sft_example(p, c, task_prompt=p)) + "\n" for p, c in targets.items()))
    train = _recipe("train_hag")
    out = tmp_path / "full"
    meta = train.main(_sft_args(tiny_chat_dir, data, out, ["--use_lora", "false", "--max_steps", "120",
                                                            "--learning_rate", "3e-3", "--lr_scheduler_type", "constant"]))
    assert meta["final_loss"] < 0.1 and not (out / "adapter").exists()
    model, tok = load_base_model(str(tiny_chat_dir))
    adm = AdaptiveDecodingModel(model, tok)
    pol = HAGPolicy(model_path=str(out / "merged"), max_config_tokens=70)
    outs = pol.generate(adm, list(targets), num_samples=2, max_new_tokens=3, seed=0)
    for o, want in zip(outs, targets.values()):
        assert o.extra["parse_failed"] is False and o.extra["config"] == want
        assert all({k: v[k] for k in want} == pytest.approx(want) for v in o.values)
    assert pol.stats.failure_rate == 0.0


def test_sft_recipe_errors(tmp_path, tiny_chat_dir):
    train = _recipe("train_hag")
    with pytest.raises(ValueError, match="lora_rank"):
        train.main(_sft_args(tiny_chat_dir, tmp_path, tmp_path / "o", ["--lora_rank", "4"]))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load(SFT_TINY.read_text()), "lora_alhpa": 3}))
    with pytest.raises(ValueError, match="lora_alhpa"):
        train.main(["--config", str(bad), "--dataset_path", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="build_hag_data.py"):
        train.main(_sft_args(tiny_chat_dir, tmp_path / "none.jsonl", tmp_path / "o"))


def test_sft_on_a_4_or_8_bit_base_trains_adapters_only(tmp_path, tiny_chat_dir, monkeypatch):
    import importlib.util

    import torch

    train = _recipe("train_hag")
    real = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # past the CUDA and bitsandbytes checks
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: real("json") if n == "bitsandbytes" else real(n, *a))
    with pytest.raises(ValueError, match=r"load_in_4bit trains LoRA adapters only \(QLoRA\); set use_lora: true"):
        train.main(_sft_args(tiny_chat_dir, tmp_path, tmp_path / "o", ["--load_in_4bit", "true", "--use_lora", "false"]))
    with pytest.raises(ValueError, match=r"merge_lora cannot merge into load_in_8bit weights; set merge_lora: false"):
        train.main(_sft_args(tiny_chat_dir, tmp_path, tmp_path / "o", ["--load_in_8bit", "true", "--merge_lora", "true"]))


def test_gguf_quantizer_marker_is_dropped_before_training():
    """SmolLM2 comes from GGUF: transformers dequantizes it to floats but leaves a GGUF quantizer that Trainer
    refuses to train; a model with another quantizer is left alone."""
    from types import SimpleNamespace

    from conftest import tiny_llama
    from transformers.trainer_utils import validate_quantization_for_training

    from adaptive_decoder.modeling.models import _drop_gguf_quantizer

    m = tiny_llama()
    m.hf_quantizer = SimpleNamespace(quantization_config=SimpleNamespace(quant_method="gguf"), is_trainable=False)
    m.is_quantized = True
    m.config.quantization_config = {"quant_method": "gguf"}
    with pytest.raises(ValueError, match="quantized"):
        validate_quantization_for_training(m)
    m = _drop_gguf_quantizer(m)
    validate_quantization_for_training(m)
    assert m.hf_quantizer is None and not hasattr(m.config, "quantization_config")
    other = SimpleNamespace(quantization_config=SimpleNamespace(quant_method="bitsandbytes"))
    m.hf_quantizer = other
    assert _drop_gguf_quantizer(m).hf_quantizer is other
    packed = SimpleNamespace(quantization_config=SimpleNamespace(quant_method="gguf", dequantize=False))
    m.hf_quantizer = packed  # weights left in GGUF blocks: the marker is true and stays
    assert _drop_gguf_quantizer(m).hf_quantizer is packed
