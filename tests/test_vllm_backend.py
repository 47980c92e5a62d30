"""`backend: vllm` (`integrations.vllm.backend`): sampling in a vLLM engine with common random numbers, on a tiny
random Llama (head_dim 64: vLLM's CPU attention refuses 16). One engine for the module (in this process, ~5 s to
start), and two in vLLM's own processes (~20 s each): the evaluation-suite run's and the check that both modes draw
the same tokens. Skipped where vLLM is not installed (the main venv); `make test-vllm` runs it.

Not tested, because it does not hold: that vLLM draws the samples HF `generate` draws for a global seed (another
RNG). With `row_seeds=` (the library's scored sampling) both backends draw the same samples: that is tested.
"""

import json
import os
import string

import pytest
import torch

vllm = pytest.importorskip("vllm", reason="vLLM is not installed here; `make test-vllm` builds its own venv")

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, AdaptiveDecodingModel, apply_sampling_params  # noqa: E402
from adaptive_decoder.integrations.vllm import inproc  # noqa: E402
from adaptive_decoder.integrations.vllm.backend import VLLMDecodingModel, VLLMEngine  # noqa: E402
from adaptive_decoder.integrations.vllm.crn import NOISE_VERSION, draw_tokens, request_seed  # noqa: E402
from adaptive_decoder.modeling.noise import prompt_seed, row_seeds  # noqa: E402
from conftest import tiny_tokenizer  # noqa: E402

HIDDEN, VOCAB = 128, 259  # the byte-level test tokenizer's 259 ids
PROMPTS = [[5, 17, 99, 3, 250, 8, 41], [200, 12], [7, 7, 7, 120, 64, 33, 2, 91, 150, 11, 19, 5], [60, 61, 62, 63]]


def tiny_model(eos=True):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=512,
                      eos_token_id=1, pad_token_id=0, bos_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8)  # sharper than random init, so top-k / top-p cut real mass
    if not eos:  # rows run to max_new_tokens on both backends
        model.generation_config.eos_token_id = None
    return model


def left_pad(prompts):
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def token_head(selection="sample", seed=1, level="token"):
    torch.manual_seed(seed)
    head = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=HIDDEN, num_layers=1, level=level, selection=selection,
                                                     temperature_bins=[0.0, 0.6, 1.0, 1.4], top_k_bins=[0, 20]))
    with torch.no_grad():
        for lin in head.outputs.values():
            lin.weight.mul_(20)  # choices that vary with the hidden state
    return head


@pytest.fixture(scope="module")
def setup():
    model = tiny_model(eos=False)
    engine = VLLMEngine(model, None, max_model_len=256, max_num_seqs=32, kv_cache_gib=1)
    yield model, engine
    engine.close()


def run(adm, prompts, seed, **kw):
    ids, mask = left_pad(prompts)
    torch.manual_seed(seed)  # as the harness does before every batch
    return adm.generate(ids, mask, eos_token_id=None, **kw)


def test_greedy_equals_hf_greedy_and_stops_at_eos(setup):
    model, engine = setup
    hf = AdaptiveDecodingModel(model)
    ids, mask = left_pad(PROMPTS)
    ref = hf.generate(ids, mask, max_new_tokens=10, force={"temperature": 0.0}, eos_token_id=None)
    out = run(VLLMDecodingModel(model, engine=engine), PROMPTS, 0, max_new_tokens=10, force={"temperature": 0.0})
    assert out.completion_ids == ref.completion_ids and all(len(c) == 10 for c in out.completion_ids)
    # an EOS id that greedy decoding emits at step 4 of prompt 0: both backends stop there, EOS included
    eos = ref.completion_ids[0][4]
    ref = hf.generate(ids, mask, max_new_tokens=10, force={"temperature": 0.0}, eos_token_id=eos, pad_token_id=0)
    torch.manual_seed(0)
    out = VLLMDecodingModel(model, engine=engine).generate(ids, mask, max_new_tokens=10, force={"temperature": 0.0},
                                                           eos_token_id=eos, pad_token_id=0)
    assert out.completion_ids == ref.completion_ids and out.completion_ids[0][-1] == eos
    assert torch.equal(out.step_mask, ref.step_mask) and torch.equal(out.sequences, ref.sequences)


