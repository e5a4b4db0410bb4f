"""Low-rank primitives against the math: the rank-r error is the norm of the dropped singular
values (Eckart–Young), the energy and error rules pick the smallest rank, the swap computes B A x + b."""
import pytest
import torch
from torch import nn

from optimizers import lowrank as L


@pytest.mark.parametrize("shape, rank", [((48, 32), 5), ((17, 29), 16), ((8, 8), 8)])
def test_svd_error_is_tail_singular_values(shape, rank):
    torch.manual_seed(0)
    w = torch.randn(*shape)
    b, a = L.truncated_svd(w, rank)
    assert b.shape == (shape[0], rank) and a.shape == (rank, shape[1])
    s = torch.linalg.svdvals(w.double())
    assert torch.isclose((w.double() - (b @ a).double()).norm(), s[rank:].norm(), atol=1e-4)


def test_rank_for_energy():
    s = torch.tensor([3.0, 2.0, 1.0, 0.5])  # energies 9, 4, 1, 0.25 of 14.25
    assert L.rank_for_energy(s, 9 / 14.25) == 1
    assert L.rank_for_energy(s, 9 / 14.25 + 1e-3) == 2
    assert L.rank_for_energy(s, 1.0) == 4
    with pytest.raises(ValueError):
        L.rank_for_energy(s, 0.0)


def test_rank_for_error_is_the_smallest_meeting_the_bound():
    s = torch.tensor([3.0, 2.0, 1.0, 0.5])  # tail errors: √(5.25/14.25) = 0.607, √(1.25/14.25) = 0.296, 0.132, 0
    assert [round(L.tail_error(s, r), 3) for r in range(5)] == [1.0, 0.607, 0.296, 0.132, 0.0]
    assert L.rank_for_error(s, 0.61) == 1 and L.rank_for_error(s, 0.3) == 2 and L.rank_for_error(s, 0.1) == 4
    with pytest.raises(ValueError, match="max_error"):
        L.rank_for_error(s, 1.0)


def test_saves_params_and_factorize():
    assert L.saves_params(64, 64, 31) and not L.saves_params(64, 64, 32)
    torch.manual_seed(0)
    lin = nn.Linear(20, 12)
    two = L.factorize_linear(lin, 12)  # full rank: exact
    x = torch.randn(3, 20)
    assert torch.allclose(two(x), lin(x), atol=1e-5)
    assert two[0].weight.shape == (12, 20) and two[1].weight.shape == (12, 12) and two[0].bias is None
    with pytest.raises(ValueError, match="rank=13"):
        L.factorize_linear(lin, 13)
