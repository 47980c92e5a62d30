"""adaptive_decoder.storage: the append-only log's one torn-line rule, the directory lock, the versioned run record
(migration table, the "what changed" check, one-line refusals), and the migrations of the library's four records
from the exact files older versions wrote."""

import json
import logging
import os

import pytest

from adaptive_decoder.storage import (AppendLog, DirectoryLockedError, NotMigratable, RecordError, RecordKind, RunRecord,
                                      lock_dir, read_jsonl_log)


# --- the append-only log ------------------------------------------------------------------------------------
def _log(tmp_path, text: bytes):
    path = tmp_path / "log.jsonl"
    path.write_bytes(text)
    return path


@pytest.mark.parametrize("tail", [b'{"a": 3', b'{"a": 3}', b'{"a": 3\n', b'{"a": "\xc3'],
                         ids=["cut-json", "json-without-newline", "broken-with-newline", "cut-utf8"])
def test_a_torn_last_line_is_dropped_with_a_warning_and_cut_before_the_next_append(tmp_path, caplog, tail):
    path = _log(tmp_path, b'{"a": 1}\n{"a": 2}\n' + tail)
    log = AppendLog(path, redo="its prompt is searched again")
    with caplog.at_level(logging.WARNING):
        assert log.read() == [{"a": 1}, {"a": 2}]
    assert "dropping a torn last line" in caplog.text and "its prompt is searched again" in caplog.text
    log.append([{"a": 3}])
    assert path.read_bytes() == b'{"a": 1}\n{"a": 2}\n{"a": 3}\n'
    assert read_jsonl_log(path) == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_a_broken_inner_line_raises_naming_file_and_line(tmp_path):
    path = _log(tmp_path, b'{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(ValueError, match=rf"^{path}:2 is not valid JSON; .*delete line 2 to resume$"):
        AppendLog(path).read()
    with pytest.raises(ValueError, match=rf"^{path}:2 "):  # a torn tail does not excuse an inner line
        AppendLog(_log(tmp_path, b'{"a": 1}\n{"a": \n{"a": 3')).append([{"a": 4}])


def test_a_log_reads_unicode_line_breaks_inside_records_whole_and_a_missing_file_as_empty(tmp_path):
    log = AppendLog(tmp_path / "new.jsonl")
    assert log.read() == []
    log.append([{"t": "a\u2028b\u2029c\x85d"}, {"t": "e"}])
    log.append([])
    assert AppendLog(tmp_path / "new.jsonl").read() == [{"t": "a\u2028b\u2029c\x85d"}, {"t": "e"}]


# --- the directory lock -------------------------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_holder_and_the_lock_goes_with_it(tmp_path):
    kind = RecordKind("r.json", "test directory", version=1)
    with RunRecord(tmp_path, kind).lock():
        with pytest.raises(DirectoryLockedError, match=rf"^another process is writing to the test directory {tmp_path} "
                                                       rf"\(pid {os.getpid()} on "):
            lock_dir(tmp_path, "test directory")
    lock_dir(tmp_path, "test directory").close()


# --- the run record -----------------------------------------------------------------------------------------
def _kind(**kw):
    # format 0 named the learning rate "lr"; format 1 recorded "warmup" only when on (absent: 0)
    def v0(rec):
        rec["learning_rate"] = rec.pop("lr")
        return rec

    def v1(rec):
        if rec["learning_rate"] is None:
            raise NotMigratable("learning_rate was not recorded")
        return {"warmup": 0, **rec}

    return RecordKind("run.json", "test directory", **{"version": 2, "state": ("done",), "migrations": {0: v0, 1: v1},
                                                       **kw})


def test_the_migration_table_is_applied_in_order_from_a_record_without_a_version(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"lr": 0.1, "done": [1]}))
    record = RunRecord(tmp_path, _kind())
    assert record.read() == {"learning_rate": 0.1, "warmup": 0, "done": [1], "format_version": 2}
    assert json.loads((tmp_path / "run.json").read_text()) == {"lr": 0.1, "done": [1]}  # reading never rewrites
    (tmp_path / "run.json").write_text(json.dumps({"format_version": 1, "learning_rate": 0.2, "done": []}))
    assert record.read() == {"learning_rate": 0.2, "warmup": 0, "done": [], "format_version": 2}
    current = {"format_version": 2, "learning_rate": 0.3, "done": []}  # a current record is read as written
    (tmp_path / "run.json").write_text(json.dumps(current))
    assert record.read() == current