def test_tokens_are_the_seeded_draws_from_the_processed_distribution(setup):
    """Every sampled token equals the draw from HF's processed scores on its prefix with the uniform of (its seed, step):
    the engine samples the right distribution, and with exactly the noise `crn` defines."""
    model, engine = setup
    k, seed = 2, 7
    for kw in ({"force": {"temperature": 0.8, "top_p": 0.9, "top_k": 30}},
               {"force": {"temperature": 1.2, "repetition_penalty": 1.3}}, {"selection": "sample", "epsilon": 0.3}):
        adm = VLLMDecodingModel(model, head=token_head() if "force" not in kw else None, engine=engine)
        out = run(adm, PROMPTS, seed, max_new_tokens=12, num_return_sequences=k, **kw)
        torch.manual_seed(seed)
        base = int(torch.randint(0, 2**62, (1,)))
        checked = 0
        for r, completion in enumerate(out.completion_ids):
            prompt = PROMPTS[r // k]
            seq = torch.tensor([prompt + completion])
            logits = model(seq).logits[0, len(prompt) - 1 : -1].float()
            for t, token in enumerate(completion):
                v = {name: out.values[name][r, t] for name in ("temperature", "top_p", "top_k", "repetition_penalty")}
                scores = apply_sampling_params(seq[:, : len(prompt) + t], logits[t : t + 1], v["temperature"], v["top_p"],
                                               v["top_k"], v["repetition_penalty"])
                draw = draw_tokens(scores, [request_seed(base, prompt, r % k)], [t])[0]
                assert int(draw) == token, (kw, r, t)
                checked += 1
        assert checked == sum(map(len, out.completion_ids)) >= 80
    temps = out.values["temperature"][out.step_mask]
    assert len(set(temps.tolist())) >= 3  # the head case mixed greedy and sampled steps


def test_same_seed_same_samples_across_methods_and_batches(setup):
    model, engine = setup
    vadm = VLLMDecodingModel(model, engine=engine)
    plain = run(vadm, PROMPTS, 3, max_new_tokens=12, num_return_sequences=2, force={"temperature": 1.0})
    # the same distribution by another config (top-k over the whole vocabulary, top-p 1): the same samples
    same = run(vadm, PROMPTS, 3, max_new_tokens=12, num_return_sequences=2,
               force={"temperature": 1.0, "top_k": VOCAB, "top_p": 1.0})
    assert same.completion_ids == plain.completion_ids
    # ... and by a head whose only temperature bin is 1.0
    one_bin = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=HIDDEN, num_layers=1, factors=["temperature"],
                                                        temperature_bins=[1.0], level="token"))
    by_head = run(vadm.with_head(one_bin), PROMPTS, 3, max_new_tokens=12, num_return_sequences=2)
    assert by_head.completion_ids == plain.completion_ids
    # each prompt alone, or beside others in another order: the same samples
    for i in (0, 2):
        alone = run(vadm, [PROMPTS[i]], 3, max_new_tokens=12, num_return_sequences=2, force={"temperature": 1.0})
        assert alone.completion_ids == plain.completion_ids[2 * i : 2 * i + 2]
    shuffled = run(vadm, PROMPTS[::-1], 3, max_new_tokens=12, num_return_sequences=2, force={"temperature": 1.0})
    assert shuffled.completion_ids[-2:] == plain.completion_ids[:2]
    # the seed matters, and so does the distribution (else the checks above prove nothing)
    assert run(vadm, PROMPTS, 4, max_new_tokens=12, num_return_sequences=2,
               force={"temperature": 1.0}).completion_ids != plain.completion_ids
    assert run(vadm, PROMPTS, 3, max_new_tokens=12, num_return_sequences=2,
               force={"temperature": 1.0, "top_k": 5}).completion_ids != plain.completion_ids
    assert len({tuple(c) for c in plain.completion_ids}) == len(plain.completion_ids)


def test_row_seeds_draw_the_samples_hf_generate_draws(setup):
    """One seeding rule for both backends: with the same row seeds, the vLLM backend draws the samples HF
    `generate(row_seeds=)` draws, for forced values and for a head sampling its bins with exploration."""
    model, engine = setup
    seeds = row_seeds([prompt_seed(0, "t", i) for i in range(len(PROMPTS))], 2)
    ids, mask = left_pad(PROMPTS)
    for head, kw in ((None, {"force": {"temperature": 0.8, "top_k": 30}}),
                     (token_head(), {"selection": "sample", "epsilon": 0.3})):
        common = dict(max_new_tokens=12, num_return_sequences=2, eos_token_id=None, row_seeds=seeds, **kw)
        hf = AdaptiveDecodingModel(model, head=head).generate(ids, mask, **common)
        out = VLLMDecodingModel(model, head=head, engine=engine).generate(ids, mask, **common)
        assert out.completion_ids == hf.completion_ids
        assert len({tuple(c) for c in out.completion_ids}) == len(seeds)  # real draws, one per row


