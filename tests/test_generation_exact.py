"""The contract that makes fixed-temperature baselines and AD comparable: forcing the head's choice gives
token-for-token the same output as plain `generate` with those values and the same seed."""

import collections

import pytest
import torch

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, AdaptiveDecodingModel
from conftest import tiny_llama


def _prompts(batch=3, length=6, vocab=128, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    ids[0, :2] = 0  # left padding on the first row
    mask[0, :2] = 0
    return ids, mask


def _forced_head(model, t_idx, p_idx, k_idx, level="token", temps=None, tops=None, topk=None):
    """A head whose argmax is a fixed bin for every input: zero weights, a large bias on the wanted bin."""
    cfg = AdaptiveDecoderConfig(hidden_size=model.config.hidden_size, level=level,
                                temperature_bins=temps or [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                                top_p_bins=tops or [1.0, 0.95, 0.9, 0.8], top_k_bins=topk or [0, 50, 20])
    head = AdaptiveDecoderHead(cfg)
    with torch.no_grad():
        for f, idx in (("temperature", t_idx), ("top_p", p_idx), ("top_k", k_idx)):
            lin = head.outputs[f]
            lin.weight.zero_()
            lin.bias.fill_(-10.0)
            lin.bias[idx] = 10.0
    return head


def _plain(model, ids, mask, seed, **kw):
    torch.manual_seed(seed)
    return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=24, **kw)


def _adaptive(adm, ids, mask, seed, **kw):
    torch.manual_seed(seed)
    return adm.generate(ids, mask, max_new_tokens=24, **kw)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_head_forced_t1_equals_plain_sampling(tiny_model, level):
    ids, mask = _prompts()
    head = _forced_head(tiny_model, t_idx=5, p_idx=0, k_idx=0, level=level)  # T=1.0, top-p 1.0, top-k off
    adm = AdaptiveDecodingModel(tiny_model, head=head)
    for seed in (0, 1, 2):
        ref = _plain(tiny_model, ids, mask, seed, do_sample=True, temperature=1.0, top_p=1.0, top_k=0)
        out = _adaptive(adm, ids, mask, seed)
        assert torch.equal(out.sequences, ref)
    # and the recorded choices are the forced bins
    assert set(out.values["temperature"][out.step_mask].tolist()) == {1.0}


def test_head_forced_greedy_equals_greedy_generate(tiny_model):
    ids, mask = _prompts()
    head = _forced_head(tiny_model, t_idx=0, p_idx=2, k_idx=1)  # T=0 wins over any top-p / top-k
    adm = AdaptiveDecodingModel(tiny_model, head=head)
    ref = _plain(tiny_model, ids, mask, 0, do_sample=False)
    out = _adaptive(adm, ids, mask, 123)
    assert torch.equal(out.sequences, ref)


@pytest.mark.parametrize("how", ["force", "head"])
def test_forced_07_09_20_equals_generate(tiny_model, how):
    ids, mask = _prompts()
    if how == "head":
        head = _forced_head(tiny_model, t_idx=1, p_idx=1, k_idx=1, temps=[0.0, 0.7, 1.0], tops=[1.0, 0.9], topk=[0, 20])
        adm, kw = AdaptiveDecodingModel(tiny_model, head=head), {}
    else:
        adm, kw = AdaptiveDecodingModel(tiny_model), {"force": {"temperature": 0.7, "top_p": 0.9, "top_k": 20}}
    for seed in (0, 3):
        ref = _plain(tiny_model, ids, mask, seed, do_sample=True, temperature=0.7, top_p=0.9, top_k=20)
        out = _adaptive(adm, ids, mask, seed, **kw)
        assert torch.equal(out.sequences, ref)


def test_num_return_sequences_and_repetition_penalty_match_generate(tiny_model):
    ids, mask = _prompts(batch=2)
    adm = AdaptiveDecodingModel(tiny_model)
    ref = _plain(tiny_model, ids, mask, 7, do_sample=True, temperature=0.6, top_p=0.95, top_k=50,
                 repetition_penalty=1.3, num_return_sequences=3)
    out = _adaptive(adm, ids, mask, 7, num_return_sequences=3,
                    force={"temperature": 0.6, "top_p": 0.95, "top_k": 50, "repetition_penalty": 1.3})
    assert torch.equal(out.sequences, ref)
    assert out.sequences.shape[0] == 6


def test_per_row_values_match_rowwise_generate(tiny_model):
    """Mixed per-row configs in one batch equal each row generated alone with its own config (same draw stream)."""
    ids, mask = _prompts(batch=3)
    ids, mask = ids[1:], mask[1:]  # no padding so rows are numerically independent of the batch
    configs = [dict(temperature=0.0, top_p=1.0, top_k=0), dict(temperature=0.9, top_p=0.8, top_k=0)]
    adm = AdaptiveDecodingModel(tiny_model)
    torch.manual_seed(5)
    mixed = adm.generate(ids, mask, max_new_tokens=16,
                         force={k: [c[k] for c in configs] for k in configs[0]}).sequences
    greedy = tiny_model.generate(input_ids=ids[:1], attention_mask=mask[:1], max_new_tokens=16, do_sample=False)
    assert torch.equal(mixed[0], greedy[0])
    # the sampled row is unaffected by what the greedy row does: change row 0's config, row 1 stays identical
    torch.manual_seed(5)
    other = adm.generate(ids, mask, max_new_tokens=16,
                         force={"temperature": [1.0, 0.9], "top_p": [0.5, 0.8], "top_k": [5, 0]}).sequences
    assert torch.equal(other[1], mixed[1])


def test_finished_rows_are_masked_and_do_not_affect_others():
    model = tiny_llama(seed=3)
    ids, mask = _prompts(batch=2)
    adm_head = _forced_head(model, t_idx=5, p_idx=0, k_idx=0)
    adm = AdaptiveDecodingModel(model, head=adm_head)
    torch.manual_seed(0)
    free = adm.generate(ids, mask, max_new_tokens=20)
    # make row 0 stop right away by declaring its first generated token to be EOS
    first = int(free.sequences[0, ids.shape[1]])
    torch.manual_seed(0)
    stopped = adm.generate(ids, mask, max_new_tokens=20, eos_token_id=[first, 1])
    assert stopped.step_mask[0].sum() == 1
    assert stopped.completion_ids[0] == [first]
    assert (stopped.choices["temperature"][0, 1:] == -1).all()
    # row 1's tokens are the same as long as it has not produced the new EOS itself
    gen1 = free.sequences[1, ids.shape[1]:].tolist()
    cut = gen1.index(first) + 1 if first in gen1 else len(gen1)
    assert stopped.sequences[1, ids.shape[1]:ids.shape[1] + cut].tolist() == gen1[:cut]


def _lowercase_seen(text: str) -> bool:  # about one byte in ten: most rows stop early, a few run long
    return any("a" <= c <= "z" for c in text)


@pytest.mark.parametrize("pad_is_eos", [False, True])
@pytest.mark.parametrize("how", ["force", "token_head", "sequence_head"])
def test_stop_when_cuts_each_row_at_its_first_true_and_changes_nothing_before(how, pad_is_eos):
    """The stopped run's rows are the free run's rows cut right after the first step whose decoded text satisfies
    the predicate: same tokens, same per-step values and choices up to there, nothing after. With pad == EOS
    (SmolLM2) the pads generate writes after a stop must not read as a real EOS step."""
    from conftest import tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_llama(vocab_size=len(tok), seed=4, pad_token_id=1 if pad_is_eos else 0)
    head = None
    if how != "force":
        torch.manual_seed(2)
        head = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=model.config.hidden_size, level=how.split("_")[0],
                                                         selection="sample", temperature_bins=[0.6, 1.0, 1.4]))
    adm = AdaptiveDecodingModel(model, tok, head)
    kw = dict(max_new_tokens=24, num_return_sequences=3, chat=False)
    kw.update({"force": {"temperature": 1.0}} if how == "force" else {"head_seed": 9})
    prompts = ["Hello", "ab", "xyz 12", "Q"]
    torch.manual_seed(0)
    free = adm.generate_text(prompts, **kw)
    torch.manual_seed(0)
    cut = adm.generate_text(prompts, stop_when=_lowercase_seen, **kw)
    early = 0
    for r, ids in enumerate(free.completion_ids):
        n = next((i for i in range(1, len(ids) + 1) if _lowercase_seen(tok.decode(ids[:i], skip_special_tokens=True))),
                 len(ids))
        assert cut.completion_ids[r] == ids[:n], r
        assert int(cut.step_mask[r].sum()) == n
        for name, v in cut.values.items():
            assert torch.equal(v[r, :n], free.values[name][r, :n]), (r, name)
        if how == "token_head":
            assert torch.equal(cut.choices["temperature"][r, :n], free.choices["temperature"][r, :n])
            assert (cut.choices["temperature"][r, n:] == -1).all()
        if how == "sequence_head":
            assert cut.choices["temperature"][r] == free.choices["temperature"][r]
        early += n < len(ids)
    assert early >= 6, "too few rows stopped early: the cut is not tested"


