"""The common-random-numbers sampler of the vllm backend (`integrations.vllm.crn`, `per_request`), without vLLM:
its draws follow the processed distribution, depend only on (seed, step), and the served model's per-request
warping returns exactly the draw a direct implementation makes. Runs in the main suite and in `make test-vllm`.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, apply_sampling_params
from adaptive_decoder.integrations.vllm.crn import (HEAD_STREAM, draw_tokens, inverse_cdf, point_mass, request_seed,
                                                   select_rows, uniforms)
from adaptive_decoder.modeling.noise import _hash63
from adaptive_decoder.integrations.vllm.per_request import REQUEST_KEY, RequestDecoder, request_spec


def test_draws_follow_the_processed_distribution():
    torch.manual_seed(0)
    logits = torch.randn(1, 12) * 2
    scores = apply_sampling_params(None, logits, 0.7, 0.95, 8)  # temperature, then top-k and top-p masks
    p = scores.softmax(-1)[0].double()
    n = 6000
    tokens = draw_tokens(scores.expand(n, -1), list(range(n)), [3] * n)
    freq = torch.bincount(tokens, minlength=12).double() / n
    assert float(freq[p == 0].sum()) == 0.0  # masked tokens are never drawn
    tol = 4.5 * torch.sqrt(p * (1 - p) / n) + 1.0 / n  # 4.5 binomial standard errors per token
    assert bool((freq - p).abs().le(tol).all()), (freq, p)
    assert int((p > 0).sum()) >= 4  # the check covered a real distribution, not a point mass


def test_noise_depends_only_on_seed_and_step():
    torch.manual_seed(1)
    scores = torch.randn(4, 50)
    together = draw_tokens(scores, [11, 12, 13, 14], [0, 5, 5, 9])
    alone = [int(draw_tokens(scores[i : i + 1], [s], [t])[0]) for i, s, t in zip(range(4), [11, 12, 13, 14], [0, 5, 5, 9])]
    assert together.tolist() == alone
    u = uniforms([7, 7, 7, 8], [3, 3, 4, 3])
    assert u[0] == u[1] and len({float(x) for x in u[1:]}) == 3
    # the uniform is the keyed hash's top 53 bits plus half a unit: strictly inside (0, 1)
    assert float(u[0]) == ((_hash63("u", 7, 3, 0, "") >> 10) + 0.5) * 2.0**-53
    assert float(uniforms([7], [3], HEAD_STREAM, "top_p")[0]) != float(u[0])
    greedy = apply_sampling_params(None, scores, 0.0, 1.0, 0)  # one finite score per row: the argmax, any noise
    assert draw_tokens(greedy, [1, 2, 3, 4], [0, 0, 0, 0]).tolist() == scores.argmax(-1).tolist()
    pm = point_mass(scores, together)
    assert pm.argmax(-1).tolist() == together.tolist() and int(torch.isfinite(pm).sum()) == 4


def test_inverse_cdf_by_hand():
    w = torch.tensor([[0.0, 1.0, 0.0, 3.0, 0.0]]).expand(5, -1)
    # cumulative 0, 1, 1, 4, 4: u * 4 below 1 -> index 1; from 1 on -> index 3; never a zero-weight index
    u = torch.tensor([0.0, 0.2499, 0.25, 0.9, 1.0], dtype=torch.float64)
    assert inverse_cdf(w, u).tolist() == [1, 1, 3, 3, 3]  # u * total == total: the last positive index


def test_request_seed_is_per_prompt_and_sample():
    assert request_seed(5, [1, 2, 3], 0) == request_seed(5, [1, 2, 3], 0)
    assert len({request_seed(5, [1, 2, 3], 0), request_seed(5, [1, 2, 3], 1), request_seed(5, [1, 2], 0),
                request_seed(6, [1, 2, 3], 0)}) == 4
    assert 0 <= request_seed(2**62, list(range(100)), 7) < 2**63  # a valid manual_seed / msgpack integer


def params(spec):
    return SimpleNamespace(extra_args={REQUEST_KEY: spec} if spec is not None else None)


def make_head(path, level, **kw):
    torch.manual_seed(3)
    head = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=16, num_layers=1, level=level,
                                                     temperature_bins=[0.0, 0.5, 1.0], top_k_bins=[0, 5], **kw))
    with torch.no_grad():
        for lin in head.outputs.values():
            lin.weight.mul_(30)  # choices that depend on the hidden state
    head.save_pretrained(path)
    return AdaptiveDecoderHead.from_pretrained(path)


def test_per_request_rows_are_the_direct_draw(tmp_path):
    """What the served model returns for a batch of mixed requests: each spec row the point mass of the seeded draw
    from its directly processed scores (forced values, a repetition penalty, a token-level head), a row without a
    spec untouched."""
    head = make_head(tmp_path / "head", "token")
    torch.manual_seed(4)
    hidden, logits = torch.randn(4, 16), torch.randn(4, 40) * 3
    ids = [[3, 4, 5], logits[1].topk(3).indices.tolist() + [6], [7, 8, 9, 9], [1]]  # row 1 penalises its likeliest
    specs = [{"seed": 21, "force": {"temperature": 0.8, "top_p": 0.9, "top_k": 10}},
             {"seed": 22, "force": {"temperature": 1.0, "repetition_penalty": 1.7, "min_p": 0.05}},
             {"seed": 23, "head": str(tmp_path / "head"), "selection": "sample", "epsilon": 0.2, "head_seed": 99},
             None]
    steps = [0, 4, 2, 1]
    out = RequestDecoder().warp_rows(hidden, logits, [request_spec(params(s)) for s in specs], steps,
                                     token_ids=lambda i: ids[i])
    assert torch.equal(out[3], logits[3])
    direct = [apply_sampling_params(None, logits[:1], 0.8, 0.9, 10),
              apply_sampling_params(torch.tensor([ids[1]]), logits[1:2], 1.0, 1.0, 0, repetition_penalty=1.7, min_p=0.05)]
    c = {f: int(x[0]) for f, x in select_rows(head, hidden[2:3], "sample", 0.2, [99], [2]).items()}
    v = head.values({f: torch.tensor([x]) for f, x in c.items()}, shape=(1,))
    direct.append(apply_sampling_params(None, logits[2:3], v["temperature"], v["top_p"], v["top_k"], min_p=v["min_p"]))
    for i, d in enumerate(direct):
        token = int(draw_tokens(d, [specs[i]["seed"]], [steps[i]])[0])
        assert out[i].argmax().item() == token and int(torch.isfinite(out[i]).sum()) == 1
    # the penalty changed the draw's distribution (the test can tell a row that ignored it)
    assert not torch.equal(direct[1], apply_sampling_params(None, logits[1:2], 1.0, 1.0, 0, min_p=0.05))


def test_sequence_level_head_decides_once_per_request(tmp_path):
    make_head(tmp_path / "head", "sequence")
    dec = RequestDecoder()
    spec = {"seed": 1, "head": str(tmp_path / "head"), "selection": "argmax", "head_seed": 0}
    torch.manual_seed(5)
    hs = torch.randn(40, 16)
    first = dec.row_values(hs[0], spec, 0)
    later = [dec.row_values(h, spec, 3) for h in hs[1:]]
    assert all(v == first for v in later)
    # the same head at token level would have changed its mind over these hidden states
    tok = make_head(tmp_path / "tok", "token")
    picks = select_rows(tok, hs, "argmax", 0.0, [0] * 40, [0] * 40)
    assert len({tuple(int(c[i]) for c in picks.values()) for i in range(40)}) > 1


def test_head_draws_do_not_depend_on_the_batch(tmp_path):
    """A row's sampled bins are a function of its hidden state, seed and step: the same alone or among others."""
    head = make_head(tmp_path / "head", "token")
    torch.manual_seed(6)
    hs, seeds, steps = torch.randn(12, 16), list(range(100, 112)), [0, 3, 1, 7, 2, 2, 5, 0, 9, 4, 4, 1]
    together = select_rows(head, hs, "sample", 0.3, seeds, steps)
    for i in range(12):
        alone = select_rows(head, hs[i : i + 1], "sample", 0.3, seeds[i : i + 1], steps[i : i + 1])
        assert {f: int(c[0]) for f, c in alone.items()} == {f: int(c[i]) for f, c in together.items()}
    assert len({tuple(int(c[i]) for c in together.values()) for i in range(12)}) > 1  # they really were sampled


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="must be a dict"):
        request_spec(SimpleNamespace(extra_args={REQUEST_KEY: 3}))
    with pytest.raises(ValueError, match="needs 'force' or 'head'"):
        RequestDecoder().warp_rows(torch.zeros(1, 4), torch.zeros(1, 8), [{"seed": 1}], [0])
    with pytest.raises(ValueError, match=r"request values \['beam_width'\] are not supported"):
        RequestDecoder().warp_rows(torch.zeros(1, 4), torch.zeros(1, 8), [{"seed": 1, "force": {"beam_width": 2}}], [0])
    assert math.isfinite(float(uniforms([0], [0]).sum()))