def after_first(chars):
    """A predicate that holds once one of `chars` follows the first character (first_line_complete's shape:
    a stop char at the very start does not count, so vLLM stops there early and the row must be redrawn)."""
    def pred(text):
        return any(c in text[1:] for c in chars)
    pred.stop_chars = chars
    return pred


def test_stop_when_ends_rows_where_hf_ends_them(setup):
    """stop_when on the engine: every row (sampled, greedy, a sampling token head) ends at HF's token, whether
    vLLM stopped it at a stop token, ran it past HF's stop (no stop_chars: cut back) or stopped it too early
    (a stop char first: redrawn). Token for token, since both backends warp in float32 and draw the same uniforms."""
    model, engine = setup
    tok = tiny_tokenizer()
    seeds = row_seeds([prompt_seed(0, "stop", i) for i in range(len(PROMPTS))], 2)
    ids, mask = left_pad(PROMPTS)
    common = dict(max_new_tokens=16, num_return_sequences=2, eos_token_id=None, row_seeds=seeds)
    free = AdaptiveDecodingModel(model, tok).generate(ids, mask, force={"temperature": 1.0}, **common)
    ascii_ = [[c if c.isascii() and c.isprintable() else None for c in tok.batch_decode([[t] for t in row])]
              for row in free.completion_ids]
    first = next(r[0] for r in ascii_ if r[0])  # some row starts with it: vLLM stops that row at step 1
    chars = first + "".join(r[6] for r in ascii_ if r[6])[:2]
    cut = 0
    for head, kw in ((None, {"force": {"temperature": 1.0}}), (None, {"force": {"temperature": 0.0}}),
                     (token_head(), {"selection": "sample", "epsilon": 0.3})):
        for pred in (after_first(chars), lambda t, p=after_first(chars): p(t)):  # with and without stop_chars
            hf = AdaptiveDecodingModel(model, tok, head=head).generate(ids, mask, stop_when=pred, **kw, **common)
            out = VLLMDecodingModel(model, tok, head=head, engine=engine).generate(ids, mask, stop_when=pred, **kw,
                                                                                  **common)
            assert out.completion_ids == hf.completion_ids and out.texts == hf.texts
            assert torch.equal(out.step_mask.sum(1), hf.step_mask.sum(1))
            cut += sum(len(c) < 16 for c in out.completion_ids)
    assert cut > 6, "hardly any row stopped: the test would not see a wrong stop"


GREEDY_HEAD_SEED = 1  # a sequence head that sends some of PROMPTS, not all, to T=0 (asserted below)


def test_greedy_rows_of_a_prompt_are_one_request(setup, monkeypatch):
    """Rows of a prompt forced to temperature 0 with the same values are drawn once and copied: the engine gets one
    request per (prompt, values), and the rows equal HF's greedy rows; sampled rows stay one request each."""
    model, engine = setup
    sent = []
    real = engine.generate
    monkeypatch.setattr(engine, "generate", lambda prompts, params: sent.append(len(prompts)) or real(prompts, params))
    ids, mask = left_pad(PROMPTS)
    k = 3
    temps = torch.tensor([0.0] * k + [0.0, 1.0, 0.0] + [1.0] * k + [0.0] * k)  # per row, prompt-major
    common = dict(max_new_tokens=8, num_return_sequences=k, eos_token_id=None,
                  row_seeds=row_seeds([prompt_seed(0, "g", i) for i in range(len(PROMPTS))], k))
    for force in ({"temperature": 0.0}, {"temperature": temps}, {"temperature": temps, "top_k": 5}):
        sent.clear()
        out = VLLMDecodingModel(model, engine=engine).generate(ids, mask, force=force, **common)
        hf = AdaptiveDecodingModel(model).generate(ids, mask, force=force, **common)
        assert out.completion_ids == hf.completion_ids
        t = force["temperature"]
        assert sent == [4 if not torch.is_tensor(t) else 1 + 2 + 3 + 1]
    # a sequence-level argmax head: the prompts it sends to T=0 are one request each, with the head's own choices
    head = token_head(selection="argmax", seed=GREEDY_HEAD_SEED, level="sequence")
    sent.clear()
    out = VLLMDecodingModel(model, head=head, engine=engine).generate(ids, mask, **common)
    hf = AdaptiveDecodingModel(model, head=head).generate(ids, mask, **common)
    assert out.completion_ids == hf.completion_ids and torch.equal(out.choices["temperature"], hf.choices["temperature"])
    greedy = int((hf.values["temperature"][::k, 0] == 0).sum())
    assert 0 < greedy < len(PROMPTS) and sent == [greedy + k * (len(PROMPTS) - greedy)]


