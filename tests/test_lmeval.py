"""lm-eval's `adaptive-decoder` model (adaptive_decoder.integrations.lmeval) against `--model hf` and the library.

Offline: local task YAMLs over a small JSONL (lm-eval's `json` dataset builder), the tiny random Llama with the
byte-level tokenizer, and one-layer heads whose bias (+100) pins every choice to one bin.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed: pip install -e '.[lmeval]'")

from lm_eval.tasks import TaskManager  # noqa: E402

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, AdaptiveDecodingModel, encode_prompts  # noqa: E402
from adaptive_decoder.integrations import lmeval as ad_lmeval  # noqa: E402  (registers "adaptive-decoder")
from adaptive_decoder.modeling.models import load_base_model  # noqa: E402
from adaptive_decoder.modeling.noise import prompt_seed, row_seeds  # noqa: E402

from conftest import tiny_llama, tiny_tokenizer  # noqa: E402

HIDDEN = 32
SEED = 1234
QUESTIONS = [f"Question {i}: what is {i} plus {i * 3}?" for i in range(6)]


def make_head(path, level="token", bias=None, hidden=HIDDEN, selection="argmax"):
    """A one-layer head whose choices are its bias: +100 on bin `bias[factor]`, zero weights."""
    head = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=hidden, num_layers=1, level=level, selection=selection))
    with torch.no_grad():
        for f, lin in head.outputs.items():
            lin.weight.zero_()
            lin.bias.zero_()
            lin.bias[(bias or {}).get(f, 0)] = 100.0
    head.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmeval")
    model = root / "model"
    tiny_llama(vocab_size=259, hidden_size=HIDDEN, seed=0).save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "x", "choices": ["yes", "no", "maybe"], "label": 1})
                            + "\n" for q in QUESTIONS))
    heads = {
        "greedy": make_head(root / "greedy"),                                    # T=0 bin: greedy
        "hot": make_head(root / "hot", bias={"temperature": 5}),                 # T=1.0, top-p 1, top-k off
        "seq_hot": make_head(root / "seq_hot", level="sequence", bias={"temperature": 3, "top_k": 2}),
        "small": make_head(root / "small", hidden=16),
    }
    tasks = root / "tasks"
    tasks.mkdir()
    write_task(tasks, data, "gen", max_gen_toks=12)
    write_task(tasks, data, "gen_short", max_gen_toks=5)
    write_task(tasks, data, "gen_rep", repeats=2)
    write_task(tasks, data, "mc", mc=True)
    # indexing lm-eval's own tasks takes seconds: one TaskManager serves every run
    return {"root": root, "model": model, "data": data, "heads": heads, "tasks": tasks,
            "task_manager": TaskManager(include_path=str(tasks))}


def write_task(d, data, name, *, max_gen_toks=12, mc=False, repeats=1):
    """One task YAML over the test JSONL in `d` (generate_until, greedy by the task's settings, or multiple choice)."""
    head = (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
            f"test_split: test\ndoc_to_text: '{{{{question}}}}'\nrepeats: {repeats}\n")
    if mc:
        body = ("output_type: multiple_choice\ndoc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\n"
                "metric_list:\n  - metric: acc\n")
    else:
        body = ("output_type: generate_until\ndoc_to_target: '{{answer}}'\ngeneration_kwargs:\n"
                f"  until: []\n  do_sample: false\n  temperature: 0.0\n  max_gen_toks: {max_gen_toks}\n"
                "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n")
    (d / f"{name}.yaml").write_text(head + body)


_RUNS = {}


def evaluate(setup, task, model="adaptive-decoder", head="greedy", batch_size=8, gen_kwargs=None,
             apply_chat_template=False, **model_args):
    """The logged samples of one lm-eval run, in doc order; a run already made in this module is not made again."""
    args = {"pretrained": str(setup["model"]), "device": "cpu", "dtype": "float32", **model_args}
    if model == "adaptive-decoder" and head is not None:
        args["head"] = str(setup["heads"].get(head, head))
    key = (task, model, batch_size, json.dumps(gen_kwargs), apply_chat_template, tuple(sorted(args.items())))
    if key not in _RUNS:
        out = lm_eval.simple_evaluate(model=model, model_args=args, tasks=[task], batch_size=batch_size,
                                      gen_kwargs=gen_kwargs, apply_chat_template=apply_chat_template,
                                      task_manager=setup["task_manager"], log_samples=True)
        _RUNS[key] = sorted(out["samples"][task], key=lambda s: s["doc_id"])
    return _RUNS[key]


def texts(samples):
    return [s["resps"][0][0] for s in samples]


def records(samples):
    return [s["arguments"][0][2][ad_lmeval.RECORD_KEY][0] for s in samples]


def test_greedy_bin_head_equals_hf_greedy(setup):
    ours = evaluate(setup, "gen")
    hf = evaluate(setup, "gen", model="hf")
    assert texts(ours) == texts(hf)
    assert len(set(texts(ours))) > 1  # the prompts do lead to different completions
    # the choices are recorded with each sample: every token greedy
    for rec in records(ours):
        assert rec["level"] == "token" and rec["tokens"] == 12
        assert rec["temperature"] == {"0.0": 12} and rec["top_p"] == {"1.0": 12} and rec["top_k"] == {"0": 12}


def library_samples(setup, head, task, k=1, max_new_tokens=12):
    """Each question's k samples from the library's `generate` under its per-prompt rule: prompt seed of (SEED,
    task, doc id), row seeds of k samples; one question per call, so no batch is shared."""
    model, tok = load_base_model(str(setup["model"]), dtype="float32")
    adm = AdaptiveDecodingModel(model, tok, AdaptiveDecoderHead.from_pretrained(setup["heads"][head]))
    out = []
    for doc, q in enumerate(QUESTIONS):
        enc = encode_prompts(tok, [q] * k, chat=False)
        seeds = row_seeds([prompt_seed(SEED, task, doc)], k)
        out.append(adm.generate(enc["input_ids"], enc["attention_mask"], max_new_tokens=max_new_tokens,
                                pad_token_id=tok.pad_token_id, row_seeds=seeds, stop_when=lambda t: False).texts)
    return out


def test_sampling_head_draws_each_doc_from_its_prompt_seed_whatever_the_batch(setup):
    ours = evaluate(setup, "gen", head="hot")
    assert texts(ours) == [t[0] for t in library_samples(setup, "hot", "gen")]
    # lm-eval batches 8, 4 or 1 docs (longest first): a doc's samples are its own, not its batch position's
    assert texts(evaluate(setup, "gen", head="hot", batch_size=4)) == texts(ours)
    assert texts(evaluate(setup, "gen", head="hot", batch_size=1)) == texts(ours)
    # and not the greedy ones: the head's T=1 replaced the task's do_sample: false
    assert texts(ours) != texts(evaluate(setup, "gen"))
    assert all(r["temperature"] == {"1.0": r["tokens"]} for r in records(ours))


def test_repeated_requests_are_a_docs_k_samples(setup):
    """`repeats: 2` sends a doc's request twice: the j-th response is the library's j-th sample of that doc."""
    ours = evaluate(setup, "gen_rep", head="hot", batch_size=3)
    assert [s["resps"][0] for s in ours] == library_samples(setup, "hot", "gen_rep", k=2)
    assert all(a != b for a, b in (s["resps"][0] for s in ours))


def test_until_stops_where_lm_eval_expects(setup):
    full = texts(evaluate(setup, "gen"))
    until = {"until": [full[0][4:6]]}  # a stop sequence the greedy completions do reach, added as --gen_kwargs adds it
    stop = until["until"][0]
    ours, hf = evaluate(setup, "gen", gen_kwargs=until), evaluate(setup, "gen", model="hf", gen_kwargs=until)
    assert texts(ours) == texts(hf) == [t.split(stop)[0] for t in full]
    # decoding ended at the stop: the first completion produced 4 characters and its stop's 2 (bytes: tokens)
    assert records(ours)[0]["tokens"] < 12


def test_sequence_head_records_its_one_choice_and_task_values_warn_once(setup, caplog):
    with caplog.at_level(logging.WARNING, logger=ad_lmeval.__name__):
        ours = evaluate(setup, "gen_short", head="seq_hot", batch_size=2)
    for rec in records(ours):
        assert rec == {"level": "sequence", "tokens": rec["tokens"], "temperature": 0.6, "top_p": 1.0, "top_k": 20}
    warned = [r.getMessage() for r in caplog.records if r.name == ad_lmeval.__name__]
    assert len(warned) == 1  # three batches, one warning
    assert "{'do_sample': False, 'temperature': 0.0}" in warned[0]


def test_loglikelihood_is_the_base_models(setup):
    ours, hf = evaluate(setup, "mc", head="hot"), evaluate(setup, "mc", model="hf")
    assert [s["resps"] for s in ours] == [s["resps"] for s in hf]


@pytest.fixture(scope="module")
def chat_model(setup):
    """The tiny model with a chat template on its tokenizer."""
    tok = tiny_tokenizer()
    tok.chat_template = ("{% for m in messages %}<s>[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}[assistant] {% endif %}")
    model_dir = setup["root"] / "chat_model"
    tiny_llama(vocab_size=259, hidden_size=HIDDEN, seed=0).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir, tok


def test_chat_template_applied_as_the_library_applies_it(setup, chat_model):
    model_dir, tok = chat_model
    lm = ad_lmeval.AdaptiveDecoderLM(pretrained=str(model_dir), head=str(setup["heads"]["greedy"]), device="cpu")
    ids, mask = lm._encode(QUESTIONS[:3], 200)
    lib = encode_prompts(tok, QUESTIONS[:3])  # the tokenizer has a template: the library uses it
    assert torch.equal(ids, lib["input_ids"]) and torch.equal(mask, lib["attention_mask"])
    assert tok.decode(ids[0][mask[0].bool()]).startswith("<s>[user] Question 0")
    plain = ad_lmeval.AdaptiveDecoderLM(pretrained=str(model_dir), head=str(setup["heads"]["greedy"]), device="cpu",
                                        chat=False)
    assert torch.equal(plain._encode(QUESTIONS[:1], 200)[0], tok(QUESTIONS[:1], return_tensors="pt")["input_ids"])


def test_chat_template_never_applied_twice(setup, chat_model):
    """Our template (default) and lm-eval's (--apply_chat_template) give the same prompt for a zero-shot context:
    the greedy head then matches `--model hf --apply_chat_template` either way."""
    pretrained = str(chat_model[0])
    hf = evaluate(setup, "gen", model="hf", pretrained=pretrained, apply_chat_template=True)
    assert texts(evaluate(setup, "gen", pretrained=pretrained)) == texts(hf)
    assert texts(evaluate(setup, "gen", pretrained=pretrained, apply_chat_template=True)) == texts(hf)
    assert texts(hf) != texts(evaluate(setup, "gen", model="hf"))  # the template did change the prompts


def test_missing_or_mismatched_head_fails_with_one_line(setup):
    with pytest.raises(FileNotFoundError, match=r"^directory not found: .*no_such_head$"):
        evaluate(setup, "gen_short", head=str(setup["root"] / "no_such_head"))
    with pytest.raises(ValueError, match=r"hidden size 16, but .* has hidden size 32$") as e:
        evaluate(setup, "gen_short", head="small")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"^adaptive-decoder needs head="):
        evaluate(setup, "gen_short", head=None)
    with pytest.raises(ValueError, match=r"does not take \['peft'\]"):
        evaluate(setup, "gen_short", peft="x")
    with pytest.raises(ValueError, match=r"unknown adaptive-decoder model_args \['temprature'\]"):
        evaluate(setup, "gen_short", temprature=0.7)
    with pytest.raises(ValueError, match=r"chat='maybe' is not one of true, false, auto"):
        evaluate(setup, "gen_short", chat="maybe")