def test_what_changed_is_the_identity_keys_and_write_keeps_state_apart(tmp_path):
    record = RunRecord(tmp_path, _kind())
    assert record.read() is None and record.changes({"learning_rate": 1}) == []
    rec = record.write({"learning_rate": 0.1, "warmup": 0, "steps": (1, 2)}, done=["p1"])
    assert rec == {"format_version": 2, "learning_rate": 0.1, "warmup": 0, "steps": [1, 2], "done": ["p1"]}
    assert record.read() == rec and record.identity(rec) == {"learning_rate": 0.1, "warmup": 0, "steps": [1, 2]}
    assert record.changes({"learning_rate": 0.1, "warmup": 0, "steps": (1, 2)}) == []  # a tuple is its JSON list
    assert record.changes({"learning_rate": 0.2, "steps": [1, 2], "seed": 0}) == ["learning_rate", "seed", "warmup"]
    with pytest.raises(ValueError, match=r"state keys \['shards'\] are not among \['done'\]"):
        record.write({"learning_rate": 0.1}, shards=[])
    with pytest.raises(ValueError, match=r"identity keys \['done'\] are reserved"):
        record.write({"done": 1})


@pytest.mark.parametrize("content, match", [
    ({"lr": None}, r"written by an older version \(format 0\) and cannot be migrated to format 2: learning_rate was not "
                   r"recorded; use a new output directory$"),
    ({"format_version": 3}, r"format_version 3, this library reads run\.json up to version 2 \(written by a newer "
                            r"version\?\)$"),
    ({"format_version": "1"}, r"format_version '1', this library reads run\.json"),
])
def test_a_record_that_cannot_be_migrated_is_refused_in_one_line_naming_the_file(tmp_path, content, match):
    (tmp_path / "run.json").write_text(json.dumps(content))
    with pytest.raises(RecordError, match=rf"^{tmp_path / 'run.json'}: {match}") as e:
        RunRecord(tmp_path, _kind()).read()
    assert "\n" not in str(e.value)


