"""Sample collection: records, hidden-state cache, budget, identity refusal, resume (incl. kill -9 of a subprocess)."""

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, AdaptiveDecodingModel
from adaptive_decoder.lpo.store import CollectionMismatchError, CollectionSettings, hidden_key, read_collection
from adaptive_decoder.lpo.collection import collect, group_size_mismatches
from adaptive_decoder.tasks.recipe import load_task_prompts
from adaptive_decoder.modeling.models import prepare_tokenizer
from adaptive_decoder.rewards import build_reward
from conftest import tiny_llama, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TINY_YAML = ROOT / "configs" / "lpo" / "collect_tiny.yaml"
REWARD = {"fluency": {"weight": 1.0}, "repetition": {"weight": 0.5, "n": 1}}  # fluency: a continuous signal


def make_adm(level="sequence", seed=0, model_seed=0, bins=(0.0, 0.5, 1.0, 1.5)):
    model = tiny_llama(vocab_size=259, hidden_size=32, seed=model_seed)
    tok = prepare_tokenizer(tiny_tokenizer(), model)
    torch.manual_seed(seed)
    cfg = AdaptiveDecoderConfig(hidden_size=32, num_layers=2, intermediate_size=16, temperature_bins=list(bins),
                                top_p_bins=[1.0, 0.9], top_k_bins=[0, 20], level=level, selection="sample")
    return AdaptiveDecodingModel(model, tok, AdaptiveDecoderHead(cfg))


def prompts(n=5, seed=0, task="arith"):
    return load_task_prompts(task, {"task": "arithmetic", "num_prompts": n, "data_seed": seed, "reward": REWARD})


def run(adm, out, ps, **kw):
    settings = CollectionSettings(**{"num_samples": 4, "max_new_tokens": 6, "epsilon": 0.3, "prompts_per_batch": 2, **kw})
    rewards = {t: build_reward(REWARD, adm.model, adm.tokenizer) for t in {p["task"] for p in ps}}
    return collect(adm, ps, rewards, out, settings, progress=False)


def _strip(recs):  # records without the shard they sit in (which differs between runs)
    return sorted(json.dumps({k: v for k, v in r.items() if k != "shard"}, sort_keys=True) for r in recs)


@pytest.mark.parametrize("level", ["sequence", "token"])
def test_records_choices_values_rewards_and_cache(tmp_path, level):
    adm = make_adm(level)
    ps = prompts(5)
    summary = run(adm, tmp_path, ps)
    manifest, recs = read_collection(tmp_path)
    assert summary["samples_collected"] == len(recs) == 20 and sorted(manifest["done"]) == sorted(p["id"] for p in ps)
    cfg = adm.head.config
    reward = build_reward(REWARD, adm.model, adm.tokenizer)
    by_prompt = {}
    for r in recs:
        by_prompt.setdefault(r["prompt_id"], []).append(r)
        t = len(r["completion_ids"])
        assert 1 <= t <= 6 and r["completion"] == adm.tokenizer.decode(r["completion_ids"], skip_special_tokens=True)
        for f in cfg.factors:  # applied values are the chosen bins' values
            c, v = r["choices"][f], r["values"][f]
            if level == "sequence":
                assert isinstance(c, int) and v == pytest.approx(cfg.bins(f)[c])
            else:
                assert len(c) == len(v) == t and all(x == pytest.approx(cfg.bins(f)[i]) for i, x in zip(c, v))
        ex = next(p for p in ps if p["id"] == r["prompt_id"])
        want = reward.score_components([r["completion"]], [ex])
        assert r["rewards"] == {k: pytest.approx(v[0]) for k, v in want.items()}
        assert r["rewards"]["total"] == pytest.approx(r["rewards"]["fluency"] + 0.5 * r["rewards"]["repetition"])
    assert sorted(by_prompt) == sorted(p["id"] for p in ps)
    hidden = {}
    for f in (tmp_path / "hidden").glob("*.safetensors"):
        hidden.update({k: v for k, v in load_file(str(f)).items() if not k.endswith("::token_logps")})
    for pid, group in by_prompt.items():
        assert sorted(r["sample_index"] for r in group) == [0, 1, 2, 3]
        totals = [r["rewards"]["total"] for r in group]
        for r in group:  # "extremes": exactly the best and worst samples are cached, fp16, one entry per step
            extreme = r["rewards"]["total"] in (max(totals), min(totals))
            assert r["cached"] == extreme == (hidden_key(pid, r["sample_index"]) in hidden)
            if r["cached"]:
                h = hidden[hidden_key(pid, r["sample_index"])]
                assert h.dtype == torch.float16
                assert h.shape == ((32,) if level == "sequence" else (len(r["completion_ids"]), 32))
    assert manifest["hidden_bytes"] == sum(v.numel() * 2 for v in hidden.values())
    assert summary["samples_cached"] == len(hidden)


