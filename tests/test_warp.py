"""The served path's sort-free warping (`modeling.warp`) against the exact one (`apply_sampling_params`): the same
kept tokens and values for every kind of row, ties and flat rows included, and no vocabulary sort where top-k or
a nucleus within the window decides."""

import pytest
import torch

from adaptive_decoder import apply_sampling_params
from adaptive_decoder.modeling.warp import warp


def both(scores, t, p, k, min_p=None, **kw):
    return warp(scores, t, p, k, min_p=min_p, **kw), apply_sampling_params(None, scores, t, p, k, min_p=min_p)


def test_mixed_rows_equal_the_exact_warping():
    torch.manual_seed(0)
    n, vocab = 64, 3000
    scores = torch.randn(n, vocab) * torch.linspace(0.5, 6, n)[:, None]  # flat to peaked rows
    g = torch.Generator().manual_seed(1)
    t = torch.tensor([0.0, 0.4, 0.7, 1.0, 1.3])[torch.randint(0, 5, (n,), generator=g)]
    p = torch.tensor([1.0, 0.5, 0.9, 0.95])[torch.randint(0, 4, (n,), generator=g)].double()
    k = torch.tensor([0, 1, 5, 20, 50])[torch.randint(0, 5, (n,), generator=g)]
    m = torch.tensor([0.0, 0.0, 0.05])[torch.randint(0, 3, (n,), generator=g)].double()
    fast, ref = both(scores, t, p, k, m)
    assert torch.equal(torch.isfinite(fast), torch.isfinite(ref))
    assert torch.equal(fast[torch.isfinite(fast)], ref[torch.isfinite(ref)])
    kept = torch.isfinite(ref).sum(-1)
    assert int(kept.min()) == 1 and int(kept.max()) > 50  # greedy rows and wide nuclei both occurred


def test_ties_at_the_kth_value_and_flat_rows_go_the_exact_way():
    scores = torch.zeros(3, 500)
    scores[0, :10] = 5.0  # ten tokens tied at the top: top-k 3 keeps all ten (HF's rule)
    scores[1] = torch.linspace(0, 1e-3, 500)  # nearly flat: the nucleus at p=0.9 is far beyond a window of 64
    scores[2, 7] = 9.0
    for t, p, k in ((1.0, 1.0, 3), (0.8, 0.9, 0), (1.0, 0.5, 0)):
        fast, ref = both(scores, t, p, k, window=64)
        # a top-p cut through tied logits keeps as many of them, but which ones is the sort's choice (either path)
        rows = [1, 2] if p < 1 else [0, 1, 2]
        assert torch.equal(torch.isfinite(fast[rows]), torch.isfinite(ref[rows])), (t, p, k)
        assert torch.equal(fast[rows][torch.isfinite(fast[rows])], ref[rows][torch.isfinite(ref[rows])])
        assert torch.equal(torch.isfinite(fast).sum(-1), torch.isfinite(ref).sum(-1))
    assert int(torch.isfinite(warp(scores, 1.0, 1.0, 3))[0].sum()) == 10


def test_no_vocabulary_sort_when_topk_or_the_window_decides(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("torch.sort called")

    torch.manual_seed(2)
    scores = torch.randn(8, 4000) * 4
    monkeypatch.setattr(torch, "sort", refuse)
    monkeypatch.setattr(torch.Tensor, "sort", refuse)
    warp(scores, 0.7, 0.9, 20)
    warp(scores, 0.7, 0.9, 0)
    with pytest.raises(AssertionError, match="torch.sort"):  # the exact path does sort: the check can fail
        apply_sampling_params(None, scores, 0.7, 0.9, 20)