def test_a_version_without_a_migration_and_a_damaged_record_are_refused(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(RecordError, match=r"version 0 cannot be migrated to version 2 \(no migration from version 0\)"):
        RunRecord(tmp_path, _kind(migrations={1: lambda r: r})).read()
    (tmp_path / "run.json").write_text('{"a": ')
    with pytest.raises(RecordError, match=r"run\.json is not valid JSON .*the record is damaged"):
        RunRecord(tmp_path, _kind()).read()
    with pytest.raises(ValueError, match=r"migrations \[0\] do not lead to version 2"):
        RecordKind("x.json", "x", version=2, migrations={0: lambda r: r})


# --- the library's records, from the files older versions wrote ---------------------------------------------
EVAL_FP_V0 = {"model": "m", "dtype": "float32", "chat": None, "task_options": {"gsm8k": {}, "tr": {"n": 4}},
              "num_prompts": 2, "num_dev_prompts": 0, "temperatures": [0.7], "fixed_top_p": 1.0, "fixed_top_k": 0,
              "num_samples": 2, "max_new_tokens": 8, "batch_size": 4, "seed": 0, "fluency": False}
EVAL_FP_V1 = {**EVAL_FP_V0, "task_options": {"tr": {"n": 4}}, "backend": "hf", "noise_scheme": None,
              "stop_when_scored": False, "load": {}}


def test_an_evaluation_run_config_of_format_0_is_migrated(tmp_path):
    from adaptive_decoder.evaluation.config import RUN_CONFIG

    (tmp_path / "run_config.json").write_text(json.dumps({**EVAL_FP_V0, "stop_when_scored": True, "heads": {"adseq": "d"},
                                                          "method_options": {"random": {"b": [1]}}}))
    assert RunRecord(tmp_path, RUN_CONFIG).read() == {**EVAL_FP_V1, "stop_when_scored": True, "heads": {"adseq": "d"},
                                                     "methods": {"random": {"b": [1]}}, "task_contents": None,
                                                     "format_version": 2}


def test_experiment_stage_records_of_format_0_are_migrated_by_their_shape(tmp_path):
    from adaptive_decoder.experiment.stages import DONE, mark_done, stage_done

    collect = {"model": "m", "level": "sequence", "seed": 0, "train_ids": {"gsm8k": ["1"]}, "collect": {"n": 2}}
    cases = {  # stage: (format 0 fingerprint, its summary, the fingerprint now, the summary now)
        "collect": (collect, {"samples": 4}, {**collect, "stop_when_scored": False, "backend": "hf", "load": {},
                                              "task_contents": None}, {"samples": 4}),
        "train": ({"collect": {**collect, "load": {"revision": "r"}}, "lpo": {"beta": 0.1}}, {},
                  {"collect": {**collect, "stop_when_scored": False, "backend": "hf", "load": {"revision": "r"},
                               "task_contents": None}, "lpo": {"beta": 0.1}}, {}),
        # the eval stage as first recorded: the whole EvalConfig (paths, threads, methods and their options) + heads
        "eval": ({"eval": {**EVAL_FP_V0, "output_dir": "x", "torch_threads": 1, "methods": ["greedy"],
                           "method_options": {}}, "splits": "abc", "heads": {"sequence": "h"}},
                 {"wall_seconds": 1.0, "units_computed": 0},
                 {"eval": {**EVAL_FP_V1, "task_contents": None}, "splits": "abc"},
                 {"wall_seconds": 1.0, "units_computed": 0, "methods": {"methods": ["greedy"], "method_options": {}},
                  "heads": {"sequence": "h"}}),
    }
    for name, (old, summary, fp, summary_now) in cases.items():
        d = tmp_path / name
        d.mkdir()
        (d / DONE).write_text(json.dumps({"fingerprint": old, "summary": summary, "wall_s": 2.5,
                                          "finished_at": "2026-01-01T00:00:00Z"}))
        rec = stage_done(d, fp)
        assert rec == {**fp, "summary": summary_now, "wall_s": 2.5, "finished_at": "2026-01-01T00:00:00Z",
                       "format_version": 3}, name
    with pytest.raises(ValueError, match=r"collect finished with different settings \(stop_when_scored differ\)"):
        stage_done(tmp_path / "collect", {**cases["collect"][2], "stop_when_scored": True})
    # every collection before the backend was recorded was drawn by HF generate
    with pytest.raises(ValueError, match=r"collect finished with different settings \(backend differ\)"):
        stage_done(tmp_path / "collect", {**cases["collect"][2], "backend": "vllm"})
    # a stage recorded before its tasks' contents were: accepted (a warning); once recorded, checked by task
    assert stage_done(tmp_path / "train", {**cases["train"][2], "collect": {**cases["train"][2]["collect"],
                                                                            "task_contents": {"gsm8k": "a"}}})
    now = {"eval": {**EVAL_FP_V1, "task_contents": {"gsm8k": "a", "tr": "b"}}, "splits": "abc"}
    assert stage_done(tmp_path / "eval", now)["summary"] == cases["eval"][3]
    mark_done(tmp_path / "eval", now, {}, 1.0)
    with pytest.raises(ValueError, match=r"eval finished with different settings \(contents of task 'tr' differ\)"):
        stage_done(tmp_path / "eval", {**now, "eval": {**now["eval"], "task_contents": {"gsm8k": "a", "tr": "c"}}})


def test_a_collection_manifest_of_format_1_is_migrated(tmp_path):
    from adaptive_decoder.lpo.store import read_manifest
    from adaptive_decoder.modeling.head import AdaptiveDecoderConfig

    head = {"hidden_size": 8, "level": "sequence"}
    (tmp_path / "manifest.json").write_text(json.dumps({
        "format_version": 1, "base_model": {"name": "m", "hidden_size": 8, "fingerprint": "f", "dtype": "bfloat16"},
        "head": {"config": head, "fingerprint": "h"}, "tasks": {"gsm8k": {"reward": "exact"}},
        "settings": {"num_samples": 4, "epsilon": 0.0, "selection": "sample", "chat": None, "group_reward_twins": True,
                     "prompts_per_batch": 2, "backend": "vllm", "vllm_noise": 1},
        "shards": [], "done": [], "hidden_bytes": 0}))
    m = read_manifest(tmp_path)
    assert m["format_version"] == 3 and m["task_contents"] is None
    assert m["base_model"] == {"name": "m", "hidden_size": 8, "fingerprint": "f", "dtype": "bfloat16", "load": {}}
    assert m["settings"] == {"num_samples": 4, "epsilon": 0.0, "selection": "sample", "chat": None,
                             "group_reward_twins": True, "prompts_per_batch": 2, "twins": 1, "backend": "vllm",
                             "noise_scheme": 1, "stop_when_scored": False, "shard": None}
    assert m["head"]["config"] == AdaptiveDecoderConfig.from_dict(head).to_dict()


def test_a_hag_search_config_of_format_0_is_migrated(tmp_path):
    from adaptive_decoder.hag.search import SEARCH_CONFIG

    (tmp_path / "search_config.json").write_text(json.dumps({"space.top_k": [0], "settings.seed": 0}))
    assert RunRecord(tmp_path, SEARCH_CONFIG).read() == {"space.top_k": [0], "settings.seed": 0,
                                                         "settings.stop_when_scored": False, "task_contents": None,
                                                         "format_version": 2}
