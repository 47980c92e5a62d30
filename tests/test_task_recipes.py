"""One task system: a head's training prompts (collection, HAG search, the experiment's train split) and its
evaluation prompts come from the same `Task`, rendered by the same template; and tasks' data by dataset id with a
local-copy override."""

import importlib
import json
from pathlib import Path

import pytest

from adaptive_decoder.evaluation.config import EvalConfig
from adaptive_decoder.evaluation.harness import eval_tasks
from adaptive_decoder.modeling.models import encode_prompts, format_prompt
from adaptive_decoder.tasks import available_tasks, get_task
from adaptive_decoder.tasks.io import DATA_ENV, DatasetUnavailableError
from conftest import needs_data, tiny_tokenizer, training_recipe

ROOT = Path(__file__).resolve().parents[1]
N = 3


def _recipe(name):
    return training_recipe(name)


def chat_tokenizer():
    tok = tiny_tokenizer()
    tok.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>"
    return tok


@pytest.mark.parametrize("name", available_tasks())
def test_training_and_evaluation_prompts_are_rendered_by_the_same_template(name):
    collect = importlib.import_module("adaptive_decoder.cli.collect")  # the recipe training/collect.py runs
    build_hag = _recipe("build_hag_data")
    from adaptive_decoder.experiment.config import ExperimentConfig
    from adaptive_decoder.experiment.splits import make_splits

    # collection (training/collect.py) and the evaluation suite, from one `tasks:` entry each
    _, train = needs_data(lambda: collect.collect_prompts({name: {"num_prompts": N}}))
    (task,) = eval_tasks(EvalConfig(tasks={name: {}}, methods=["greedy"], num_dev_prompts=0)).values()
    evaluated = {ex["id"]: ex for ex in task.examples()}
    assert len(train) == N
    for p in train:
        ex = evaluated[p["id"].split("/", 1)[1]]  # the same example ...
        assert p["prompt"] == ex["prompt"]  # ... gives the same user message ...
        for chat in (True, False):  # ... and the same text the model reads, with and without the chat template
            tok = chat_tokenizer()
            assert format_prompt(tok, p["prompt"], chat) == format_prompt(tok, ex["prompt"], chat)
            assert (encode_prompts(tok, [p["prompt"]], chat=chat)["input_ids"].tolist()
                    == encode_prompts(tok, [ex["prompt"]], chat=chat)["input_ids"].tolist())
    # HAG search data and the experiment's train split render them the same way too
    _, searched = build_hag.load_examples({name: {"num_prompts": N, "seed": 0}})
    for p in searched:
        assert p["prompt"] == evaluated[p["id"].split("/", 1)[1]]["prompt"]
    n = len(evaluated)
    if n >= 3:
        ecfg = ExperimentConfig(run_dir="unused", tasks={name: {"num_train": 1, "num_dev": 0, "num_test": 1}},
                                methods=["greedy", "fixed", "adaptive"])
        for split in make_splits(ecfg)[name].values():
            for ex in split:
                assert ex["prompt"] == evaluated[ex["id"]]["prompt"]


def test_one_entry_shape_with_a_label_and_options_in_every_recipe():
    collect = importlib.import_module("adaptive_decoder.cli.collect")  # the recipe training/collect.py runs
    entry = {"task": "constrained_writing", "template": "Use the words {words}.", "max_new_tokens": 12,
             "reward": {"concepts": {}}}
    tasks, prompts = collect.collect_prompts({"stories": {**entry, "num_prompts": 2, "offset": 1}})
    (task,) = eval_tasks(EvalConfig(tasks={"stories": {**entry, "num_prompts": 2}}, methods=["greedy"],
                                    num_dev_prompts=0)).values()
    assert [p["prompt"] for p in prompts] == [e["prompt"] for e in task.examples()[1:3]]
    assert prompts[0]["prompt"].startswith("Use the words ") and {p["task"] for p in prompts} == {"stories"}
    assert tasks["stories"].reward_spec == task.reward_spec == {"concepts": {}}
    assert tasks["stories"].max_new_tokens == task.max_new_tokens == 12
    spec = collect.collection_specs({"stories": {**entry, "num_prompts": 2}}, tasks)["stories"]
    assert spec == {"reward": {"concepts": {}}, "max_new_tokens": 12, "num_prompts": 2,
                    "task_options": {k: v for k, v in entry.items()}}