def _upto_lowercase(text: str) -> str:
    i = next((i for i, c in enumerate(text) if "a" <= c <= "z"), None)
    return text if i is None else text[:i + 1]


class _ScoredUpToLowercase:
    """A TaskReward stand-in whose task scores a completion up to its first lowercase letter (a byte-level tiny
    model writes one about every tenth token; it almost never writes the newline a first-line task ends at)."""

    class task:
        @staticmethod
        def stop_predicate():
            return lambda text: any("a" <= c <= "z" for c in text)

    def __init__(self, reward):
        self.reward = reward

    def score_components(self, completions, examples):
        return self.reward.score_components([_upto_lowercase(c) for c in completions], examples)


@pytest.mark.parametrize("level", ["sequence", "token"])
def test_stop_when_scored_keeps_rewards_and_choices_and_cuts_the_rest(tmp_path, level):
    adm, ps = make_adm(level), prompts(4)
    reward = _ScoredUpToLowercase(build_reward(REWARD, adm.model, adm.tokenizer))
    out = {}
    for name, stop in (("free", False), ("cut", True)):
        settings = CollectionSettings(num_samples=4, max_new_tokens=16, epsilon=0.3, prompts_per_batch=2,
                                      stop_when_scored=stop)
        collect(adm, ps, {"arith": reward}, tmp_path / name, settings, progress=False)
        manifest, recs = read_collection(tmp_path / name)
        out[name] = {(r["prompt_id"], r["sample_index"]): r for r in recs}
        assert manifest["settings"].get("stop_when_scored", False) is stop
    shorter = 0
    for key, f in out["free"].items():
        c = out["cut"][key]
        assert c["rewards"] == f["rewards"] and _upto_lowercase(f["completion"]) == c["completion"]
        n = len(c["completion_ids"])
        assert f["completion_ids"][:n] == c["completion_ids"]
        assert c["choices"] == (f["choices"] if level == "sequence" else {k: v[:n] for k, v in f["choices"].items()})
        shorter += n < len(f["completion_ids"])
    assert shorter >= 4, "hardly any sample stopped early: the option is not tested"
    plain = build_reward(REWARD, adm.model, adm.tokenizer)
    with pytest.raises(ValueError, match=r"stop_when_scored needs a TaskReward .* for task\(s\) \['arith'\]"):
        collect(adm, ps, {"arith": plain}, tmp_path / "plain", CollectionSettings(stop_when_scored=True), progress=False)


def test_epsilon_one_explores_every_bin(tmp_path):
    # epsilon=1: uniform over bins regardless of the head; 10 prompts x 4 samples cover all 4 temperature bins
    run(make_adm(), tmp_path, prompts(10), epsilon=1.0)
    _, recs = read_collection(tmp_path)
    assert {r["choices"]["temperature"] for r in recs} == {0, 1, 2, 3}


def test_cache_budget_is_respected(tmp_path):
    budget_bytes = 5 * 32 * 2  # room for five sequence-level vectors
    summary = run(make_adm(), tmp_path, prompts(6), cache_budget_mb=budget_bytes / 2**20, cache_which="all")
    manifest, recs = read_collection(tmp_path)
    assert summary["samples_cached"] == 5 and summary["samples_not_cached_budget"] == 24 - 5
    assert manifest["hidden_bytes"] == budget_bytes
    assert sum(r["cached"] for r in recs) == 5
    assert sum(r["cached"] for r in recs if r["prompt_id"] == "arith/0") == 4  # first come, first stored


