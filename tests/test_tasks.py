"""Tasks: loading (local files, HF ids, shared data), prompts, answer extraction, scoring, and bad input."""

import json
import logging
import sys

import pytest
from sacrebleu.metrics import BLEU, CHRF

from adaptive_decoder.tasks import TASKS, DataFormatError, get_task, read_jsonl, strip_pos
from adaptive_decoder.tasks.metrics import distinct_n_across, self_bleu
from adaptive_decoder.tasks.translation import corpus_scores, first_line
from conftest import shared_data


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def scored(task, texts, example):
    task.setup_scoring()
    return task.score(texts, example)


# --- GSM8K ------------------------------------------------------------------------------------------------
def test_gsm8k_strict_and_flexible_are_reported_separately():
    t = get_task("gsm8k")
    ex = {"id": "0", "prompt": "q", "answer": "He earns 1,200.50 dollars.\n#### 1,200.50"}
    samples, _ = scored(t, ["So he earns $1,200.50.",           # flexible only: no '#### '
                            "Total: 1200.5\n#### 1200.5",       # both (numeric equality, 1200.50 == 1200.5)
                            "#### 1,200.50 and later 7 cats",   # strict right, flexible takes the last number (7)
                            "I think #### 12"], ex)            # both wrong
    assert [s["acc_flexible"] for s in samples] == [1.0, 1.0, 0.0, 0.0]
    assert [s["acc_strict"] for s in samples] == [0.0, 1.0, 1.0, 0.0]
    assert [s["reward"] for s in samples] == [1.0, 1.0, 0.0, 0.0]  # reward = flexible accuracy


def test_gsm8k_zero_shot_and_k_shot_prompts(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [
        {"question": "Tom has 48 apples and gives half away. How many are left?", "answer": "48/2 = <<48/2=24>>24\n#### 24"},
        {"question": "What is 2+3?", "answer": "2+3=<<2+3=5>>5\n#### 5"}])
    test = write_jsonl(tmp_path / "test.jsonl", [{"question": "What is 7*6?", "answer": "#### 42"}])
    zero = get_task("gsm8k", path=str(test)).examples()[0]["prompt"]
    assert zero.endswith("Question: What is 7*6?") and "####" in zero and zero.count("Question:") == 1
    two = get_task("gsm8k", path=str(test), num_fewshot=2, fewshot_path=str(train)).examples()[0]["prompt"]
    assert two.count("Question:") == 3 and two.endswith("Question: What is 7*6?\nAnswer:")
    assert "<<" not in two and "48/2 = 24\n#### 24" in two  # calculator annotations removed from the shots
    with pytest.raises(ValueError, match="fewshot_path"):
        get_task("gsm8k", path=str(test), num_fewshot=1)
    with pytest.raises(ValueError, match="only 2 examples"):
        get_task("gsm8k", path=str(test), num_fewshot=3, fewshot_path=str(train))


def test_gsm8k_builtin_set_has_answers_and_k_shot_works():
    t = get_task("gsm8k", num_fewshot=3)
    exs = t.examples()
    assert len(exs) == 60 and exs[0]["prompt"].count("Question:") == 4
    t.setup_scoring()
    gold_text = exs[0]["answer"]  # scoring the gold solution itself must be correct under both extractions
    s, _ = t.score([gold_text], exs[0])
    assert s[0]["acc_strict"] == s[0]["acc_flexible"] == 1.0


# --- translation ------------------------------------------------------------------------------------------
def test_translation_scores_first_line_and_matches_sacrebleu():
    t = get_task("translation")
    ex = {"id": "0", "prompt": "p", "reference": "Das Wetter ist heute schön.", "tgt_lang": "de"}
    samples, _ = scored(t, ["Das Wetter ist heute schön.\n\nNote: this is a translation.", "", "Das Wetter ist gut."], ex)
    assert samples[0]["chrf"] == pytest.approx(1.0)  # the note after the first line is cut by the filter
    assert samples[1]["chrf"] == 0.0 and samples[1]["reward"] == 0.0
    assert samples[2]["chrf"] == pytest.approx(CHRF().sentence_score("Das Wetter ist gut.", [ex["reference"]]).score / 100)
    assert first_line("\n\n  Hallo Welt \nmore") == "Hallo Welt"
    hyps, refs = ["Das ist gut.", "Ein Hund."], ["Das ist sehr gut.", "Ein Hund bellt."]
    c = corpus_scores([(h, r, "de") for h, r in zip(hyps, refs)])
    assert c["corpus_bleu"] == pytest.approx(BLEU().corpus_score(hyps, [refs]).score)
    assert c["corpus_chrf"] == pytest.approx(CHRF().corpus_score(hyps, [refs]).score)


