"""Metric functions against hand-computed values on small tensors."""
import math

import pytest
import torch

from optimizers import metrics as M


def test_perplexity_from_nll():
    assert M.perplexity_from_nll(2 * math.log(4.0), 2) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        M.perplexity_from_nll(1.0, 0)


def test_kl_divergence_hand_math():
    p = torch.tensor([[math.log(0.5), math.log(0.5)]], dtype=torch.float64)
    q = torch.tensor([[math.log(0.25), math.log(0.75)]], dtype=torch.float64)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # 0.1438
    assert M.kl_divergence(p, q) == pytest.approx(expected, rel=1e-9)
    assert M.kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)


def test_top1_agreement_and_rel_error():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 2.0], [3.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert M.top1_agreement(a, b) == 0.75
    assert M.rel_error(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 5.0])) == pytest.approx(0.2)


def test_sqnr_db():
    ref = torch.tensor([1.0, 1.0, 1.0, 1.0])
    out = ref + torch.tensor([0.1, -0.1, 0.1, -0.1])
    assert M.sqnr_db(ref, out) == pytest.approx(20.0)
    assert M.sqnr_db(ref, ref) == math.inf


def test_cosine_and_spearman():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    assert M.mean_cosine(a, b) == pytest.approx((1 / math.sqrt(2) + 1) / 2)
    assert M.spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0])) == pytest.approx(1.0)
    assert M.spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    # ties get average ranks: x ranks [0,1.5,1.5,3] vs y ranks [0,1,2,3] → 0.9487
    assert M.spearman(torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.9486833, rel=1e-6)