def test_resume_skips_done_prompts_and_equals_an_uninterrupted_run(tmp_path):
    ps = prompts(6)
    run(make_adm(), tmp_path / "a", ps[:2])
    second = run(make_adm(), tmp_path / "a", ps)
    assert second["prompts_already_done"] == 2 and second["prompts_collected"] == 4
    run(make_adm(), tmp_path / "b", ps)
    assert _strip(read_collection(tmp_path / "a")[1]) == _strip(read_collection(tmp_path / "b")[1])
    again = run(make_adm(), tmp_path / "a", ps)  # nothing left to do
    assert again["prompts_collected"] == 0 and len(read_collection(tmp_path / "a")[1]) == 24


def test_half_written_shard_from_a_kill_is_ignored_and_replaced(tmp_path):
    ps = prompts(4)
    run(make_adm(), tmp_path, ps[:2])
    # what a kill between writing shard 1 and committing the manifest leaves behind:
    (tmp_path / "shards" / "shard-00001.jsonl").write_text('{"prompt_id": "arith/2", "garbage": true}\n')
    (tmp_path / "shards" / "shard-00002.jsonl.tmp").write_text("partial")
    (tmp_path / "manifest.json.tmp").write_text("{partial")
    assert len(read_collection(tmp_path)[1]) == 8  # readers only see listed shards
    run(make_adm(), tmp_path, ps)
    manifest, recs = read_collection(tmp_path)
    assert len(recs) == 16 and not list(tmp_path.rglob("*.tmp"))
    assert all("garbage" not in r for r in recs)


def _tear_last_line(path: Path):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])


def _flip_a_digit(path: Path):  # same length, still valid JSON: only a checksum sees it
    text = path.read_text()
    i = text.index('"seed": ') + len('"seed": ')
    path.write_text(text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:])


@pytest.mark.parametrize("damage", [_tear_last_line, _flip_a_digit])
def test_a_damaged_shard_is_refused_by_readers_and_recollected_on_resume(tmp_path, damage):
    from adaptive_decoder.lpo.pairs import PairDataset

    ps = prompts(6)
    run(make_adm(), tmp_path / "a", ps, cache_which="all")  # 3 shards of 2 prompts
    run(make_adm(), tmp_path / "b", ps, cache_which="all")  # the undamaged twin
    damage(tmp_path / "a" / "shards" / "shard-00001.jsonl")
    fix = "rerun the same collect command"
    with pytest.raises(ValueError, match=rf"shard-00001\.jsonl.*{fix}"):
        read_collection(tmp_path / "a")
    with pytest.raises(ValueError, match=rf"shard-00001\.jsonl.*{fix}"):
        PairDataset(tmp_path / "a")  # what train_lpo.py reads
    summary = run(make_adm(), tmp_path / "a", ps, cache_which="all")
    assert summary["prompts_already_done"] == 4 and summary["prompts_collected"] == 2
    manifest, recs = read_collection(tmp_path / "a")
    assert _strip(recs) == _strip(read_collection(tmp_path / "b")[1])  # the same seeds give the same samples again
    assert sorted(manifest["done"]) == sorted(p["id"] for p in ps) and len(manifest["done"]) == 6
    assert manifest["hidden_bytes"] == read_collection(tmp_path / "b")[0]["hidden_bytes"]
    listed = {sh["name"] for sh in manifest["shards"]}
    assert {f.name.split(".")[0] for f in (tmp_path / "a").glob("*/shard-*")} == listed  # the damaged files are gone
    assert len(PairDataset(tmp_path / "a")) > 0