# --- data by dataset id ---------------------------------------------------------------------------------------------
def _offline(monkeypatch):
    import datasets

    def refuse(*a, **k):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (OfflineModeIsEnabled)\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    monkeypatch.delenv(DATA_ENV, raising=False)


def test_without_network_and_without_the_file_the_error_is_one_line(monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(DatasetUnavailableError) as e:
        get_task("gsm8k", dataset="gsm8k").examples()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("task 'gsm8k': dataset 'openai/gsm8k' (config 'main') split 'test'")
    assert "`path: FILE`" in msg and f"{DATA_ENV}=DIR with the file DIR/gsm8k/test.jsonl" in msg
    # a task file naming its public dataset says the same, with its own name and file
    with pytest.raises(DatasetUnavailableError) as e:
        get_task("copy_text").examples()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("task 'copy_text': dataset 'haoranxu/WMT22-Test' (config 'en-de')")
    assert "DIR/translation/wmt22.en-de.jsonl" in msg


def test_a_data_files_task_reads_a_local_jsonl_through_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps({"q": f"question {i}", "a": str(i)}) + "\n" for i in range(4)))
    (tmp_path / "qa.yaml").write_text(
        "task: my_qa\ndataset: {hf_id: json, data_files: qa.jsonl, hf_split: train}\n"  # relative to the task file
        "fields: {question: q, answer: a}\ntemplate: 'Q: {question}'\nreward: {exact_match: {}}\n")
    task = get_task(str(tmp_path / "qa.yaml"))
    exs = task.examples()
    assert [e["prompt"] for e in exs] == [f"Q: question {i}" for i in range(4)]
    assert [e["answer"] for e in exs] == ["0", "1", "2", "3"] and task.source.startswith("hf:json")


def test_the_local_copy_overrides_the_hub(tmp_path, monkeypatch):
    _offline(monkeypatch)  # any hub access would fail
    rows = [{"src_lang": "en", "tgt_lang": "de", "source": " ".join(["word"] * 25) + f" {i}", "reference": "x"}
            for i in range(3)]
    (tmp_path / "translation").mkdir()
    (tmp_path / "translation" / "wmt22.en-de.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    task = get_task("copy_text")
    assert task.source == str(tmp_path / "translation" / "wmt22.en-de.jsonl") and len(task.examples()) == 3
    # `path:` wins over both
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(rows[0]) + "\n")
    assert get_task("copy_text", path=str(other)).source == str(other)
    t = get_task("translation", dataset="wmt22.en-de")
    assert [e["source"] for e in t.examples()] == [r["source"] for r in rows]