def test_command_line_registers_the_model_and_logs_choices(setup, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "adaptive_decoder.integrations.lmeval", "run", "--model", "adaptive-decoder",
           "--model_args", f"pretrained={setup['model']},head={setup['heads']['greedy']}", "--device", "cpu",
           "--tasks", "gen_short", "--include_path", str(setup["tasks"]), "--limit", "2", "--log_samples",
           "--output_path", str(tmp_path / "out")]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    (samples,) = list((tmp_path / "out").rglob("samples_gen_short_*.jsonl"))
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(rows) == 2
    rec = rows[0]["arguments"]["gen_args_0"]["arg_2"][ad_lmeval.RECORD_KEY][0]
    assert rec["temperature"] == {"0.0": 5}


def test_exported_directory_keeps_its_head(setup, tmp_path):
    """A directory written for vLLM brings its head to `load_exported`, to lm-eval's pretrained=<dir>, and (with
    adaptive_decoder imported, as here) to `--model hf`, which then decodes with the head as `adaptive-decoder`
    does on the same prompts (chat=false: HFLM's encoding) and seed; `lm_eval --model hf` builds the same model
    from the string once adaptive_decoder is imported (`python -m adaptive_decoder.integrations.lmeval`). Without
    the package transformers refuses the directory (tests/test_vllm_export.py)."""
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adaptive_decoder.integrations.vllm.export import export_servable, load_exported

    out = export_servable(setup["model"], setup["heads"]["hot"], tmp_path / "served")
    assert AutoModelForCausalLM.from_pretrained(out).adaptive_decoder_head is not None
    adm = load_exported(out)
    assert adm.head.config == AdaptiveDecoderHead.from_pretrained(setup["heads"]["hot"]).config
    assert texts(evaluate(setup, "gen", head=None, pretrained=str(out))) == texts(evaluate(setup, "gen", head="hot"))

    def hf_texts(path):  # lm-eval's own --model hf on the exported directory
        lm = HFLM(pretrained=AutoModelForCausalLM.from_pretrained(path), tokenizer=AutoTokenizer.from_pretrained(path),
                  device="cpu", batch_size=8)
        run = lm_eval.simple_evaluate(model=lm, tasks=["gen"], task_manager=setup["task_manager"], log_samples=True)
        return texts(sorted(run["samples"]["gen"], key=lambda s: s["doc_id"]))

    # --model hf samples from torch's global generator (lm-eval seeds it), adaptive-decoder from each doc's own seed
    # (`noise.prompt_seed`), so their sampled texts agree in distribution only: a greedy-bin head's export gives
    # adaptive-decoder's texts exactly, and a hot head's texts are not the base model's greedy ones (the head acts)
    greedy_out = export_servable(setup["model"], setup["heads"]["greedy"], tmp_path / "served_greedy")
    assert hf_texts(greedy_out) == texts(evaluate(setup, "gen", head=None, pretrained=str(greedy_out), chat="false"))
    base_greedy = texts(evaluate(setup, "gen", model="hf"))
    assert hf_texts(out) != base_greedy
    assert texts(evaluate(setup, "gen", model="hf", pretrained=str(out))) != base_greedy  # by name: the head too
    with pytest.raises(ValueError, match="exported with its own head: drop head="):
        evaluate(setup, "gen", head="greedy", pretrained=str(out))