def test_a_torn_shard_of_a_manifest_without_checksums_is_named(tmp_path):
    # collections written before shards carried their length and checksum: a line that does not parse is still
    # reported with its file, and a resume recollects that shard
    ps = prompts(4)
    run(make_adm(), tmp_path, ps)
    m = json.loads((tmp_path / "manifest.json").read_text())
    for sh in m["shards"]:
        for k in ("bytes", "sha256", "hidden_file_bytes", "hidden_sha256"):
            sh.pop(k, None)
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    _tear_last_line(tmp_path / "shards" / "shard-00001.jsonl")
    with pytest.raises(ValueError, match=r"shard-00001\.jsonl: line 8 .*rerun the same collect command"):
        read_collection(tmp_path)
    assert run(make_adm(), tmp_path, ps)["prompts_collected"] == 2
    assert len(read_collection(tmp_path)[1]) == 16


def test_mismatched_collection_is_refused(tmp_path):
    run(make_adm(), tmp_path, prompts(2))
    with pytest.raises(CollectionMismatchError, match=r"base_model\.fingerprint"):
        run(make_adm(model_seed=1), tmp_path, prompts(3))
    with pytest.raises(CollectionMismatchError, match=r"head\.config\.temperature_bins"):
        run(make_adm(bins=(0.0, 1.0)), tmp_path, prompts(3))
    with pytest.raises(CollectionMismatchError, match=r"head\.fingerprint"):
        run(make_adm(seed=5), tmp_path, prompts(3))
    with pytest.raises(CollectionMismatchError, match=r"settings\.num_samples: stored 4, now 3"):
        run(make_adm(), tmp_path, prompts(3), num_samples=3)
    assert len(read_collection(tmp_path)[1]) == 8  # nothing was written by the refused runs


def test_resume_with_another_prompts_per_batch_is_refused(tmp_path):
    # a batch's seed and its prompts' padding depend on which prompts share it: resuming a killed run with other
    # batches would give other samples than the uninterrupted run, so the batch size is part of the identity
    ps = prompts(6)
    run(make_adm(), tmp_path, ps[:2], prompts_per_batch=2)  # what a run killed after its first batch leaves
    with pytest.raises(CollectionMismatchError, match=r"settings\.prompts_per_batch: stored 2, now 3"):
        run(make_adm(), tmp_path, ps, prompts_per_batch=3)
    assert len(read_collection(tmp_path)[1]) == 8
    assert run(make_adm(), tmp_path, ps, prompts_per_batch=2)["prompts_collected"] == 4