def test_a_prompts_rows_share_its_prefilled_blocks(setup, monkeypatch):
    """share_prefix: the k requests of a 70-token prompt reuse its two full 32-token blocks (vLLM's
    num_cached_tokens), and the rows are still HF's row-seeded samples."""
    model, engine = setup
    outs = []
    real = engine.llm.generate
    monkeypatch.setattr(engine.llm, "generate", lambda *a, **kw: outs.append(real(*a, **kw)) or outs[-1])
    prompt = [(7 * i) % 250 + 3 for i in range(70)]
    ids, mask = left_pad([prompt, PROMPTS[0]])
    common = dict(max_new_tokens=6, num_return_sequences=3, eos_token_id=None, force={"temperature": 1.0},
                  row_seeds=row_seeds([prompt_seed(0, "p", i) for i in range(2)], 3))
    out = VLLMDecodingModel(model, engine=engine).generate(ids, mask, **common)
    assert out.completion_ids == AdaptiveDecodingModel(model).generate(ids, mask, **common).completion_ids
    warm, real_rows = outs  # one prefill of the long prompt (the short one fills no block), then the 6 rows
    assert len(warm) == 1 and [o.num_cached_tokens for o in real_rows[:3]] == [64, 64, 64]


def test_head_choices_and_inputs_match_hf_recomputation(setup):
    """Sequence and token level: the returned choices are the head's on the HF hidden states of the returned tokens
    (argmax), and `head_inputs` (what the collection caches) are those hidden states."""
    from adaptive_decoder.modeling.generation import compute_head_inputs

    model, engine = setup
    for level in ("sequence", "token"):
        head = token_head(selection="argmax", seed=2, level=level)
        vadm = VLLMDecodingModel(model, head=head, engine=engine)
        out = run(vadm, PROMPTS, 5, max_new_tokens=8, num_return_sequences=2, return_head_inputs=True)
        full = torch.cat([left_pad(PROMPTS)[1].repeat_interleave(2, 0), torch.ones_like(out.step_mask, dtype=torch.long)], 1)
        h = compute_head_inputs(model, out.sequences, full, out.prompt_length, level,
                                None if level == "sequence" else out.step_mask)
        torch.testing.assert_close(out.head_inputs, h)
        want = head.select(h, selection="argmax")
        for f in head.factors:
            got = out.choices[f]
            assert torch.equal(got, want[f] if level == "sequence" else want[f].masked_fill(~out.step_mask, -1))
        assert out.level == ("token" if level == "token" else "sequence")


def test_unsupported_options_are_refused_by_name(setup):
    model, engine = setup
    vadm = VLLMDecodingModel(model, engine=engine)
    ids, mask = left_pad(PROMPTS[:1])
    with pytest.raises(ValueError, match=r"backend 'vllm' does not support generate options \['stopping_criteria'\]"):
        vadm.generate(ids, mask, max_new_tokens=4, force={"temperature": 1.0}, stopping_criteria=[])
    with pytest.raises(ValueError, match="exceed the engine's max_model_len=256"):
        vadm.generate(ids, mask, max_new_tokens=250, force={"temperature": 1.0})
    with pytest.raises(ValueError, match="no head attached"):
        vadm.generate(ids, mask, max_new_tokens=4)