def test_hub_rows_are_brought_to_the_local_format(monkeypatch):
    import datasets

    calls = []

    def fake(hf_id, config=None, split=None, revision=None, data_files=None):
        calls.append((hf_id, config, split, revision))
        if hf_id == "allenai/common_gen":
            return [{"concept_set_idx": i // 2, "concepts": ["dog", "kite", str(i // 2)], "target": "t"} for i in range(4)]
        return [{"de-en": {"de": "Hallo Welt", "en": "Hello world"}}]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    monkeypatch.delenv(DATA_ENV, raising=False)
    (ex,) = get_task("translation", dataset="wmt22.de-en", hf_revision="abc123").examples()
    assert calls[-1] == ("haoranxu/WMT22-Test", "de-en", "test", "abc123")
    assert ex["prompt"] == ("Translate the following German text into English. Reply with the translation only.\n\n"
                            "Hallo Welt") and ex["reference"] == "Hello world"
    exs = get_task("constrained_writing", dataset="commongen.dev").examples()  # one prompt per concept set
    assert [e["concepts"] for e in exs] == [["dog", "kite", "0"], ["dog", "kite", "1"]]
    with pytest.raises(ValueError, match="unknown dataset 'wmt99'"):
        get_task("translation", dataset="wmt99")


def test_gsm8k_shots_come_from_the_train_split_of_its_public_dataset(tmp_path, monkeypatch):
    _offline(monkeypatch)
    (tmp_path / "gsm8k").mkdir()
    for split, q in (("test", "How many?"), ("train", "Shot question?")):
        (tmp_path / "gsm8k" / f"{split}.jsonl").write_text(json.dumps({"question": q, "answer": "x\n#### 3"}) + "\n")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    (ex,) = get_task("gsm8k", dataset="gsm8k", num_fewshot=1).examples()
    assert "Question: Shot question?\nAnswer: x\n#### 3" in ex["prompt"] and ex["prompt"].endswith("How many?\nAnswer:")


def test_the_list_form_from_the_command_line_is_refused_in_one_line():
    from adaptive_decoder.tasks.recipe import task_entries

    with pytest.raises(ValueError, match=r"is no longer read: .*\(tasks: \{gsm8k: \{\}, translation: \{\}\}\)"):
        task_entries("[gsm8k, translation]")
    assert task_entries('{gsm8k: {num_fewshot: 0}, translation: null}') == {"gsm8k": {"num_fewshot": 0}, "translation": {}}
    with pytest.raises(ValueError, match="`source: registry` is gone: use `task: gsm8k`"):
        task_entries({"g": {"source": "registry", "eval_task": "gsm8k"}})


# --- what a run records of a task: the digest of what its entry resolves to ---------------------------------
def _digest(name, opts=None):
    from adaptive_decoder.tasks.identity import task_digest
    from adaptive_decoder.tasks.recipe import build_task, task_entries

    ((name, opts),) = task_entries({name: opts or {}}).items()
    return task_digest(build_task(name, opts))


def test_the_task_digest_follows_the_task_file_and_its_data_not_where_they_are(tmp_path):
    import yaml

    from adaptive_decoder.tasks.data_task import PACKAGED_TASK_DIR

    spec = yaml.safe_load((PACKAGED_TASK_DIR / "control_qa.yaml").read_text())
    data = (ROOT / "adaptive_decoder" / "tasks" / "data" / "control_qa.jsonl").read_text()
    task_file = tmp_path / "qa.yaml"

    def write(where, lines, **edit):
        where.mkdir(exist_ok=True)
        (where / "qa.jsonl").write_text(lines)
        task_file.write_text(yaml.safe_dump({**spec, "task": "qa", "dataset": {"path": str(where / "qa.jsonl")},
                                             **edit}))
        return _digest(str(task_file))

    base = write(tmp_path / "a", data)
    assert write(tmp_path / "b", data) == base  # the same records under another directory
    assert _digest(str(task_file), {"max_new_tokens": spec.get("max_new_tokens")}) == base  # its own value, written out
    changed = {"a changed record": write(tmp_path / "a", data.replace("\n", " \n", 1)),
               "template": write(tmp_path / "a", data, template="Q: " + spec["template"]),
               "reward": write(tmp_path / "a", data, reward={"exact_match": {}}),
               "filter": write(tmp_path / "a", data, filter=["strip"]),
               "max_new_tokens": write(tmp_path / "a", data, max_new_tokens=3)}
    assert base not in changed.values() and len(set(changed.values())) == len(changed), changed


def test_the_task_digest_of_a_python_task_holds_its_resolved_options_not_its_label():
    assert _digest("gsm8k") == _digest("gsm8k", {"num_fewshot": 0}) == _digest("math", {"task": "gsm8k"})
    assert _digest("gsm8k", {"num_fewshot": 2}) != _digest("gsm8k")
    assert _digest("arithmetic", {"reward": {"exact_match": {}}}) != _digest("arithmetic")
    assert _digest("arithmetic", {"data_seed": 1}) != _digest("arithmetic")