def _as_format_1(root, drop: str | None = None):
    """The manifest of `root` as format 1 wrote it: without the settings it recorded only when on, and without
    `drop` ("settings.x" / "base_model.x") when given."""
    m = json.loads((root / "manifest.json").read_text())
    m["format_version"] = 1
    for k in ("twins", "backend", "stop_when_scored", "shard"):
        del m["settings"][k]
    del m["base_model"]["load"], m["task_contents"]
    if drop:
        part, key = drop.split(".")
        del m[part][key]
    (root / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("drop", ["settings.prompts_per_batch", "base_model.dtype"])
def test_a_format_1_manifest_without_what_cannot_be_migrated_is_readable_and_refused_by_name_on_resume(tmp_path, drop):
    # collections written before the batch size and the dtype were part of the identity cannot say how they were
    # batched, or which dtype `auto` resolved to
    run(make_adm(), tmp_path, prompts(2))
    _as_format_1(tmp_path, drop)
    m, recs = read_collection(tmp_path)
    part, key = drop.split(".")
    assert len(recs) == 8 and m[part][key] is None and m["settings"]["twins"] == 1
    with pytest.raises(CollectionMismatchError, match=rf"^{tmp_path}: its manifest \(format 1\) does not record "
                                                      rf"{re.escape(drop)}, so a resume cannot tell"):
        run(make_adm(), tmp_path, prompts(4))


def test_resume_under_another_resolved_dtype_is_refused_by_name(tmp_path):
    # `dtype: auto` may resolve to bf16 on one machine and float32 on another: the manifest holds the dtype the
    # model ran in, and a resume in another one is refused naming it (before anything is generated)
    run(make_adm(), tmp_path, prompts(2))
    assert read_collection(tmp_path)[0]["base_model"]["dtype"] == "float32"
    adm = make_adm()
    adm.model.to(torch.bfloat16)
    with pytest.raises(CollectionMismatchError, match=r"base_model\.dtype: stored 'float32', now 'bfloat16'"):
        run(adm, tmp_path, prompts(3))
    assert len(read_collection(tmp_path)[1]) == 8


def test_a_format_1_manifest_is_migrated_and_resumes_in_the_current_format(tmp_path):
    run(make_adm(), tmp_path, prompts(2))
    _as_format_1(tmp_path)
    assert run(make_adm(), tmp_path, prompts(4))["prompts_collected"] == 2
    m = json.loads((tmp_path / "manifest.json").read_text())  # written back in the current format
    assert m["format_version"] == 3 and m["base_model"]["load"] == {} and m["settings"]["backend"] == "hf"


def test_a_task_file_edited_between_collect_runs_is_refused_by_name(tmp_path, caplog):
    """The manifest records what each task resolves to: a task file edited since (its template here) is refused on
    resume naming the task; a manifest of format 2, which did not record it, resumes with a warning."""
    import yaml

    from adaptive_decoder.tasks.base import TaskReward
    from adaptive_decoder.tasks.data_task import PACKAGED_TASK_DIR
    from adaptive_decoder.tasks.recipe import build_task

    spec = yaml.safe_load((PACKAGED_TASK_DIR / "arithmetic_simple.yaml").read_text())
    path = tmp_path / "sums.yaml"

    def run_task(n, **edit):
        path.write_text(yaml.safe_dump({**spec, "task": "sums", **edit}))
        adm = make_adm()
        task = build_task("sums", {"task": str(path)})
        settings = CollectionSettings(num_samples=2, max_new_tokens=4, prompts_per_batch=2)
        ps = load_task_prompts("sums", {"task": str(path), "num_prompts": n})
        return collect(adm, ps, {"sums": TaskReward(task)}, tmp_path / "c", settings, progress=False)

    run_task(2)
    with pytest.raises(CollectionMismatchError, match=r"contents of task 'sums'"):
        run_task(3, template="Sum: " + spec["template"])
    manifest = tmp_path / "c" / "manifest.json"
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**{k: v for k, v in m.items() if k != "task_contents"}, "format_version": 2}))
    with caplog.at_level("WARNING", logger="adaptive_decoder.tasks.identity"):
        assert run_task(3, template="Sum: " + spec["template"])["prompts_collected"] == 1
    assert "cannot be detected" in caplog.text
    assert json.loads(manifest.read_text())["task_contents"]["sums"] != m["task_contents"]["sums"]


def test_two_writers_on_one_collection_are_refused(tmp_path):
    from adaptive_decoder.lpo.store import CollectionWriter

    run(make_adm(), tmp_path, prompts(1))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    identity = {k: manifest[k] for k in ("base_model", "head", "settings", "tasks")}
    w = CollectionWriter(tmp_path, identity)
    with pytest.raises(RuntimeError, match=rf"another process is writing to the collection {tmp_path} \(pid {os.getpid()} on "):
        run(make_adm(), tmp_path, prompts(2))
    w.close()
    assert run(make_adm(), tmp_path, prompts(2))["prompts_collected"] == 1