# ---------------------------------------------------------------------------------------------------------------
def test_in_process_engine_leaves_the_process_state_as_it_was(monkeypatch):
    """What vLLM's in-process mode does to its process (seed the RNGs, replace torch.set_num_threads, cache its
    environment) is undone when the engine is built, and the multiprocessing switch is set only meanwhile."""
    import random

    import numpy as np
    import vllm.envs

    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)

    def draws():
        return torch.rand(3).tolist(), random.random(), float(np.random.rand())

    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    want = draws()
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    real = torch.set_num_threads
    with inproc.in_process_engine():
        assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and not vllm.envs.VLLM_ENABLE_V1_MULTIPROCESSING
        torch.manual_seed(0), random.seed(0), np.random.seed(0)  # what the engine's worker does
        torch.set_num_threads = lambda n: None
        vllm.envs.enable_envs_cache()
    assert torch.set_num_threads is real
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ and vllm.envs.VLLM_ENABLE_V1_MULTIPROCESSING
    assert draws() == want


def test_a_second_engine_runs_in_vllms_processes_and_draws_the_same_tokens(setup):
    """The module's engine runs in this process; one opened while it is open gets vLLM's own processes (one
    in-process engine per process), and both draw the same rows, greedy and seeded."""
    model, engine = setup
    assert engine.in_process and inproc.live == 1
    ids, mask = left_pad(PROMPTS)
    common = dict(max_new_tokens=8, num_return_sequences=2, row_seeds=list(range(100, 108)), eos_token_id=None)
    with VLLMEngine(model, None, max_model_len=256, max_num_seqs=32, kv_cache_gib=1) as other:
        assert not other.in_process
        for force in ({"temperature": 0.0}, {"temperature": 1.0, "top_k": 40}):
            a, b = (VLLMDecodingModel(model, engine=e).generate(ids, mask, force=force, **common) for e in (engine, other))
            assert a.completion_ids == b.completion_ids
    assert inproc.live == 1


def test_eval_suite_backend_vllm(tmp_path):
    """A suite run on the vllm backend: greedy equals the hf backend's greedy units, the fixed grid, an adaptive
    head and the untrained HAG run, the backend is in the fingerprint, and a resume under hf is refused by name."""
    from adaptive_decoder.evaluation.config import EvalConfig
    from adaptive_decoder.evaluation.harness import run_evaluation

    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    torch.manual_seed(1)
    AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=HIDDEN, level="sequence")).save_pretrained(tmp_path / "head")

    def cfg(backend, out, methods):
        return EvalConfig(model=str(model_dir), tasks={"gsm8k": {}, "creative_writing": {}}, num_prompts=3, num_dev_prompts=2,
                          methods=methods, temperatures=[0.0, 1.0], num_samples=2, max_new_tokens=6, batch_size=2,
                          n_bootstrap=50, report_to="none", progress=False, plots=False, torch_threads=1,
                          head_paths=[str(tmp_path / "head")], strict_base_model=False, backend=backend,
                          output_dir=str(out))

    methods = ["greedy", "fixed", "adaptive", "hag_untrained"]
    res = run_evaluation(cfg("vllm", tmp_path / "v", methods))
    ref = run_evaluation(cfg("hf", tmp_path / "h", ["greedy"]))

    def texts(r, method):
        return {(u["task"], u["prompt_id"]): [s["text"] for s in u["samples"]] for u in r["units"]
                if u["method"] == method and u["split"] == "test"}

    assert texts(res, "greedy") == texts(ref, "greedy") and len(texts(res, "greedy")) == 6
    for m in ("T=1.0", "adseq", "hag_untrained"):
        assert len(texts(res, m)) == 6
    assert json.loads((tmp_path / "v" / "run_config.json").read_text())["backend"] == "vllm"
    assert json.loads((tmp_path / "h" / "run_config.json").read_text())["backend"] == "hf"  # recorded at its value
    with pytest.raises(ValueError, match=r"different config \(backend differ"):
        run_evaluation(cfg("hf", tmp_path / "v", methods))
    # a run drawn with another noise scheme (or before it was recorded) draws other samples: refused
    rc = tmp_path / "v" / "run_config.json"
    old = json.loads(rc.read_text())
    assert old["noise_scheme"] == NOISE_VERSION
    rc.write_text(json.dumps({k: v for k, v in old.items() if k != "noise_scheme"}))
    with pytest.raises(ValueError, match=r"different config \(noise_scheme differ"):
        run_evaluation(cfg("vllm", tmp_path / "v", methods))
    with pytest.raises(ValueError, match="backend must be 'hf' or 'vllm', got 'vlm'"):
        cfg("vlm", tmp_path / "x", methods)

    # a method whose generate needs HF's loop stops with an error naming the method and the backend
    from adaptive_decoder.methods.base import POLICIES, DecodingPolicy, register_policy

    class Stopper(DecodingPolicy):
        name = "stopper"

        def generate(self, adm, prompts, *, num_samples, max_new_tokens, seed, chat=None):
            return adm.generate_text(prompts, max_new_tokens=max_new_tokens, force={"temperature": 0.0},
                                     stopping_criteria=[])

    if "stopper" not in POLICIES:  # a registry entry outlives the test (a rerun in one process)
        register_policy("stopper")(lambda: [Stopper()])
    with pytest.raises(ValueError, match=r"method 'stopper' cannot run on backend 'vllm': .*\['stopping_criteria'\]"):
        run_evaluation(cfg("vllm", tmp_path / "s", ["stopper"]))