def test_translation_hf_style_rows_need_languages(tmp_path):
    f = write_jsonl(tmp_path / "t.jsonl", [{"translation": {"de": "Hallo", "en": "Hello"}}])
    ex = get_task("translation", path=str(f), src_lang="de", tgt_lang="en").examples()[0]
    assert ex["source"] == "Hallo" and ex["reference"] == "Hello" and "German text into English" in ex["prompt"]
    with pytest.raises(DataFormatError, match=r"t\.jsonl:1: .*src_lang"):
        get_task("translation", path=str(f)).examples()


def test_translation_max_source_words_keeps_short_segments(tmp_path):
    rows = [{"src_lang": "en", "tgt_lang": "de", "source": "one two three", "reference": "eins zwei drei"},
            {"src_lang": "en", "tgt_lang": "de", "source": "a much longer source sentence here", "reference": "x"}]
    f = write_jsonl(tmp_path / "t.jsonl", rows)
    assert len(get_task("translation", path=str(f)).examples()) == 2
    exs = get_task("translation", path=str(f), max_source_words=3).examples()
    assert [e["source"] for e in exs] == ["one two three"] and exs[0]["id"] == "1"  # line number: stable under the filter


# --- constrained / creative writing ---------------------------------------------------------------------
def test_commongen_suffixes_are_stripped(tmp_path):
    assert strip_pos("look_V") == "look" and strip_pos("field_N") == "field" and strip_pos("ice_cream") == "ice_cream"
    f = write_jsonl(tmp_path / "cg.jsonl", [{"concept_set": "field_N#look_V#stand_V", "scene": ["x"]},
                                            {"concepts": ["dog", "frisbee_N"]}])
    exs = get_task("constrained_writing", path=str(f)).examples()
    assert exs[0]["concepts"] == ["field", "look", "stand"] and exs[1]["concepts"] == ["dog", "frisbee"]
    assert exs[0]["prompt"].endswith("uses all of these words: field, look, stand.")


def test_constrained_writing_scores_and_diversity():
    t = get_task("constrained_writing")
    ex = {"id": "0", "prompt": "p", "concepts": ["dog", "river", "lantern"]}
    samples, per_prompt = scored(t, ["The dog ran to the river with a lantern.", "The dog slept.", ""], ex)
    assert [s["concepts"] for s in samples] == pytest.approx([1.0, 1 / 3, 0.0])
    assert samples[0]["reward"] == pytest.approx(0.5 * 1.0 + 0.5 * 1.0)
    assert samples[2]["reward"] == 0.0  # empty: no coverage, repetition's empty score 0
    assert set(per_prompt) == {"self_bleu", "distinct_1", "distinct_2"}
    assert "fluency" not in samples[0]  # no scorer model given -> fluency is not reported (not faked)


