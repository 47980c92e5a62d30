"""The evaluation's resume log and run record: units survive SIGKILL and torn lines, a second writer is refused,
older records migrate, and a changed setup (config, task file, dtype) is refused by name."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from eval_support import ALL_TASKS, REPO, save_head, save_tiny, tiny_cfg

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead
from adaptive_decoder.evaluation.harness import run_evaluation
from adaptive_decoder.evaluation.units import UnitStore
from adaptive_decoder.tasks.data_task import PACKAGED_TASK_DIR


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


def test_resume_after_sigkill_skips_finished_units(tiny_dir, tmp_path):
    out = tmp_path / "out"
    cfg_file = REPO / "configs" / "eval" / "tiny.yaml"  # the shipped tiny config, model/output_dir from the CLI
    cfg = yaml.safe_load(cfg_file.read_text())
    assert cfg["num_prompts"] == 6 and cfg["num_dev_prompts"] == 2 and len(cfg["temperatures"]) == 3
    total = len(ALL_TASKS) * (6 * 6 + 3 * 2)  # greedy, 3 fixed, random, oracle on 6 test prompts + 3 candidates on 2 dev
    cmd = [sys.executable, str(REPO / "eval" / "run_suite.py"), "--config", str(cfg_file), "--model", str(tiny_dir),
           "--output_dir", str(out)]
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "first_run.log", "wb")  # a file, not a pipe: a full pipe would stall the child
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    units = out / "units.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if units.exists() and units.read_bytes().count(b"\n") >= 8:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {(tmp_path / 'first_run.log').read_text()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()
    before = units.read_bytes()
    done_before = before[: before.rfind(b"\n") + 1].count(b"\n")
    assert 8 <= done_before < total

    subprocess.run(cmd, env=env, check=True, capture_output=True)
    after = units.read_bytes()
    assert after.startswith(before[: before.rfind(b"\n") + 1])  # finished units untouched, never rewritten
    lines = [json.loads(x) for x in after.decode().splitlines()]
    keys = [(u["method"], u["task"], u["split"], u["prompt_id"]) for u in lines]
    assert len(keys) == len(set(keys)) == total  # nothing recomputed twice, nothing missing
    res = json.loads((out / "results.json").read_text())
    assert res["units_computed_this_run"] == total - done_before
    assert all(res["tasks"][t]["methods"][m]["reward"]["n"] == 6 for t in ALL_TASKS for m in res["methods"])
    # a third run finds everything done and only aggregates
    run3 = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    assert units.read_bytes() == after and "all units already finished" in run3.stderr


# U+2028 / U+2029 / U+0085: Unicode line breaks that json.dumps(ensure_ascii=False) leaves raw in a string (a SmolLM2
# sample at T=1.2 held U+2028). str.splitlines() splits at them, which tore such a unit in two.


ODD_BREAKS = "a\u2028b\u2029c\x85d"


def test_units_and_logs_holding_unicode_line_breaks_read_back_whole(tmp_path, caplog):
    from adaptive_decoder.experiment.reuse import copy_eval_units
    from adaptive_decoder.experiment.stages import DONE
    from adaptive_decoder.storage import read_jsonl_log

    unit = {"method": "T=0.4", "task": "t", "split": "test", "prompt_id": "1", "samples": [{"text": ODD_BREAKS}]}
    head = {**unit, "method": "adseq"}
    src = tmp_path / "src"
    src.mkdir()
    store = UnitStore(src / "units.jsonl")
    store.add([unit, head])
    again = UnitStore(src / "units.jsonl")
    assert again.done("T=0.4", "t", "test", "1") and again.get("T=0.4", "t", "test", "1")["samples"][0]["text"] == ODD_BREAKS
    assert "unreadable" not in caplog.text
    assert [r["samples"][0]["text"] for r in read_jsonl_log(src / "units.jsonl")] == [ODD_BREAKS] * 2
    # reuse_from copies the units of methods without a head, each whole
    (src / DONE).write_text(json.dumps({"fingerprint": {"k": 1}}))
    (src / "results.json").write_text(json.dumps({"methods": {"adseq": {"head_path": "h"}, "T=0.4": {}}}))
    (src / "run_config.json").write_text(json.dumps({"heads": {"adseq": "d"}}))
    assert copy_eval_units(src, tmp_path / "dst", {"k": 1}) == 1
    copied = UnitStore(tmp_path / "dst" / "units.jsonl")
    assert list(copied.units) == [UnitStore.key("T=0.4", "t", "test", "1")]
    assert copied.get("T=0.4", "t", "test", "1")["samples"][0]["text"] == ODD_BREAKS


def test_torn_last_line_is_dropped_and_recomputed(tiny_dir, tmp_path):
    cfg = tiny_cfg(tiny_dir, tmp_path / "out", tasks={"gsm8k": {}}, methods=["fixed"], num_dev_prompts=0)
    run_evaluation(cfg)
    units = tmp_path / "out" / "units.jsonl"
    lines = units.read_text().splitlines(keepends=True)
    units.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # died mid-write
    assert len(UnitStore(units).units) == len(lines) - 1
    res = run_evaluation(cfg)
    assert res["units_computed_this_run"] == 1
    assert units.read_text().count("\n") == len(lines)


def test_a_second_run_on_one_output_dir_is_refused(tiny_dir, tmp_path):
    from adaptive_decoder.storage import lock_dir

    out = tmp_path / "out"
    out.mkdir()
    cfg = tiny_cfg(tiny_dir, out, tasks={"gsm8k": {}}, methods=["greedy"], num_dev_prompts=0)
    with lock_dir(out, "evaluation output directory"):  # what a first run_suite.py holds while it runs
        with pytest.raises(RuntimeError, match=rf"another process is writing to the evaluation output directory {out} "
                                               rf"\(pid {os.getpid()} on "):
            run_evaluation(cfg)
        assert not (out / "units.jsonl").exists() and not (out / "run_config.json").exists()
    assert run_evaluation(cfg)["units_computed_this_run"] == 3  # the lock is gone with its holder


def test_a_finished_run_of_format_0_resumes_and_is_rewritten_in_the_current_format(tiny_dir, tmp_path):
    # run_config.json as format 0 wrote it: no format_version, the options only when on, every task in
    # task_options (options or not), and the options of every method in one field
    kw = dict(methods=["greedy"], num_dev_prompts=0, tasks={"gsm8k": {}, "translation": {"max_new_tokens": 4}})
    run_evaluation(tiny_cfg(tiny_dir, tmp_path / "out", **kw))
    path = tmp_path / "out" / "run_config.json"
    rec = json.loads(path.read_text())
    assert rec["format_version"] == 2 and rec["task_options"] == {"translation": {"max_new_tokens": 4}}
    old = {k: v for k, v in rec.items() if k not in ("format_version", "backend", "stop_when_scored",
                                                     "load", "methods", "task_contents")}
    path.write_text(json.dumps({**old, "task_options": {"gsm8k": {}, "translation": {"max_new_tokens": 4}},
                                "method_options": {"greedy": None}}))
    assert run_evaluation(tiny_cfg(tiny_dir, tmp_path / "out", **kw))["units_computed_this_run"] == 0
    assert json.loads(path.read_text()) == rec
    # a format this library does not know is refused by name
    path.write_text(json.dumps({**rec, "format_version": 7}))
    with pytest.raises(ValueError, match=rf"^{path}: format_version 7, this library reads run_config\.json up to "
                                         r"version 2"):
        run_evaluation(tiny_cfg(tiny_dir, tmp_path / "out", **kw))


def test_resume_with_a_different_config_is_refused(tiny_dir, tmp_path):
    run_evaluation(tiny_cfg(tiny_dir, tmp_path / "out", tasks={"gsm8k": {}}, methods=["greedy"], num_dev_prompts=0))
    with pytest.raises(ValueError, match=r"different config \(max_new_tokens, seed differ\)"):
        run_evaluation(tiny_cfg(tiny_dir, tmp_path / "out", tasks={"gsm8k": {}}, methods=["greedy"], num_dev_prompts=0,
                                seed=5, max_new_tokens=7))
    # adding a method or a head is fine (only its units run); retraining a head in place is not
    res = run_evaluation(tiny_cfg(tiny_dir, tmp_path / "out", tasks={"gsm8k": {}}, methods=["greedy", "random"],
                                  num_dev_prompts=0))
    assert res["units_computed_this_run"] == 3 and list(res["methods"]) == ["greedy", "random"]
    # a method that has units keeps its options; a new one may bring its own (a trained HAG added to a finished run)
    with pytest.raises(ValueError, match=r"\(method_options of 'random' differ\)"):
        run_evaluation(tiny_cfg(tiny_dir, tmp_path / "out", tasks={"gsm8k": {}}, methods=["greedy", "random"],
                                num_dev_prompts=0, method_options={"random": {"temperature_bins": [0.5]}}))
    res = run_evaluation(tiny_cfg(tiny_dir, tmp_path / "out", tasks={"gsm8k": {}}, methods=["greedy", "random", "fixed"],
                                  num_dev_prompts=0, method_options={"fixed": {"temperatures": [0.3]}}))
    assert res["units_computed_this_run"] == 3 and list(res["methods"]) == ["greedy", "random", "T=0.3"]
    head = save_head(tmp_path / "head", "sequence", str(tiny_dir))
    kw = dict(tasks={"gsm8k": {}}, methods=["greedy", "adaptive"], num_dev_prompts=0, head_paths=[head])
    res = run_evaluation(tiny_cfg(tiny_dir, tmp_path / "out", **kw))
    assert res["units_computed_this_run"] == 3 and "adseq" in res["methods"]
    torch.manual_seed(7)
    AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=32, base_model=str(tiny_dir), level="sequence")).save_pretrained(head)
    with pytest.raises(ValueError, match=r"\(weights of head 'adseq' differ\)"):
        run_evaluation(tiny_cfg(tiny_dir, tmp_path / "out", **kw))


def test_a_task_file_edited_after_a_run_is_refused_on_resume_by_name(tiny_dir, tmp_path, caplog):
    """The fingerprint holds what each task resolves to: editing the task file (its template here; any key, or the
    data file, the same) makes a resume refuse in one line naming the task, though the config is unchanged."""
    spec = yaml.safe_load((PACKAGED_TASK_DIR / "control_qa.yaml").read_text())
    path = tmp_path / "my_qa.yaml"
    path.write_text(yaml.safe_dump({**spec, "task": "my_qa"}))
    kw = dict(tasks={str(path): {}}, methods=["greedy"], num_dev_prompts=0, num_prompts=2)
    run_evaluation(tiny_cfg(tiny_dir, tmp_path / "out", **kw))
    record = tmp_path / "out" / "run_config.json"
    digests = json.loads(record.read_text())["task_contents"]
    # adding a task to the finished run only adds its units
    res = run_evaluation(tiny_cfg(tiny_dir, tmp_path / "out", **{**kw, "tasks": {str(path): {}, "arithmetic": {}}}))
    assert res["units_computed_this_run"] == 2
    assert json.loads(record.read_text())["task_contents"] == {**digests, "arithmetic": task_digest_of("arithmetic")}
    path.write_text(yaml.safe_dump({**spec, "task": "my_qa", "template": "Q: " + spec["template"]}))
    with pytest.raises(ValueError, match=r"different config \(contents of task 'my_qa' differ\)") as e:
        run_evaluation(tiny_cfg(tiny_dir, tmp_path / "out", **kw))
    assert "\n" not in str(e.value)
    # a run recorded before task contents were (format 1) resumes with a warning and records them from then on
    rec = json.loads(record.read_text())
    record.write_text(json.dumps({k: v for k, v in {**rec, "format_version": 1}.items() if k != "task_contents"}))
    with caplog.at_level("WARNING", logger="adaptive_decoder.tasks.identity"):
        assert run_evaluation(tiny_cfg(tiny_dir, tmp_path / "out", **kw))["units_computed_this_run"] == 0
    assert "cannot be detected" in caplog.text and "my_qa" in caplog.text
    now = json.loads(record.read_text())
    assert now["format_version"] == 2 and now["task_contents"] == {"my_qa": now["task_contents"]["my_qa"]}
    assert now["task_contents"]["my_qa"] != digests["my_qa"]


def task_digest_of(task: str) -> str:
    from adaptive_decoder.tasks.identity import task_digest
    from adaptive_decoder.tasks.recipe import build_task

    return task_digest(build_task(task, {}))


def test_resume_under_another_resolved_dtype_is_refused(tiny_dir, tmp_path, monkeypatch):
    """The fingerprint holds the RESOLVED dtype: `auto` that resolves to bf16 cannot resume a float32 run."""
    from adaptive_decoder.modeling import models

    kw = dict(tasks={"gsm8k": {}}, methods=["greedy"], num_dev_prompts=0, device="cpu")
    run_evaluation(tiny_cfg(tiny_dir, tmp_path / "out", **kw))
    assert json.loads((tmp_path / "out" / "run_config.json").read_text())["dtype"] == "float32"
    monkeypatch.setattr(models, "resolve_dtype", lambda name, device=None: torch.bfloat16)
    cfg = tiny_cfg(tiny_dir, tmp_path / "out", dtype="auto", **kw)
    assert cfg.dtype == "bfloat16"
    with pytest.raises(ValueError, match=r"different config \(dtype differ\)"):
        run_evaluation(cfg)
