"""Conv-kernel decompositions against the math: a tensor of exact CP / Tucker-2 rank is recovered,
each conv chain computes what one conv with the reconstructed kernel computes (stride, padding,
dilation, bias, odd shapes), the error falls with the rank, and the parameter counts say where a
decomposition saves nothing."""
import pytest
import torch
from torch import nn

from optimizers import lowrank as L
from optimizers import tensor_decomp as D
from optimizers.workloads.digits_cnn import DigitsCNN


def random_cp(shape, rank, seed=0):
    g = torch.Generator().manual_seed(seed)
    return D.cp_reconstruct([torch.randn(n, rank, generator=g, dtype=torch.float64) for n in shape])


def test_unfold_khatri_rao_and_reconstruct_agree_with_einsum():
    fs = [torch.randn(n, 3, dtype=torch.float64) for n in (5, 4, 3, 2)]
    t = torch.einsum("ar,br,cr,dr->abcd", *fs)
    assert torch.allclose(D.cp_reconstruct(fs), t)
    assert torch.allclose(D.unfold(t, 2), fs[2] @ D.khatri_rao([fs[0], fs[1], fs[3]]).T)
    m = torch.randn(7, 4, dtype=torch.float64)
    assert torch.allclose(D.mode_product(t, m, 1), torch.einsum("jb,abcd->ajcd", m, t))


@pytest.mark.parametrize("shape, rank", [((8, 6, 3, 3), 3), ((16, 12, 3, 5), 5), ((5, 7, 1, 3), 2)])
def test_cp_als_recovers_an_exact_rank_r_tensor(shape, rank):
    t = random_cp(shape, rank)
    factors, err = D.cp_als(t, rank, iters=1000, tol=1e-15)
    assert [f.shape for f in factors] == [(n, rank) for n in shape]
    assert err <= 1e-6 and D.rel_error(t, D.cp_reconstruct(factors)) <= 1e-6  # observed ~5e-15


def test_tucker2_recovers_an_exact_rank_tensor_and_keeps_full_modes_as_identity():
    g = torch.Generator().manual_seed(1)
    core = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    u_out, u_in = (torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))[0] for n, r in ((10, 3), (7, 2)))
    k = D.tucker2_reconstruct(core, u_out, u_in)
    for iters in (0, 2):
        c, uo, ui = D.tucker2(k, (3, 2), hooi_iters=iters)
        assert c.shape == (3, 2, 3, 3) and D.rel_error(k, D.tucker2_reconstruct(c, uo, ui)) <= 1e-6  # observed ~1e-15
    c, uo, ui = D.tucker2(k, (10, 2))
    assert uo is None and c.shape == (10, 2, 3, 3)  # a rank keeping every out channel needs no 1×1 conv
    with pytest.raises(ValueError, match="ranks"):
        D.tucker2(k, (11, 2))


CONVS = [dict(in_channels=6, out_channels=10, kernel_size=3, padding=1),
         dict(in_channels=5, out_channels=7, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
         dict(in_channels=4, out_channels=9, kernel_size=(5, 3), stride=2, bias=False),
         dict(in_channels=3, out_channels=8, kernel_size=3, padding="same")]


@pytest.mark.parametrize("spec", CONVS)
def test_chains_compute_the_conv_of_the_reconstructed_kernel(spec):
    torch.manual_seed(0)
    conv = nn.Conv2d(**spec)
    x = torch.randn(2, spec["in_channels"], 13, 11)

    def same_as_reconstructed(chain, kernel):
        ref = nn.Conv2d(**spec)
        with torch.no_grad():
            ref.weight.copy_(kernel)
            if conv.bias is not None:
                ref.bias.copy_(conv.bias)
        assert (chain(x) - ref(x)).abs().max() <= 1e-5 * ref(x).abs().max()  # observed ~3e-7

    factors, _ = D.cp_als(conv.weight, 4, iters=50)
    same_as_reconstructed(D.cp_conv(conv, factors), D.cp_reconstruct(factors))
    core, u_out, u_in = D.tucker2(conv.weight, (3, 2))
    chain = D.tucker_conv(conv, core, u_out, u_in)
    assert [type(m) for m in chain] == [nn.Conv2d] * 3
    same_as_reconstructed(chain, D.tucker2_reconstruct(core, u_out, u_in))


def test_pointwise_svd_chain_matches_the_1x1_conv_at_full_rank():
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 8, 1, stride=2, padding=1)
    x = torch.randn(2, 12, 9, 9)
    assert torch.allclose(D.pointwise_svd_conv(conv, 8)(x), conv(x), atol=1e-5)


def test_error_falls_with_rank():
    torch.manual_seed(0)
    k = torch.randn(12, 8, 3, 3)
    cp = [D.cp_als(k, r, iters=60)[1] for r in (2, 6, 16)]
    assert cp[0] > cp[1] > cp[2]  # observed 0.94 > 0.83 > 0.55 (random kernel: flat spectrum)
    tk = [D.rel_error(k, D.tucker2_reconstruct(*D.tucker2(k, (r, r)))) for r in (2, 5, 8)]
    assert tk[0] > tk[1] > tk[2]


def test_parameter_counts_and_where_nothing_is_saved():
    assert D.cp_params(64, 32, 3, 3, 10) == 10 * (64 + 32 + 3 + 3)
    r = D.cp_max_rank(64, 32, 3, 3)
    assert D.cp_params(64, 32, 3, 3, r) < 64 * 32 * 9 <= D.cp_params(64, 32, 3, 3, r + 1)
    assert D.cp_max_rank(1, 1, 3, 3) == 1 and D.cp_max_rank(1, 1, 1, 1) == 0
    assert D.tucker2_params(64, 32, 3, 3, 16, 8) == 32 * 8 + 16 * 8 * 9 + 16 * 64
    assert D.tucker2_params(32, 1, 3, 3, 7, 1) == 7 * 9 + 7 * 32  # the digits stem: in = 1 needs no first 1×1
    k = torch.randn(20, 10, 3, 3)
    r_out, r_in = D.tucker2_ranks_for_energy(k, 0.8)
    assert r_out == L.rank_for_energy(torch.linalg.svdvals(D.unfold(k.double(), 0)), 0.8)
    assert r_in == L.rank_for_energy(torch.linalg.svdvals(D.unfold(k.double(), 1)), 0.8)


def test_eligible_convs_of_a_mobilenet_style_cnn():
    chosen, skipped = D.eligible_convs(DigitsCNN(), ["*"])
    assert [n for n, _ in chosen] == ["stem.0"]  # depthwise and 1×1 convs have no 4-way kernel
    assert {n for n, w in skipped.items() if w.startswith("grouped")} == {"blocks.0.0", "blocks.1.0", "blocks.2.0"}
    assert {n for n, w in skipped.items() if w.startswith("1×1")} == {"blocks.0.3", "blocks.1.3", "blocks.2.3"}
    chosen, _ = D.eligible_convs(DigitsCNN(), ["blocks.*"], pointwise=True)
    assert [n for n, _ in chosen] == ["blocks.0.3", "blocks.1.3", "blocks.2.3"]