def test_bad_prompts_and_settings(tmp_path):
    adm = make_adm()
    with pytest.raises(ValueError, match="duplicated prompt ids"):
        run(adm, tmp_path, prompts(2) + prompts(1))
    with pytest.raises(ValueError, match=r"no reward configured for task\(s\) \['other'\]"):
        collect(adm, prompts(1, task="other"), {"arith": build_reward({"gsm8k": {}})}, tmp_path, CollectionSettings(),
                progress=False)
    with pytest.raises(ValueError, match="num_samples must be >= 2"):
        CollectionSettings(num_samples=1)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['paht'\] for task 'gsm8k'"):
        load_task_prompts("x", {"task": "gsm8k", "paht": "a.jsonl", "reward": REWARD})
    with pytest.raises(ValueError, match="unknown task.*mmlu"):
        load_task_prompts("x", {"task": "mmlu", "path": "a.jsonl", "reward": REWARD})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "no answer"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: malformed record \(missing field 'answer'"):
        load_task_prompts("g", {"task": "gsm8k", "path": str(bad), "reward": REWARD})


def test_collection_prompts_come_from_tasks(tmp_path):
    cg = tmp_path / "cg.jsonl"
    cg.write_text('{"concept_set": "field_N#look_V#stand_V"}\n{"concepts": ["dog", "kite"]}\n')
    out = load_task_prompts("stories", {"task": "constrained_writing", "path": str(cg), "reward": REWARD})
    assert [o["concepts"] for o in out] == [["field", "look", "stand"], ["dog", "kite"]]
    assert "field, look, stand" in out[0]["prompt"] and [o["id"] for o in out] == ["stories/1", "stories/2"]
    tr = tmp_path / "tr.jsonl"
    tr.write_text('{"src_lang": "de", "tgt_lang": "en", "source": "Hallo", "reference": "Hello"}\n')
    (t,) = load_task_prompts("mt", {"task": "translation", "path": str(tr), "reward": REWARD})
    assert t["reference"] == "Hello" and "English" in t["prompt"] and "Hallo" in t["prompt"]
    a = load_task_prompts("a", {"task": "arithmetic", "num_prompts": 3, "offset": 2, "reward": REWARD})
    full = load_task_prompts("a", {"task": "arithmetic", "num_prompts": 5, "reward": REWARD})
    assert a == full[2:]  # offset keeps ids and content stable
    q = a[0]["prompt"].split("What is ")[1].split("?")[0]
    assert a[0]["answer"] == f"#### {eval(q)}"  # noqa: S307 (our own "a + b" string)
    # an entry's name is its task unless `task:` says otherwise; its examples are the task's, first after offset
    from adaptive_decoder.tasks import get_task

    out = load_task_prompts("constrained_writing", {"num_prompts": 3, "offset": 1})
    want = get_task("constrained_writing").examples()[1:4]
    assert [o["prompt"] for o in out] == [w["prompt"] for w in want]
    assert [o["id"] for o in out] == [f"constrained_writing/{w['id']}" for w in want]


@pytest.mark.parametrize("source, replacement", [("arithmetic", "task: arithmetic"), ("gsm8k", "task: gsm8k"),
                                                 ("commongen", "task: constrained_writing"),
                                                 ("translation", "task: translation"), ("prompts", "task: creative_writing"),
                                                 ("registry", "task: <the eval_task>")])
def test_the_old_source_form_is_refused_naming_its_replacement(source, replacement):
    with pytest.raises(ValueError) as e:
        load_task_prompts("x", {"source": source, "num_prompts": 2, "reward": REWARD})
    msg = str(e.value)
    assert "\n" not in msg and f"`source: {source}` is gone" in msg and replacement in msg
    with pytest.raises(ValueError, match="eval_task / task_options are gone: use `task: gsm8k`"):
        load_task_prompts("x", {"eval_task": "gsm8k", "task_options": {}})


def test_a_collection_made_from_an_old_source_spec_is_refused_in_one_line(tmp_path):
    from adaptive_decoder.lpo.store import CollectionWriter

    ps = prompts(2)
    run(make_adm(), tmp_path, ps)
    m = json.loads((tmp_path / "manifest.json").read_text())
    identity = {k: m[k] for k in ("base_model", "head", "settings", "tasks")}
    m["tasks"]["arith"] = {"source": "arithmetic", "num_prompts": 2, "seed": 0, "reward": REWARD}
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CollectionMismatchError) as e:
        CollectionWriter(tmp_path, identity)
    assert "\n" not in str(e.value) and "task 'arith' was collected from `source: arithmetic`, which is gone" in str(e.value)


