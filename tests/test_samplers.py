"""Samplers not in transformers (top-nσ, EDT) against hand-computed examples and their papers' invariants, and the
validation every sampler value goes through."""

import math

import pytest
import torch

from adaptive_decoder import AdaptiveDecodingModel
from adaptive_decoder.modeling.samplers import EDT_BASE, edt_temperature, step_entropy, top_nsigma_mask
from adaptive_decoder.modeling.sampling import SAMPLER_OFF, apply_sampling_params, validate_sampling_value

NEG = -float("inf")


def _apply(scores, temperature=1.0, **kw):
    return apply_sampling_params(torch.zeros(scores.shape[0], 1, dtype=torch.long), scores, temperature, 1.0, 0, **kw)


def test_top_nsigma_hand_computed():
    # logits [4, 3, 1, 0]: mean 2, sample std sqrt(10/3) = 1.8257; max - 1·σ = 2.174 keeps {4, 3};
    # max - 2·σ = 0.349 keeps {4, 3, 1}
    s = torch.tensor([[4.0, 3.0, 1.0, 0.0]])
    sigma = math.sqrt(10 / 3)
    assert top_nsigma_mask(s, torch.tensor([1.0])).tolist() == [[False, False, True, True]]
    assert top_nsigma_mask(s, torch.tensor([2.0])).tolist() == [[False, False, False, True]]
    assert 4 - 2 * sigma > 0 and 4 - 2 * sigma < 1
    out = _apply(s, top_nsigma=1.0)
    assert out.tolist() == [[4.0, 3.0, NEG, NEG]]


def test_top_nsigma_ignores_banned_tokens():
    # an earlier processor banned token 4: sigma over the finite [4, 3, 1, 0] only, as above
    s = torch.tensor([[4.0, 3.0, 1.0, 0.0, NEG]])
    assert top_nsigma_mask(s, torch.tensor([1.0])).tolist() == [[False, False, True, True, True]]


def test_top_nsigma_kept_set_is_temperature_invariant():
    """The paper's invariant: the kept set is the same at every temperature (only the probabilities change)."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 500, generator=g) * 3
    kept = [torch.isfinite(_apply(s.clone(), temperature=t, top_nsigma=1.5)) for t in (0.3, 0.7, 1.0, 1.5, 3.0)]
    for k in kept[1:]:
        assert torch.equal(k, kept[0])
    assert 1 < int(kept[0][0].sum()) < 500  # it does truncate


def test_edt_temperature_hand_computed():
    # uniform over 4 tokens: H = ln 4, so T = T0 · 0.8^(θ / ln 4)
    s = torch.zeros(1, 4)
    assert step_entropy(s).item() == pytest.approx(math.log(4))
    t = edt_temperature(s, torch.tensor([0.7]), torch.tensor([1.0]))
    assert t.item() == pytest.approx(0.7 * EDT_BASE ** (1 / math.log(4)), rel=1e-6)
    # probabilities [0.5, 0.25, 0.25]: H = 1.5 ln 2
    s = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    t = edt_temperature(s, torch.tensor([1.0]), torch.tensor([2.0]))
    assert t.item() == pytest.approx(0.8 ** (2 / (1.5 * math.log(2))), rel=1e-6)


def test_edt_scales_by_its_temperature_and_lower_entropy_means_lower_temperature():
    s = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.3, 0.2, 0.1, 0.0]])  # row 0 is confident, row 1 nearly flat
    t = edt_temperature(s, torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.5]))
    assert t[0] < t[1] < 1.0
    out = _apply(s.clone(), temperature=1.0, edt_theta=0.5)
    assert torch.allclose(out, s / t[:, None])
    # theta = 0 is off: T = T0 exactly, scores untouched at T0 = 1
    assert torch.equal(_apply(s.clone(), temperature=1.0, edt_theta=0.0), s)


def test_edt_on_a_point_mass_is_greedy():
    s = torch.tensor([[0.0, NEG, NEG], [5.0, 4.0, 3.0]])
    out = _apply(s.clone(), temperature=1.0, edt_theta=[1.0, 0.0])
    assert out[0].tolist() == [0.0, NEG, NEG]
    # a tiny-but-positive EDT temperature that overflows the scaled logits also decodes greedily
    s = torch.tensor([[10.0, 0.0, 0.0]])
    theta = float(step_entropy(s)) * math.log(1e-39) / math.log(EDT_BASE)  # T ~ 1e-39: 10 / T overflows float32
    assert 0 < edt_temperature(s, torch.tensor([1.0]), torch.tensor([theta])).item() < 1e-38
    out = _apply(s.clone(), temperature=1.0, edt_theta=theta)
    assert out.tolist() == [[10.0, NEG, NEG]]


def test_samplers_leave_greedy_rows_alone():
    s = torch.randn(2, 50, generator=torch.Generator().manual_seed(1))
    out = _apply(s.clone(), temperature=[0.0, 1.0], min_p=0.3, top_nsigma=1.0, edt_theta=1.0)
    assert torch.isfinite(out[0]).sum() == 1 and out[0].argmax() == s[0].argmax()


@pytest.mark.parametrize("name,bad", [("min_p", 1.5), ("min_p", -0.1), ("typical_p", 0.0), ("typical_p", 1.2),
                                      ("epsilon_cutoff", 1.0), ("eta_cutoff", -0.01), ("top_h", 1.01),
                                      ("top_nsigma", -1.0), ("edt_theta", -0.5), ("min_p", float("nan")),
                                      ("top_nsigma", float("inf"))])
def test_bad_sampler_values_are_refused_everywhere(tiny_model, name, bad):
    with pytest.raises(ValueError, match=name):
        validate_sampling_value(name, bad)
    with pytest.raises(ValueError, match=name):
        _apply(torch.zeros(2, 5), **{name: [SAMPLER_OFF[name], bad]})
    ids = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"force\['{name}'\]"):
        AdaptiveDecodingModel(tiny_model).generate(ids, max_new_tokens=2, force={name: bad})


def test_off_values_change_nothing(tiny_model):
    """Every sampler at its off value gives the plain config's samples bit for bit."""
    ids = torch.randint(3, 128, (2, 5), generator=torch.Generator().manual_seed(0))
    adm = AdaptiveDecodingModel(tiny_model)
    torch.manual_seed(0)
    plain = adm.generate(ids, max_new_tokens=12, force={"temperature": 0.8}).sequences
    torch.manual_seed(0)
    off = adm.generate(ids, max_new_tokens=12, force={"temperature": 0.8, **SAMPLER_OFF}).sequences
    assert torch.equal(plain, off)


def test_stock_sampler_kwargs_are_refused(tiny_model):
    ids = torch.ones(1, 3, dtype=torch.long)
    for k in ("min_p", "epsilon_cutoff", "eta_cutoff", "top_h", "typical_p"):
        with pytest.raises(ValueError, match="force="):
            AdaptiveDecodingModel(tiny_model).generate(ids, max_new_tokens=2, force={}, **{k: 0.1})
