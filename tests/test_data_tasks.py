"""Tasks defined as data (adaptive_decoder/tasks/configs/*.yaml, adaptive_decoder.tasks.data_task): a task file round-trips
against the Python task it mirrors, and every kind of bad task file stops with an error naming the file and key."""

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import shared_data

from adaptive_decoder.rewards import build_reward
from adaptive_decoder.tasks import TaskFileError, available_tasks, get_task, is_task
from adaptive_decoder.tasks.data_task import PACKAGED_TASK_DIR, apply_filters

REPO = Path(__file__).resolve().parents[1]


def write_task(tmp_path, spec, name="t"):
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def data(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


BASE = {"dataset": {"path": "d.jsonl"}, "fields": ["text", "answer"], "template": "Repeat: {text}",
        "reward": {"exact_match": {}}, "filter": ["first_line"]}


def test_translation_task_file_round_trips_against_python_task():
    py, yt = get_task("translation"), get_task("translation_en_de")
    assert is_task("translation_en_de") and "translation_en_de" in available_tasks()
    pe, ye = py.examples(), yt.examples()
    assert [e["id"] for e in pe] == [e["id"] for e in ye]
    assert [e["prompt"] for e in pe] == [e["prompt"] for e in ye]
    assert [e["reference"] for e in pe] == [e["reference"] for e in ye]
    assert [e["id"] for e in yt.split(8, 4, 1)[0]] == \
        [e["id"] for e in get_task("translation_en_de").split(8, 4, 1)[0]]
    texts = ["Das Wetter ist heute schön.\nNote: literal", "", "  \nWetter schön", "Ich weiß nicht"]
    for p, y in zip(pe[:3], ye[:3]):
        a, _ = py.setup_scoring().score(texts, p)
        b, _ = yt.setup_scoring().score(texts, y)
        assert [s["reward"] for s in a] == pytest.approx([s["reward"] for s in b])


def test_task_file_by_path_with_relative_data_and_options(tmp_path):
    data(tmp_path, [{"text": "red fox", "answer": "red fox", "extra": 1}, {"text": " blue sky ", "answer": "blue sky"}])
    p = write_task(tmp_path, {**BASE, "max_new_tokens": 8, "splits": {"num_test": 1}})
    t = get_task(str(p))
    assert t.name == "t" and t.max_new_tokens == 8  # the file's stem, not the path it was loaded by
    ex = t.examples()
    assert [e["prompt"] for e in ex] == ["Repeat: red fox", "Repeat: blue sky"] and "extra" not in ex[0]
    s, _ = t.setup_scoring().score(["Red fox!\nmore", "red", ""], ex[0])
    assert [x["reward"] for x in s] == [1.0, 0.0, 0.0]
    assert get_task(str(p), template="Say {text}").examples()[0]["prompt"] == "Say red fox"


def test_a_task_file_is_named_by_its_task_key_or_stem_whatever_path_loads_it(tmp_path, monkeypatch):
    from adaptive_decoder.tasks import check_tasks, task_name

    data(tmp_path, [{"text": "red fox", "answer": "red fox"}])
    plain = write_task(tmp_path, BASE, name="my_task")
    keyed = write_task(tmp_path, {**BASE, "task": "renamed"}, name="other")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADAPTIVE_DECODER_TASK_PATH", str(tmp_path))
    for how in (str(plain), "my_task.yaml", "./my_task.yaml", "my_task"):  # absolute, relative, by name
        assert get_task(how).name == task_name(how) == "my_task", how
    for how in (str(keyed), "other.yaml", "other"):
        assert get_task(how).name == task_name(how) == "renamed", how
    assert task_name("gsm8k") == get_task("gsm8k").name == "gsm8k"
    (tmp_path / "sub").mkdir()
    twin = write_task(tmp_path / "sub", {**BASE, "dataset": {"path": "../d.jsonl"}}, name="my_task")
    with pytest.raises(ValueError) as e:
        check_tasks([str(plain), str(twin)])
    assert str(e.value) == (f"tasks {str(plain)!r} and {str(twin)!r} are both named 'my_task' (a task file's task: "
                            "key, else its file name); give one another task: key")


def test_select_keeps_records_by_word_count_with_their_file_index(tmp_path):
    data(tmp_path, [{"text": "one", "answer": "a"}, {"text": "one two three", "answer": "b"},
                    {"text": "one two three four five", "answer": "c"}, {"text": "one two", "answer": "d"}])
    t = get_task(str(write_task(tmp_path, {**BASE, "select": {"field": "text", "min_words": 2, "max_words": 3}})))
    assert [(e["id"], e["answer"]) for e in t.examples()] == [("2", "b"), ("4", "d")]  # 1-based line numbers
    t = get_task(str(write_task(tmp_path, {**BASE, "select": {"field": "text", "min_words": 4}}, name="u")))
    assert [e["answer"] for e in t.examples()] == ["c"]
    t = get_task(str(write_task(tmp_path, {**BASE, "select": {"field": "nope"}}, name="v")))
    with pytest.raises(TaskFileError, match=r"select\.field"):
        t.examples()


def test_filters():
    assert apply_filters("  \n 42.\nx", ["first_line", {"regex": r"^(\d+)\.?$", "group": 1}]) == "42"
    assert apply_filters("Number: 42", ["first_line", {"regex": r"^(\d+)\.?$", "group": 1}]) == ""
    assert apply_filters(" AbC ", ["strip", "lower"]) == "abc"


def test_distinct_valid_and_exact_match_rewards():
    r = build_reward({"distinct_valid": {"min": 1, "max": 100}})
    ex = [{"id": "a"}] * 5 + [{"id": "b"}] * 2
    assert r.score(["5", "5", "7", "101", "x", "5", "6"], ex) == [0, 0, 1, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="single sample"):
        r.score(["5"], [{"id": "a"}])
    m = build_reward({"exact_match": {"field": "gold", "ignore_case": False}})
    assert m.score(["Hi there", "hi there"], [{"gold": "Hi  there."}] * 2) == [1.0, 0.0]


@pytest.mark.parametrize("change, key", [
    ({"template": None}, "template"),                                   # a missing required key
    ({"reward": None}, "reward"),
    ({"reward": {"no_such_reward": {}}}, "reward"),                     # an unknown reward
    ({"reward": {"exact_match": {"bogus": 1}}}, "reward.exact_match"),  # an unknown reward option
    ({"colour": "red"}, "colour"),                                      # an unknown key
    ({"template": "Repeat: {missing}"}, "template"),                   # a template field not in fields
    ({"dataset": {"path": "d.jsonl", "hf_id": "x/y"}}, "dataset"),
    ({"filter": ["shout"]}, "filter[0]"),
    ({"splits": {"num_test": -1}}, "splits"),
    ({"select": {"min_words": 2}}, "select"),                           # a selection without its field
    ({"select": {"field": "text", "max_words": "ten"}}, "select.max_words"),
])
def test_bad_task_file_names_file_and_key(tmp_path, change, key):
    data(tmp_path, [{"text": "a", "answer": "a"}])
    spec = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    p = write_task(tmp_path, spec)
    with pytest.raises(TaskFileError) as e:
        get_task(str(p))
    assert str(p) in str(e.value) and f"key {key!r}" in str(e.value)


@pytest.mark.parametrize("rows, match", [
    ([], "no valid record"),                              # empty data
    ([{"text": "a"}], "missing field 'answer'"),          # a record lacking a field
])
def test_bad_task_data_names_file_and_key(tmp_path, rows, match):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = write_task(tmp_path, BASE)
    with pytest.raises(TaskFileError, match=match) as e:
        get_task(str(p)).examples()
    assert str(p) in str(e.value) and "key 'dataset'" in str(e.value)
    with pytest.raises(TaskFileError, match="not found"):
        get_task(str(write_task(tmp_path, {**BASE, "dataset": {"path": "nope.jsonl"}}, "u"))).examples()


def test_every_shipped_task_file_loads():
    files = sorted(PACKAGED_TASK_DIR.glob("*.yaml")) + sorted((REPO / "configs" / "tasks").glob("*.yaml"))
    assert files
    from adaptive_decoder.tasks.io import DatasetUnavailableError

    for f in files:
        t = get_task(f.stem)
        if t.path and not Path(t.path).exists():  # a task on ../shared data, absent here: it must say so
            with pytest.raises(TaskFileError, match="not found"):
                t.examples()
            continue
        try:
            examples = t.examples()
        except DatasetUnavailableError as e:  # a public dataset, offline and with no local copy: one line saying how
            assert f"task {f.stem!r}" in str(e) and "ADAPTIVE_DECODER_DATA" in str(e) and "\n" not in str(e)
            continue
        assert examples and examples[0]["prompt"]


def test_fewshot_copy_asks_for_copy_texts_records_and_no_shot_is_ever_a_prompt():
    path = str(shared_data("translation/wmt22.en-de.jsonl"))
    plain, few = get_task("copy_text", path=path), get_task("copy_text_fewshot", path=path)
    assert [e["id"] for e in few.examples()] == [e["id"] for e in plain.examples()]
    ex = few.examples()[0]
    shots = re.findall(r"Text: (.+)\nCopy: \1\n\n", ex["prompt"])
    assert len(shots) == 3 and ex["prompt"].endswith(f"Text: {ex['text']}\nCopy:")
    texts = {e["text"] for e in few.examples()}
    assert not texts & set(shots)  # the shots are 16-17 words, below the selection's 20
    # a base model goes on after the copy with the next block: only the first line is scored
    s, _ = few.setup_scoring().score([f" {ex['text']}\n\nText: Something else.\nCopy: Something else.",
                                      "\n" + ex["text"][:20]], ex)
    assert s[0]["reward"] == pytest.approx(1.0) and s[1]["reward"] < 0.6


# base-model forms of the mixed-traffic tasks: (the chat-model task, one shot as a regex capturing its input, the
# record field a shot's input stands for, the prompt's last block, a reply that scores 1 built from a record)
FEWSHOT = {
    "control_qa_fewshot": ("control_qa", r"Question: (.+)\nAnswer: .+\n\n", "question",
                           "Question: {question}\nAnswer:", lambda e: " " + e["answer"].split("|")[0]),
    "arithmetic_simple_fewshot": ("arithmetic_simple", r"Question: What is (.+)\?\nAnswer: .+\n\n", "question",
                                  "Question: What is {question}?\nAnswer:", lambda e: " " + e["answer"][5:]),
    "translation_wmt_short_fewshot": ("translation_wmt_short", r"English: (.+)\nGerman: .+\n\n", "source",
                                      "English: {source}\nGerman:", lambda e: " " + e["reference"]),
    "list_items_fewshot": ("list_items", r"Name \d+ different (.+): .+\n\n", "category",
                           "Name {n} different {category}:", lambda e: " " + ", ".join(["apple", "pear", "plum",
                                                                                        "fig", "kiwi"][:e["n"]])),
}


@pytest.mark.parametrize("name", sorted(FEWSHOT))
def test_fewshot_tasks_ask_their_chat_tasks_records_score_the_first_line_and_no_shot_is_a_prompt(name):
    plain_name, shot_re, field, last_block, good = FEWSHOT[name]
    path = str(shared_data("translation/wmt22.en-de.jsonl")) if "translation" in name else None
    plain, few = get_task(plain_name, path=path), get_task(name, path=path)
    examples = few.examples()
    assert [e["id"] for e in examples] == [e["id"] for e in plain.examples()]
    assert all(e["prompt"].endswith("\n\n" + last_block.format(**e)) for e in examples)
    shots = re.findall(shot_re, examples[0]["prompt"])
    assert len(shots) == 3 and not set(shots) & {str(e[field]) for e in examples}
    # a base model goes on after its answer with the next block: only the first line is scored, and it scores as
    # the chat task scores the same answer alone
    ex = examples[1]
    next_block = examples[0]["prompt"].split("\n\n")[0]
    ours, _ = few.setup_scoring().score([good(ex) + "\n\n" + next_block, "\n" + next_block], ex)
    theirs, _ = plain.setup_scoring().score([good(ex).strip(), next_block.splitlines()[0]], ex)
    assert [s["reward"] for s in ours] == pytest.approx([s["reward"] for s in theirs])
    assert ours[0]["reward"] > ours[1]["reward"]
    if name != "list_items_fewshot":  # list_items' novelty term depends on the other samples
        assert ours[0]["reward"] == pytest.approx(1.0)


def test_control_tasks_score_by_construction():
    qa, num, ph = get_task("control_qa"), get_task("control_numbers"), get_task("control_phrase")
    q = next(e for e in qa.examples() if e["answer"] == "Paris")
    s, _ = qa.setup_scoring().score(["The capital of France is Paris.\nMore", "Lyon", "Paris is"], q)
    assert [x["reward"] for x in s] == [1.0, 0.0, 1.0]
    n = num.examples()[0]
    s, _ = num.setup_scoring().score(["7", "7 \nmore", "3.", "The number is 4", "", "I can't"], n)
    assert [x["reward"] for x in s] == [0.0, 0.0, 1.0, 1.0, 0.0, 1.0]  # repeats (greedy-like) and silence score 0
    p = ph.examples()[0]
    assert p["phrase"] in p["prompt"]
    s, _ = ph.setup_scoring().score([p["phrase"] + " there was a dog.", p["phrase"] + " there was a dog.",
                                     "Nothing like it"], p)
    assert [x["exact_match"] for x in s] == [1.0, 1.0, 0.0] and s[0]["novelty"] == 0.0


@pytest.mark.slow
def test_shipped_control_qa_is_answered_at_greedy(smollm2):
    """The positive control's low-temperature side is built from questions SmolLM2 answers right at greedy, so
    greedy is its best setting by construction: the shipped file must still satisfy that (same template, filter
    and reward as the task file)."""
    import importlib.util

    path = REPO / "eval" / "make_control_data.py"
    spec = importlib.util.spec_from_file_location("make_control_data", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    recs = [{"question": e["question"], "answer": e["answer"]} for e in get_task("control_qa").examples()]
    model, tok = smollm2
    assert mod.keep_greedy_correct(recs, model=model, tokenizer=tok) == recs


def test_first_line_complete_says_when_no_continuation_changes_the_first_line():
    from adaptive_decoder.tasks.translation import first_line, first_line_complete

    assert not any(map(first_line_complete, ["", "  ", " \n\n", "\u2028 ", "abc", "  abc def"]))
    assert all(map(first_line_complete, ["abc\n", " \n abc\r", "abc\u2028x", "a\x0b", "a \n\n"]))
    # every prefix that says "complete" already has the final text's first line, for every line break
    # str.splitlines knows (the ones first_line splits at)
    import random

    rng = random.Random(0)
    alphabet = ["a", "b", " ", "\t", "\xa0", "\n", "\r", "\u2028", "\x0b", "\x85", "é"]
    checked = 0
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        for i in range(len(text) + 1):
            if first_line_complete(text[:i]):
                assert first_line(text[:i]) == first_line(text), repr(text[:i])
                checked += 1
    assert checked > 1000


def test_stop_predicate_only_where_the_filter_ends_the_scored_text_at_the_first_line(tmp_path):
    from adaptive_decoder.tasks.translation import first_line_complete

    data(tmp_path, [{"text": "a", "answer": "a"}])
    pred = {}
    for name, steps in {"plain": ["first_line"], "after": ["strip", "lower", "first_line", {"regex": "a"}],
                        "none": ["strip"], "regex_first": [{"regex": "a"}, "first_line"]}.items():
        pred[name] = get_task(str(write_task(tmp_path, {**BASE, "filter": steps}, name))).stop_predicate()
    assert pred == {"plain": first_line_complete, "after": first_line_complete, "none": None, "regex_first": None}
    assert get_task("translation").stop_predicate() is first_line_complete
    assert get_task("gsm8k").stop_predicate() is None