def test_diversity_metrics_hand_computed():
    # words: [a b a] + [a b] -> 2 unique of 5; bigrams (a b)(b a)(a b) -> 2 unique of 3
    assert distinct_n_across(["a b a", "a b"], 1) == pytest.approx(2 / 5)
    assert distinct_n_across(["a b a", "a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n_across(["", "   "], 1) is None
    same = "the cat sat on the mat today"
    assert self_bleu([same, same, same]) == pytest.approx(100.0)
    assert self_bleu(["alpha beta gamma delta", "one two three four"]) == pytest.approx(0.0)
    assert self_bleu(["only one"]) is None
    assert self_bleu(["", "some words here"]) == 0.0


def test_eqbench_json_expands_seed_modifiers(tmp_path):
    f = tmp_path / "cw.json"
    f.write_text(json.dumps({"7": {"writing_prompt": "Write about <SEED>.", "seed_modifiers": ["a fox", "rain"]},
                             "8": {"writing_prompt": "No seed here."}}))
    exs = get_task("creative_writing", path=str(f)).examples()
    assert [(e["id"], e["prompt"]) for e in exs] == [("7:0", "Write about a fox."), ("7:1", "Write about rain."),
                                                    ("8:0", "No seed here.")]
    assert len(get_task("creative_writing", path=str(f), seeds_per_prompt=1).examples()) == 2
    f.write_text("{not json")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        get_task("creative_writing", path=str(f)).examples()


def test_creative_writing_reward_choice():
    assert get_task("creative_writing").reward_spec == {"repetition": {"weight": 1.0, "n": 3}, "fluency": {"weight": 0.1}}
    assert get_task("creative_writing", reward_model="some/rm").reward_spec == {"reward_model": {"path": "some/rm"}}
    with pytest.raises(ValueError, match="needs the scorer model"):
        get_task("creative_writing").setup_scoring()
    t = get_task("creative_writing", reward={"repetition": {"n": 2}})
    s, per = scored(t, ["", "go go go go"], {"id": "0", "prompt": "p"})
    assert s[0]["reward"] == 0.0 and s[1]["reward"] == pytest.approx(1 - 2 / 3)


# --- bad input --------------------------------------------------------------------------------------------
def test_unknown_task_and_option_list_valid_ones():
    # the valid names: the Python tasks and the task files (adaptive_decoder/tasks/configs/*.yaml)
    with pytest.raises(ValueError, match=r"unknown task 'gsm9k'; valid: \[.*'constrained_writing', .*'control_qa', .*'gsm8k', "
                                         r".*'translation'.*\] \(or a path"):
        get_task("gsm9k")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['shots'\] for task 'gsm8k'; valid: .*num_fewshot"):
        get_task("gsm8k", shots=3)


def test_missing_file_names_path_and_format(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=rf"{missing}.*\"question\": str, \"answer\""):
        get_task("gsm8k", path=str(missing)).examples()
    with pytest.raises(FileNotFoundError, match=r"src_lang.*reference"):
        get_task("translation", path=str(missing)).examples()


def test_malformed_line_fails_with_line_number_or_is_skipped(tmp_path, caplog):
    f = write_jsonl(tmp_path / "g.jsonl", [{"question": "1+1?", "answer": "#### 2"}, "",
                                           '{"question": "broken", "answer": ',
                                           {"question": "no answer"},
                                           {"question": "2+2?", "answer": "#### 4"}])
    with pytest.raises(DataFormatError, match=r"g\.jsonl:3: malformed record.*on_bad_line='skip'"):
        get_task("gsm8k", path=str(f)).examples()
    with caplog.at_level(logging.WARNING):
        exs = get_task("gsm8k", path=str(f), on_bad_line="skip").examples()
    assert [e["id"] for e in exs] == ["1", "5"]  # ids are source line numbers (stable)
    assert "g.jsonl:3" in caplog.text and "g.jsonl:4" in caplog.text and "missing field 'answer'" in caplog.text
    write_jsonl(f, ['"just a string"'])
    with pytest.raises(DataFormatError, match="no valid record"):
        read_jsonl(f, expected="x", on_bad_line="skip")
    with pytest.raises(ValueError, match="on_bad_line"):
        read_jsonl(f, expected="x", on_bad_line="ignore")


def test_hf_dataset_without_datasets_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="pip install datasets"):
        get_task("gsm8k", hf_id="openai/gsm8k", hf_config="main").examples()
    with pytest.raises(ValueError, match="give one of path= / hf_id= / dataset=, not several"):
        get_task("gsm8k", path="x.jsonl", hf_id="openai/gsm8k")


def test_subsets_are_deterministic_and_disjoint():
    for name in TASKS:
        t = get_task(name)
        test, dev = t.split(5, 3, seed=0)
        again = get_task(name).split(5, 3, seed=0)
        assert [e["id"] for e in test] == [e["id"] for e in again[0]] and [e["id"] for e in dev] == [e["id"] for e in again[1]]
        assert not {e["id"] for e in test} & {e["id"] for e in dev}
        assert [e["id"] for e in t.split(5, 3, seed=1)[0]] != [e["id"] for e in test]
    with pytest.raises(ValueError, match=r"asked for 50 test \+ 20 dev prompts but .*arithmetic.jsonl has 60"):
        get_task("gsm8k").split(50, 20)


# --- the real data in ../shared (skipped when absent) ------------------------------------------------------
def test_shared_gsm8k_and_wmt22():
    exs = get_task("gsm8k", path=str(shared_data("gsm8k/test.jsonl"))).examples()
    assert len(exs) == 1319
    t = get_task("gsm8k", path=str(shared_data("gsm8k/test.jsonl")))
    t.setup_scoring()
    s, _ = t.score([exs[0]["answer"]], exs[0])  # the gold solution scores 1 under both extractions
    assert s[0]["acc_strict"] == 1.0 == s[0]["acc_flexible"]
    ende = get_task("translation", path=str(shared_data("translation/wmt22.en-de.jsonl"))).examples()
    assert len(ende) == 2037 and "English text into German" in ende[0]["prompt"]


def test_shared_commongen_and_eqbench():
    cg = get_task("constrained_writing", path=str(shared_data("creative_writing/commongen.dev.jsonl"))).examples()
    assert len(cg) == 993 and cg[0]["concepts"] == ["field", "look", "stand"]
    assert not any("_" in c and c.split("_")[-1] in ("N", "V", "A") for e in cg for c in e["concepts"])
    eq = get_task("creative_writing", path=str(shared_data("creative_writing/eqbench_creative_writing_prompts.json"))).examples()
    assert len(eq) == 189 and not any("<SEED>" in e["prompt"] for e in eq)