def test_group_reward_scores_each_sample_against_a_same_values_twin(tmp_path):
    # novelty at sequence level: a greedy sample's twin is itself, so its novelty is exactly 0 (as the evaluation of
    # a head choosing T=0 sees it); scored against the mixed pool instead, greedy samples look novel
    spec = {"novelty": {"n": 1}, "fluency": {"weight": 0.1}}

    def go(out, twins):
        adm = make_adm("sequence", bins=(0.0, 1.5))
        ps = load_task_prompts("arith", {"task": "arithmetic", "num_prompts": 6, "data_seed": 0, "reward": spec})
        # seed 5: a draw where some prompt's pool holds a lone greedy sample (this head prefers T=0, and two greedy
        # samples of a prompt are identical, novelty 0 against each other, so most seeds have none)
        settings = CollectionSettings(num_samples=4, max_new_tokens=6, epsilon=0.5, prompts_per_batch=3,
                                      group_reward_twins=twins, seed=5)
        collect(adm, ps, {"arith": build_reward(spec, adm.model, adm.tokenizer)}, out, settings, progress=False)
        return read_collection(out)[1]

    with_twins, pooled = go(tmp_path / "twins", True), go(tmp_path / "pool", False)
    greedy = [r for r in with_twins if r["values"]["temperature"] == 0.0]
    hot = [r for r in with_twins if r["values"]["temperature"] > 0]
    assert greedy and hot
    assert all(r["rewards"]["novelty"] == 0.0 for r in greedy)
    assert any(r["rewards"]["novelty"] > 0 for r in hot)
    # same samples either way (the twin pass draws from its own seed); only the novelty term differs
    assert [r["completion"] for r in with_twins] == [r["completion"] for r in pooled]
    assert any(r["rewards"]["novelty"] > 0 for r in pooled if r["values"]["temperature"] == 0.0)


def test_group_reward_among_several_twins(tmp_path, monkeypatch):
    # twins=3: each sample is scored in a group of 4 (itself + 3 twins with its decoding values), as an evaluation
    # with num_samples=4 scores a head's one choice
    from adaptive_decoder import rewards as R

    seen = []
    orig = R.DistinctValid.score

    def spy(self, completions, examples):
        seen.append([e["id"] for e in examples])
        return orig(self, completions, examples)

    monkeypatch.setattr(R.DistinctValid, "score", spy)
    spec = {"distinct_valid": {"pattern": ".+"}}
    adm = make_adm("sequence", bins=(0.0, 1.5))
    ps = load_task_prompts("arith", {"task": "arithmetic", "num_prompts": 4, "data_seed": 0, "reward": spec})
    settings = CollectionSettings(num_samples=2, max_new_tokens=6, epsilon=0.5, prompts_per_batch=2, twins=3)
    assert settings.identity()["twins"] == 3 and CollectionSettings(num_samples=2).identity()["twins"] == 1
    collect(adm, ps, {"arith": build_reward(spec, adm.model, adm.tokenizer)}, tmp_path / "c", settings, progress=False)
    recs = read_collection(tmp_path / "c")[1]
    assert len(recs) == 8 and seen
    from collections import Counter

    for ids in seen:  # every group: 1 sample + 3 twins
        assert set(Counter(ids).values()) == {4}
    # a greedy sample's twins are identical to it: never distinct
    assert all(r["rewards"]["distinct_valid"] == 0.0 for r in recs if r["values"]["temperature"] == 0.0)
    with pytest.raises(ValueError, match="twins"):
        CollectionSettings(twins=0)


def test_group_size_mismatches_name_the_task_whose_group_reward_is_scored_in_another_group():
    # novelty among 2 (one twin) is not novelty among the evaluation's 8: the run says so and how to match it
    rewards = {"writing": build_reward({"concepts": {}, "novelty": {"n": 2}}), "copy": build_reward({"chrf": {}})}
    lines = group_size_mismatches(rewards, CollectionSettings(num_samples=4, twins=1), 8, "sequence")
    assert lines == ["task 'writing': collection scores novelty among 2 samples (twins: 1), the evaluation among 8; "
                     "`collect.twins: 7` scores it as evaluated"]
    assert group_size_mismatches(rewards, CollectionSettings(num_samples=4, twins=7), 8, "sequence") == []
    pool = group_size_mismatches(rewards, CollectionSettings(num_samples=4, group_reward_twins=False), 8, "sequence")
    assert pool == ["task 'writing': collection scores novelty among 4 samples (the exploration pool), the evaluation "
                    "among 8; `collect.twins: 7` scores it as evaluated"]
    assert group_size_mismatches(rewards, CollectionSettings(num_samples=4, twins=1), 8, "token") == []