def test_stop_when_never_decodes_a_row_that_ended_at_an_eos():
    """A row generate has finished at an EOS keeps being padded while the others run; its text cannot change, so
    the predicate sees each row only while it is live: once per generated token before its EOS. Same tokens as
    without the predicate."""
    from conftest import tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_llama(vocab_size=len(tok), seed=4, pad_token_id=0)
    adm = AdaptiveDecodingModel(model, tok)
    kw = dict(max_new_tokens=16, num_return_sequences=3, chat=False, force={"temperature": 1.0})
    torch.manual_seed(0)
    probe = adm.generate_text(["Hello", "ab"], **kw)
    # declare a token the rows produce early to be the EOS, so some rows end long before the others
    eos = collections.Counter(t for ids in probe.completion_ids for t in ids[:4]).most_common(1)[0][0]
    seen = []
    torch.manual_seed(0)
    free = adm.generate_text(["Hello", "ab"], eos_token_id=eos, **kw)
    torch.manual_seed(0)
    cut = adm.generate_text(["Hello", "ab"], eos_token_id=eos, stop_when=lambda text: seen.append(text) and False,
                            **kw)
    assert cut.completion_ids == free.completion_ids
    ended = [ids for ids in free.completion_ids if ids and ids[-1] == eos]
    assert ended and any(len(ids) < 16 for ids in ended), "no row ended early: the skip is not tested"
    assert max(len(ids) for ids in free.completion_ids) > min(len(ids) for ids in ended)
    live_steps = sum(len(ids) - (ids[-1:] == [eos]) for ids in free.completion_ids)
    assert len(seen) == live_steps


