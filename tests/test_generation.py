"""AdaptiveDecodingModel behaviour: recorded latents, sequence vs token level, bad input, recompute path."""

import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from adaptive_decoder import (AdaptiveDecoderConfig, AdaptiveDecoderHead, AdaptiveDecodingModel,
                              compute_head_inputs)
from conftest import tiny_llama


@pytest.fixture
def model():
    return tiny_llama(seed=4)


def head_for(model, **kw):
    torch.manual_seed(0)
    return AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=model.config.hidden_size, intermediate_size=16, **kw))


def batch(n=3, length=5):
    ids = torch.randint(3, 128, (n, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    ids[0, :2], mask[0, :2] = 0, 0
    return ids, mask


def test_token_level_records_choice_per_step_and_matches_head_argmax(model):
    head = head_for(model, level="token")
    adm = AdaptiveDecodingModel(model, head=head)
    ids, mask = batch()
    out = adm.generate(ids, mask, max_new_tokens=10, return_head_inputs=True)
    n, t = out.step_mask.shape
    assert out.choices["temperature"].shape == (3, t) and out.head_inputs.shape == (3, t, 32)
    # what the head saw is the true final hidden state: recomputing it by teacher forcing agrees
    full_mask = torch.cat([mask, torch.ones(3, t, dtype=torch.long)], 1)
    rec = compute_head_inputs(model, out.sequences, full_mask, out.prompt_length, "token", out.step_mask)
    torch.testing.assert_close(rec, out.head_inputs, atol=1e-4, rtol=1e-4)
    valid = out.step_mask
    for f in head.factors:
        torch.testing.assert_close(head.select(out.head_inputs)[f][valid], out.choices[f][valid])


def test_sequence_level_decides_once_from_last_prompt_token(model):
    head = head_for(model, level="sequence", selection="sample")
    adm = AdaptiveDecodingModel(model, head=head)
    ids, mask = batch()
    out = adm.generate(ids, mask, max_new_tokens=8, num_return_sequences=4, head_seed=0, return_head_inputs=True)
    assert out.choices["temperature"].shape == (12,)
    assert out.head_inputs.shape == (12, 32)
    rec = compute_head_inputs(model, out.sequences, torch.cat([mask.repeat_interleave(4, 0),
                              torch.ones(12, out.sequences.shape[1] - 5, dtype=torch.long)], 1), 5, "sequence")
    torch.testing.assert_close(rec, out.head_inputs, atol=1e-4, rtol=1e-4)
    # head sampling is seeded separately: same head_seed, same latents
    again = adm.generate(ids, mask, max_new_tokens=8, num_return_sequences=4, head_seed=0)
    assert all(torch.equal(out.choices[f], again.choices[f]) for f in head.factors)


def test_values_have_one_layout_whoever_decided(model):
    """Token head, sequence head and force= give the same keys, each [batch, steps] over the generated steps,
    the applied value at real steps and NaN / -1 after a row ends."""
    ids, mask = batch()
    # EOS = greedy row 0's second token, so that row (greedy below too) ends before the others
    eos = int(AdaptiveDecodingModel(model).generate(ids, mask, max_new_tokens=2, force={"temperature": 0.0}).sequences[0, -1])
    outs = {lv: AdaptiveDecodingModel(model, head=head_for(model, level=lv)).generate(ids, mask, max_new_tokens=12,
                                                                                      eos_token_id=eos)
            for lv in ("token", "sequence")}
    forced = AdaptiveDecodingModel(model).generate(ids, mask, max_new_tokens=12, eos_token_id=eos,
                                                   force={"temperature": [0.0, 0.5, 1.0], "top_k": 20})
    outs["force"] = forced
    assert {k: o.level for k, o in outs.items()} == {"token": "token", "sequence": "sequence", "force": "sequence"}
    for name, o in outs.items():
        assert set(o.values) == {"temperature", "top_p", "top_k", "min_p", "repetition_penalty"}, name
        for k, v in o.values.items():
            assert v.shape == o.step_mask.shape, (name, k)
            after = v[~o.step_mask]
            assert (after == -1).all() if v.dtype == torch.long else after.isnan().all(), (name, k)
    assert not forced.step_mask.all(), "no row ended early: the masking is not tested"
    m = forced.step_mask
    assert [set(forced.values["temperature"][r][m[r]].tolist()) for r in range(3)] == [{0.0}, {0.5}, {1.0}]
    assert set(forced.values["top_k"][m].tolist()) == {20} and set(forced.values["repetition_penalty"][m].tolist()) == {1.0}
    seq = outs["sequence"]
    for r in range(3):  # one decision per row, repeated over its steps
        assert len(set(seq.values["temperature"][r][seq.step_mask[r]].tolist())) == 1


def test_head_sampling_does_not_consume_token_rng(model):
    """Latent sampling uses its own generator: with every latent forced to T=1, tokens match plain sampling."""
    head = head_for(model, level="token", selection="sample", temperature_bins=[1.0], top_p_bins=[1.0], top_k_bins=[0])
    adm = AdaptiveDecodingModel(model, head=head)
    ids, mask = batch()
    torch.manual_seed(11)
    ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=True, temperature=1.0,
                         top_p=1.0, top_k=0)
    torch.manual_seed(11)
    assert torch.equal(adm.generate(ids, mask, max_new_tokens=10, head_seed=3).sequences, ref)


def test_streamer_and_stopping_criteria_pass_through(model):
    class Collect:
        def __init__(self):
            self.chunks = []

        def put(self, value):
            self.chunks.append(value)

        def end(self):
            self.chunks.append("END")

    class StopAfter(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= 8, dtype=torch.bool)

    adm = AdaptiveDecodingModel(model, head=head_for(model))
    ids, mask = batch(n=2)
    streamer = Collect()
    out = adm.generate(ids[1:], mask[1:], max_new_tokens=20, streamer=streamer,
                       stopping_criteria=StoppingCriteriaList([StopAfter()]))
    assert out.sequences.shape[1] == 8
    assert streamer.chunks[-1] == "END" and len(streamer.chunks) == 1 + 3 + 1


def test_bad_generate_input(model):
    adm = AdaptiveDecodingModel(model, head=head_for(model))
    ids, mask = batch()
    with pytest.raises(ValueError, match="num_beams"):
        adm.generate(ids, mask, num_beams=2, max_new_tokens=4)
    with pytest.raises(ValueError, match="force="):
        adm.generate(ids, mask, temperature=0.5, max_new_tokens=4)
    with pytest.raises(ValueError, match="non-empty"):
        adm.generate(torch.zeros(0, 0, dtype=torch.long), max_new_tokens=4)
    with pytest.raises(ValueError, match="top_p"):
        adm.generate(ids, mask, force={"top_p": 1.5}, max_new_tokens=4)
    with pytest.raises(ValueError, match="unknown keys in force"):
        adm.generate(ids, mask, force={"temp": 0.5}, max_new_tokens=4)
    with pytest.raises(ValueError, match="3 values"):
        adm.generate(ids, mask, force={"temperature": [0.1, 0.2]}, max_new_tokens=4)
    with pytest.raises(ValueError, match="no head attached"):
        AdaptiveDecodingModel(model).generate(ids, mask, max_new_tokens=4)


# ----------------------------------------------------------------------------------- refused sampling values
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("force, match", [
    ({"top_p": NAN}, r"force\['top_p'\] must be .*got nan"),  # was: taken as "top-p off", recorded as nan
    ({"temperature": NAN}, r"force\['temperature'\] must be .*got nan"),  # was: a torch error naming nothing
    ({"repetition_penalty": NAN}, r"force\['repetition_penalty'\] must be .*got nan"),
    ({"temperature": INF}, r"force\['temperature'\] must be a finite.*got inf"),  # was: uniform sampling
    ({"repetition_penalty": INF}, r"force\['repetition_penalty'\] must be a finite.*got inf"),
    ({"top_k": 2.7}, r"force\['top_k'\] must be a non-negative integer.*got 2.7"),  # was: silently 2
    ({"top_k": -INF}, r"force\['top_k'\].*got -inf"),
    ({"temperature": torch.tensor([0.5, NAN, 0.7])}, r"force\['temperature'\].*got nan at index 1"),  # per row
    ({"top_p": [0.9, 0.9, INF]}, r"force\['top_p'\].*got inf at index 2"),
    ({"top_k": torch.tensor([5.0, 2.5, 0.0])}, r"force\['top_k'\].*got 2.5 at index 1"),
    ({"temperature": True}, r"force\['temperature'\].*got True \(bool\)"),
    ({"temperature": "0.7"}, r"force\['temperature'\].*got '0.7' \(str\)"),
])
def test_force_refuses_non_finite_and_non_integer_values_naming_them(model, force, match):
    adm = AdaptiveDecodingModel(model)
    ids, mask = batch()
    with pytest.raises(ValueError, match=match):
        adm.generate(ids, mask, force=force, max_new_tokens=2)


def test_force_accepts_integral_float_top_k(model):
    ids, mask = batch()
    out = AdaptiveDecodingModel(model).generate(ids, mask, force={"top_k": 2.0}, max_new_tokens=2)
    assert set(out.values["top_k"][out.step_mask].tolist()) == {2} and out.values["top_k"].dtype == torch.long


@pytest.mark.parametrize("name, value", [("temperature", NAN), ("temperature", INF), ("top_p", NAN), ("top_k", 2.7),
                                         ("repetition_penalty", NAN), ("top_k", [1, 2.5])])
def test_sampler_refuses_what_force_refuses(name, value):
    """apply_sampling_params is public too: the same check, not a truncating cast or a NaN passed to torch."""
    from adaptive_decoder.modeling.sampling import apply_sampling_params

    kw = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": None, name: value}
    with pytest.raises(ValueError, match=rf"^{name} must be .*got"):
        apply_sampling_params(torch.zeros(2, 3, dtype=torch.long), torch.randn(2, 10), kw["temperature"], kw["top_p"],
                              kw["top_k"], kw["repetition_penalty"])


# --------------------------------------------------------------------------------------- misleading messages
@pytest.mark.parametrize("kw, match", [
    ({"num_return_sequences": 0}, "num_return_sequences must be a positive integer, got 0"),
    ({"num_return_sequences": 1.5}, r"num_return_sequences must be a positive integer, got 1.5 \(float\)"),
    ({"max_new_tokens": 2.5}, r"max_new_tokens must be a positive integer, got 2.5 \(float\)"),  # was: 3 tokens
    ({"max_new_tokens": 0}, "max_new_tokens must be a positive integer, got 0"),
    ({"max_new_tokens": True}, r"max_new_tokens must be a positive integer, got True \(bool\)"),
    ({"return_dict_in_generate": True, "output_scores": True}, r"\['output_scores'\] not supported"),  # was: dropped
    ({"return_dict_in_generate": True, "output_logits": True}, r"\['output_logits'\] not supported"),
])
def test_bad_counts_and_unsupported_outputs_are_refused_by_name(model, kw, match):
    adm = AdaptiveDecodingModel(model)
    ids, mask = batch()
    with pytest.raises(ValueError, match=match):
        adm.generate(ids, mask, force={"temperature": 0.0}, **{"max_new_tokens": 2, **kw})


def test_generate_text_refuses_fractional_max_new_tokens(model):
    from conftest import tiny_tokenizer

    adm = AdaptiveDecodingModel(tiny_llama(vocab_size=259, seed=4), tiny_tokenizer())
    with pytest.raises(ValueError, match=r"max_new_tokens must be a positive integer, got 2.5"):
        adm.generate_text(["hi"], max_new_tokens=2.5, force={"temperature": 0.0})


def test_return_dict_alone_still_works(model):
    ids, mask = batch()
    out = AdaptiveDecodingModel(model).generate(ids, mask, force={"temperature": 0.0}, max_new_tokens=2,
                                                return_dict_in_generate=True)
    assert out.sequences.shape == (3, 7)


def test_bf16_lm_head_gets_a_contiguous_input_so_the_prefill_does_not_copy_the_weight_per_row(tiny_model_dir):
    """`logits_to_keep=1` hands lm_head a strided [B, 1, H] view of the prompt's hidden states, and torch's CPU
    bf16 linear on such a view copies the whole weight once per row (Gemma-3 at 64 rows: 21 GB, OOM). Every path
    (AdaptiveDecodingModel on any model, a model from load_base_model) gives lm_head a contiguous tensor, and
    the logits are the same bits as through the strided view."""
    from adaptive_decoder.modeling.models import load_base_model

    model = tiny_llama(seed=4).to(torch.bfloat16)
    ids, mask = batch(n=3, length=6)
    with torch.no_grad():
        strided = model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits  # no hook yet
    seen = []
    model.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].is_contiguous()))
    adm = AdaptiveDecodingModel(model)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits, strided)
    adm.generate(ids, mask, max_new_tokens=3, force={"temperature": 0.4})
    compute_head_inputs(model, ids, mask, 3, "sequence")
    assert seen and all(seen), seen
    AdaptiveDecodingModel(model)  # a second wrapper (with_head) does not stack a second hook
    assert len(model.get_output_embeddings()._forward_pre_hooks) == 1

    loaded, _ = load_base_model(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    seen.clear()
    loaded.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].is_contiguous()))
    with torch.no_grad():
        loaded(input_ids=ids % 259, attention_mask=mask, logits_to_keep=1)
    assert seen == [True]