def test_collection_backend_vllm(setup, tmp_path):
    """LPO collection on the engine: records are reproducible, their values are the head's bins for their choices,
    the cached head inputs and token tables are the HF model's on the returned tokens, and the manifest records
    the backend (a resume under hf is refused by name)."""
    from safetensors.torch import load_file

    from adaptive_decoder.lpo.store import CollectionSettings, hidden_key, read_collection
    from adaptive_decoder.lpo.collection import collect
    from adaptive_decoder.tasks.recipe import load_task_prompts
    from adaptive_decoder.modeling.generation import compute_head_inputs
    from adaptive_decoder.modeling.models import prepare_tokenizer
    from adaptive_decoder.rewards import build_reward

    model, engine = setup
    tok = prepare_tokenizer(tiny_tokenizer(), model)
    head = token_head(selection="sample", seed=4, level="sequence")
    reward = {"fluency": {"weight": 1.0}, "repetition": {"weight": 0.5, "n": 1}}
    ps = load_task_prompts("arith", {"task": "arithmetic", "num_prompts": 4, "data_seed": 0, "reward": reward})

    def go(out, adm, backend="vllm"):
        settings = CollectionSettings(num_samples=4, max_new_tokens=6, epsilon=0.5, prompts_per_batch=2,
                                      cache_which="all", backend=backend)
        collect(adm, ps, {"arith": build_reward(reward, model, tok)}, out, settings, progress=False)
        return read_collection(out)

    vadm = VLLMDecodingModel(model, tok, head, engine=engine)
    manifest, recs = go(tmp_path / "a", vadm)
    assert go(tmp_path / "b", vadm)[1] == recs and len(recs) == 16
    assert manifest["settings"]["backend"] == "vllm"
    cfg = head.config
    assert len({r["values"]["temperature"] for r in recs}) >= 2  # epsilon explored several bins
    hidden = {}
    for f in (tmp_path / "a" / "hidden").glob("*.safetensors"):
        hidden.update(load_file(str(f)))
    for r in recs:
        for f in cfg.factors:
            assert r["values"][f] == pytest.approx(cfg.bins(f)[r["choices"][f]])
        seq = torch.tensor([r["prompt_ids"] + r["completion_ids"]])
        h = compute_head_inputs(model, seq, torch.ones_like(seq), len(r["prompt_ids"]), "sequence")[0]
        torch.testing.assert_close(hidden[hidden_key(r["prompt_id"], r["sample_index"])].float(), h, atol=2e-3, rtol=2e-3)
        assert hidden[hidden_key(r["prompt_id"], r["sample_index"]) + "::token_logps"].shape[0] == len(r["completion_ids"])
    with pytest.raises(ValueError, match="backend"):
        go(tmp_path / "a", AdaptiveDecodingModel(model, tok, head), backend="hf")
    with pytest.raises(ValueError, match="settings.backend is 'hf' but the decoding model samples with 'vllm'"):
        go(tmp_path / "c", vadm, backend="hf")