def test_stop_when_needs_the_tokenizer(tiny_model):
    adm = AdaptiveDecodingModel(tiny_model)
    ids, mask = _prompts()
    with pytest.raises(ValueError, match="needs AdaptiveDecodingModel\\(model, tokenizer\\)"):
        adm.generate(ids, mask, max_new_tokens=4, force={"temperature": 1.0}, stop_when=_lowercase_seen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apply_sampling_params_per_row_equals_hf_warpers_row_by_row(dtype):
    """Every row of a mixed batch (greedy, top-p only, top-k only, both, neither) is bit-identical to HF's stock
    warpers applied to that row alone with its scalar values, in float32 and in bf16 scores (a direct call on a
    bf16 LM's logits: temperature and the top-p threshold must round as HF's Python-float arithmetic does)."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from adaptive_decoder.modeling.sampling import apply_sampling_params

    g = torch.Generator().manual_seed(0)
    scores = (torch.randn(6, 500, generator=g) * 3).to(dtype)
    ids = torch.randint(0, 500, (6, 7), generator=g)
    rows = [(0.0, 0.9, 20), (0.7, 0.9, 0), (0.7, 1.0, 20), (1.0, 0.95, 50), (0.4, 1.0, 0), (1.0, 1.0, 0)]
    out = apply_sampling_params(ids, scores, [r[0] for r in rows], torch.tensor([r[1] for r in rows], dtype=torch.float64),
                                [r[2] for r in rows])
    for i, (t, p, k) in enumerate(rows):
        row = scores[i:i + 1]
        if t == 0.0:
            ref = torch.full_like(row, -float("inf"))
            ref[0, row.argmax()] = row.max()
        else:
            warpers = ([TemperatureLogitsWarper(t)] if t != 1.0 else []) + ([TopKLogitsWarper(k)] if k else []) + \
                      ([TopPLogitsWarper(p)] if p < 1.0 else [])
            ref = LogitsProcessorList(warpers)(ids[i:i + 1], row.clone())
        assert torch.equal(out[i:i + 1], ref), f"row {i} {(t, p, k)}"


# --- training-free samplers: force={<sampler>: value} equals plain generate(<sampler>=value) -----------------
def _sharp_model():
    """A tiny Llama with a 25x output layer: peaked next-token distributions (p_max 0.2-0.6 instead of a near-
    uniform 1/128), so every truncation sampler removes tokens and a wrong one changes the samples."""
    model = tiny_llama(seed=4)
    with torch.no_grad():
        model.lm_head.weight.mul_(25)
    return model


def _uneven_prompts():
    ids, mask = _prompts(batch=3)
    ids[1, :1], mask[1, :1] = 0, 0  # rows padded by 2, 1 and 0 tokens
    return ids, mask


SAMPLERS = [("min_p", 0.1, 0.7), ("typical_p", 0.6, 0.7), ("epsilon_cutoff", 0.02, 1.0), ("eta_cutoff", 0.05, 1.0),
            ("top_h", 0.5, 0.8)]


@pytest.mark.parametrize("name,value,temperature", SAMPLERS)
def test_forced_sampler_equals_generate(name, value, temperature):
    model = _sharp_model()
    ids, mask = _uneven_prompts()
    adm = AdaptiveDecodingModel(model)
    for seed in (0, 3):
        ref = _plain(model, ids, mask, seed, do_sample=True, temperature=temperature, top_k=0, top_p=1.0, **{name: value})
        unfiltered = _plain(model, ids, mask, seed, do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        assert not torch.equal(ref, unfiltered), f"{name}={value} removes nothing here: the test would not see a bug"
        out = _adaptive(adm, ids, mask, seed, force={"temperature": temperature, name: value})
        assert torch.equal(out.sequences, ref), f"{name}={value} seed {seed}"
        assert set(out.values[name][out.step_mask].tolist()) == {value}


def test_all_samplers_together_keep_transformers_order():
    """top-H, top-k, top-p, min-p, typical, epsilon and eta at once: only HF's order gives HF's samples."""
    model = _sharp_model()
    ids, mask = _uneven_prompts()
    kw = dict(temperature=0.9, top_h=0.9, top_k=40, top_p=0.95, min_p=0.05, typical_p=0.9, epsilon_cutoff=0.001,
              eta_cutoff=0.002, repetition_penalty=1.2)
    adm = AdaptiveDecodingModel(model)
    for seed in (0, 1):
        ref = _plain(model, ids, mask, seed, do_sample=True, num_return_sequences=2, **kw)
        out = _adaptive(adm, ids, mask, seed, num_return_sequences=2, force=kw)
        assert torch.equal(out.sequences, ref)


def test_samplers_per_row_equal_hf_warpers_row_by_row():
    """A batch mixing every sampler (and off rows) is, row by row, bit-identical to HF's warper on that row alone."""
    from transformers import (EpsilonLogitsWarper, EtaLogitsWarper, MinPLogitsWarper, TopHLogitsWarper,
                              TypicalLogitsWarper)

    from adaptive_decoder.modeling.sampling import apply_sampling_params

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(8, 300, generator=g) * 4
    ids = torch.randint(0, 300, (8, 5), generator=g)
    warpers = {"min_p": MinPLogitsWarper, "typical_p": TypicalLogitsWarper, "epsilon_cutoff": EpsilonLogitsWarper,
               "eta_cutoff": EtaLogitsWarper, "top_h": TopHLogitsWarper}
    off = {"min_p": 0.0, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "top_h": 0.0}
    values = {k: [v] * 8 for k, v in off.items()}
    chosen = [("min_p", 0.2), ("min_p", 0.05), ("typical_p", 0.5), ("epsilon_cutoff", 0.003), ("eta_cutoff", 0.01),
              ("top_h", 0.4), ("top_h", 1.0), (None, None)]
    for i, (k, v) in enumerate(chosen):
        if k:
            values[k][i] = v
    out = apply_sampling_params(ids, scores, 1.0, 1.0, 0, **values)
    for i, (k, v) in enumerate(chosen):
        row = scores[i:i + 1]
        ref = row if k is None else warpers[k](v)(ids[i:i + 1], row.clone())
        assert torch.equal(out[i:i + 1], ref), f"row {i}: {k}={v}"
        assert k is None or not torch.equal(ref, row), f"row {i}: {k}={v} removes nothing"


# --- the same contract in bfloat16 (what `dtype: auto` picks on a CPU with native bf16) ---------------------
@pytest.fixture(scope="module")
def bf16_model():
    return tiny_llama().to(torch.bfloat16)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("values", [(1.0, 1.0, 0), (0.7, 0.9, 20), (0.6, 0.95, 50), (1.3, 0.8, 0)])
def test_bf16_forced_choices_equal_plain_generate(bf16_model, level, values):
    """A bf16 LM: forced head bins (batch of 3, left padding on row 0) reproduce plain `generate` token for token."""
    t, p, k = values
    ids, mask = _prompts()
    # bins ordered least to most restrictive, so the wanted top-p and top-k are bin 0 and the other one is stricter
    head = _forced_head(bf16_model, t_idx=1, p_idx=0, k_idx=0, level=level, temps=[0.0, t], tops=[p, 0.5], topk=[k, 5])
    adm = AdaptiveDecodingModel(bf16_model, head=head)
    for seed in (0, 3):
        ref = _plain(bf16_model, ids, mask, seed, do_sample=True, temperature=t, top_p=p, top_k=k)
        out = _adaptive(adm, ids, mask, seed)
        assert torch.equal(out.sequences, ref), (values, seed)
    assert set(out.values["top_p"][out.step_mask].tolist()) == {p}


def test_bf16_force_greedy_and_repetition_penalty_equal_generate(bf16_model):
    ids, mask = _prompts()
    adm = AdaptiveDecodingModel(bf16_model)
    assert torch.equal(_adaptive(adm, ids, mask, 9, force={"temperature": 0.0}).sequences,
                       _plain(bf16_model, ids, mask, 0, do_sample=False))
    ref = _plain(bf16_model, ids, mask, 7, do_sample=True, temperature=0.6, top_p=0.95, top_k=50,
                 repetition_penalty=1.3, num_return_sequences=2)
    out = _adaptive(adm, ids, mask, 7, num_return_sequences=2,
                    force={"temperature": 0.6, "top_p": 0.95, "top_k": 50, "repetition_penalty": 1.3})
    assert torch.equal(out.sequences, ref) and out.sequences.shape[0] == 6


def test_bf16_head_inputs_reach_the_head_in_its_own_dtype(bf16_model):
    """The head stays float32 on a bf16 LM: its inputs are upcast (recorded as float32), its weights untouched."""
    ids, mask = _prompts()
    head = _forced_head(bf16_model, t_idx=5, p_idx=0, k_idx=0)
    adm = AdaptiveDecodingModel(bf16_model, head=head)
    torch.manual_seed(0)
    out = adm.generate(ids, mask, max_new_tokens=4, return_head_inputs=True)
    assert next(head.parameters()).dtype is torch.float32
    assert out.head_inputs.dtype is torch.float32


def test_bf16_repetition_penalty_equals_hf_processor():
    from transformers import RepetitionPenaltyLogitsProcessor

    from adaptive_decoder.modeling.sampling import apply_sampling_params

    g = torch.Generator().manual_seed(1)
    scores = (torch.randn(3, 300, generator=g) * 3).to(torch.bfloat16)
    ids = torch.randint(0, 300, (3, 12), generator=g)
    out = apply_sampling_params(ids, scores.clone(), 1.0, 1.0, 0, repetition_penalty=[1.3, 1.0, 0.7])
    for i, pen in enumerate((1.3, 1.0, 0.7)):
        ref = RepetitionPenaltyLogitsProcessor(pen)(ids[i:i + 1], scores[i:i + 1].clone())
        assert torch.equal(out[i:i + 1], ref), pen


# --- min-p as a head factor: forcing its bins equals plain generate(min_p=...) --------------------------------
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("m_idx,min_p", [(1, 0.05), (3, 0.2)])
def test_head_min_p_bin_equals_generate_min_p(level, m_idx, min_p):
    model = _sharp_model()
    ids, mask = _uneven_prompts()
    cfg = AdaptiveDecoderConfig(hidden_size=model.config.hidden_size, level=level, temperature_bins=[0.0, 0.7, 1.0],
                                factors=["temperature", "min_p"], min_p_bins=[0.0, 0.05, 0.1, 0.2])
    head = AdaptiveDecoderHead(cfg)
    with torch.no_grad():  # argmax = temperature 0.7 and the wanted min-p bin, for every input
        for f, idx in (("temperature", 1), ("min_p", m_idx)):
            head.outputs[f].weight.zero_()
            head.outputs[f].bias.fill_(-10.0)
            head.outputs[f].bias[idx] = 10.0
    adm = AdaptiveDecodingModel(model, head=head)
    for seed in (0, 3):
        ref = _plain(model, ids, mask, seed, do_sample=True, temperature=0.7, top_k=0, top_p=1.0, min_p=min_p)
        unfiltered = _plain(model, ids, mask, seed, do_sample=True, temperature=0.7, top_k=0, top_p=1.0)
        assert not torch.equal(ref, unfiltered), f"min_p={min_p} removes nothing here: the test would not see a bug"
        out = _adaptive(adm, ids, mask, seed)
        assert torch.equal(out.sequences, ref), f"min_p={min_p} seed {seed} ({level})"
    sel = out.step_mask if level == "token" else slice(None)
    assert set(out.values["min_p"][out.step_mask].tolist()) == {min_p}
    assert set(out.choices["min_p"][sel].tolist()) == {m_idx}


def test_head_without_min_p_factor_leaves_min_p_off(tiny_model):
    """min-p inactive: fixed 0.0 (off), and decoding is plain generate's."""
    ids, mask = _prompts()
    head = _forced_head(tiny_model, t_idx=5, p_idx=0, k_idx=0)
    assert "min_p" not in head.factors and head.config.fixed["min_p"] == 0.0
    out = _adaptive(AdaptiveDecodingModel(tiny_model, head=head), ids, mask, 0)
    assert torch.equal(out.sequences, _plain(tiny_model, ids, mask, 0, do_sample=True, temperature=1.0, top_p=1.0, top_k=0))
    assert set(out.values["min_p"][out.step_mask].tolist()) == {0.0}