def test_collection_twins_on_vllm_are_the_hf_twins(setup, tmp_path):
    """A group reward scored among twins (`collect.twins`, a sequence head: each sample scored in a group of itself
    and twins drawn with its values and their own row seeds) gives the HF collection's rewards on the engine. The
    twins are not stored, so a wrong twin (another value, a shared seed) shows only in the novelty it scores."""
    from adaptive_decoder.lpo.store import CollectionSettings, read_collection
    from adaptive_decoder.lpo.collection import collect
    from adaptive_decoder.tasks.recipe import load_task_prompts
    from adaptive_decoder.modeling.models import prepare_tokenizer
    from adaptive_decoder.rewards import build_reward

    model, engine = setup
    tok = prepare_tokenizer(tiny_tokenizer(), model)
    torch.manual_seed(4)
    # greedy or hot: a greedy sample's twins are its copies (novelty 0), a hot one's differ (the byte-level texts are
    # one "word" each, so novelty 1); a twin drawn with another value or with the sample's own seed breaks that
    head = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=HIDDEN, num_layers=1, level="sequence",
                                                     selection="sample", temperature_bins=[0.0, 1.4]))
    reward = {"novelty": {"weight": 1.0, "n": 1}}
    ps = load_task_prompts("arith", {"task": "arithmetic", "num_prompts": 4, "data_seed": 0, "reward": reward})
    recs = {}
    for name, adm in (("hf", AdaptiveDecodingModel(model, tok, head)),
                      ("vllm", VLLMDecodingModel(model, tok, head, engine=engine))):
        settings = CollectionSettings(num_samples=3, max_new_tokens=8, epsilon=0.5, prompts_per_batch=2, twins=3,
                                      backend=name)
        collect(adm, ps, {"arith": build_reward(reward, model, tok)}, tmp_path / name, settings, progress=False)
        recs[name] = read_collection(tmp_path / name)[1]
    assert recs["vllm"] == recs["hf"] and len(recs["hf"]) == 12
    by_temperature = {(round(r["values"]["temperature"], 3), r["rewards"]["novelty"]) for r in recs["hf"]}
    assert by_temperature == {(0.0, 0.0), (1.4, 1.0)}, by_temperature


class _StopsAfterALetter:
    """A TaskReward stand-in whose task's scored text is final once a letter follows its first character (with
    `stop_chars`: vLLM stops rows at letter tokens, and redraws the rows that start with one)."""

    class task:
        @staticmethod
        def stop_predicate():
            return after_first(string.ascii_letters)

    def __init__(self, reward):
        self.reward = reward

    def score_components(self, completions, examples):
        return self.reward.score_components(completions, examples)


def test_collection_stop_when_scored_on_vllm_is_the_hf_collection(setup, tmp_path):
    """stop_when_scored in a collection on the engine (what an experiment with `backend: vllm` runs, e.g.
    configs/experiments/mixed_traffic.yaml): every record, its tokens, text, a token head's sampled per-step
    choices, rewards and log-probabilities, is the HF collection's record, rows ending at the scored end."""
    from adaptive_decoder.lpo.store import CollectionSettings, read_collection
    from adaptive_decoder.lpo.collection import collect
    from adaptive_decoder.tasks.recipe import load_task_prompts
    from adaptive_decoder.modeling.models import prepare_tokenizer
    from adaptive_decoder.rewards import build_reward

    model, engine = setup
    tok = prepare_tokenizer(tiny_tokenizer(), model)
    head = token_head(selection="sample", seed=4)
    reward = {"repetition": {"weight": 1.0, "n": 1}}
    ps = load_task_prompts("arith", {"task": "arithmetic", "num_prompts": 4, "data_seed": 0, "reward": reward})
    recs = {}
    for name, adm in (("hf", AdaptiveDecodingModel(model, tok, head)),
                      ("vllm", VLLMDecodingModel(model, tok, head, engine=engine))):
        settings = CollectionSettings(num_samples=3, max_new_tokens=12, epsilon=0.3, prompts_per_batch=2,
                                      stop_when_scored=True, backend=name)
        collect(adm, ps, {"arith": _StopsAfterALetter(build_reward(reward, model, tok))}, tmp_path / name, settings,
                progress=False)
        manifest, recs[name] = read_collection(tmp_path / name)
        assert manifest["settings"]["stop_when_scored"] is True and manifest["settings"]["backend"] == name
    assert recs["vllm"] == recs["hf"] and len(recs["hf"]) == 12
    cut = [r for r in recs["hf"] if len(r["completion_ids"]) < 12]
    assert len(cut) >= 6, "hardly any row stopped: the test would not see a wrong stop"
    assert all(len(r["choices"]["temperature"]) == len(r["completion_ids"]) for r in cut)
