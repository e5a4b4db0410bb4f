"""Sparsity primitives against their definitions: exact zero fractions, N:M groups, the Wanda
score |W|·‖X_j‖₂ from hooks, torchao's WandaSparsifier reproduced, CSR Linear == dense Linear."""
import torch
from torch import nn

from optimizers import sparsity as S
from optimizers.measure import stored_bytes


def _layers(seed=0, shapes=((24, 16), (40, 16))):
    torch.manual_seed(seed)
    return [(f"l{i}", nn.Linear(k, n)) for i, (n, k) in enumerate(shapes)]


def test_magnitude_prune_global_and_layer_exact():
    layers = _layers()
    S.magnitude_prune(layers, 0.75, "global")
    assert S.layers_sparsity(layers) == 0.75
    assert all(set(dict(m.named_parameters())) == {"weight", "bias"} and not list(m.buffers()) for _, m in layers)
    layers = _layers()
    thresholds = [float(m.weight.abs().flatten().kthvalue(int(0.5 * m.weight.numel())).values) for _, m in layers]
    S.magnitude_prune(layers, 0.5, "layer")
    for (_, m), t in zip(layers, thresholds):
        assert S.sparsity(m.weight) == 0.5
        assert (m.weight[m.weight != 0].abs() > t).all()  # exactly the smallest half went


def test_topk_and_nm_masks():
    scores = torch.rand(8, 32)
    keep = S.topk_mask(scores, 0.25, per_row=True)
    assert (keep.sum(1) == 24).all()
    assert (scores[~keep].max() <= scores.max()) and all(scores[r][~keep[r]].max() < scores[r][keep[r]].min() for r in range(8))
    keep = S.nm_mask(scores, 2, 4)
    assert keep.float().mean() == 0.5 and S.is_nm_sparse(scores * keep, 2, 4)
    groups = scores.reshape(8, 8, 4)
    kept = (groups * keep.reshape(8, 8, 4)).sum(-1)
    assert torch.allclose(kept, groups.topk(2, dim=-1).values.sum(-1))


def test_wanda_score_is_weight_times_input_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    calib = [torch.randn(4, 6), torch.randn(2, 3, 6)]
    layers = [("0", model[0]), ("2", model[2])]
    norms = S.input_norms(model, layers, calib)
    x = torch.cat([calib[0], calib[1].reshape(-1, 6)])  # every token
    assert torch.allclose(norms["0"], x.norm(dim=0), rtol=1e-5)
    assert torch.allclose(norms["2"], torch.relu(model[0](x)).norm(dim=0), rtol=1e-5)
    s = S.wanda_scores(model[0].weight, norms["0"])
    assert torch.allclose(s, model[0].weight.abs() * x.norm(dim=0)[None, :], rtol=1e-5)


def test_torchao_wanda_is_per_layer_squared_norm():
    """torchao's WandaSparsifier == our primitives with a whole-layer group and ‖X‖₂² (its observer sums squares)."""
    import copy

    from torchao.sparsity import WandaSparsifier

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8))
    calib = [torch.randn(10, 16) * torch.linspace(0.1, 3, 16)]
    ours = copy.deepcopy(model)
    sp = WandaSparsifier(sparsity_level=0.5)
    sp.prepare(model, [{"tensor_fqn": "0.weight"}, {"tensor_fqn": "2.weight"}])
    with torch.no_grad():
        model(calib[0])
    sp.step()
    sp.squash_mask()
    layers = [("0", ours[0]), ("2", ours[2])]
    norms = S.input_norms(ours, layers, calib)
    for name, lin in layers:
        keep = S.topk_mask(S.wanda_scores(lin.weight, norms[name] ** 2), 0.5, per_row=False)
        assert torch.equal(keep, model[int(name)].weight != 0)


def test_csr_linear_matches_dense_and_shrinks_bytes():
    (_, lin), = _layers(shapes=((64, 48),))
    S.magnitude_prune([("l", lin)], 0.9)
    csr = S.SparseCSRLinear.from_linear(lin)
    x = torch.randn(2, 5, 48)
    assert torch.allclose(csr(x), lin(x), atol=1e-6)
    assert torch.equal(csr.dense_weight(), lin.weight.detach())
    nnz = int((lin.weight != 0).sum())
    assert stored_bytes(csr) == nnz * 8 + 65 * 4 + 64 * 4  # values + cols + row pointers + bias
    assert stored_bytes(csr) / stored_bytes(lin) < 0.25  # observed 0.21 at 90 %


def test_to_csr_threshold():
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16))
    layers = [("0", model[0]), ("1", model[1])]
    S.magnitude_prune(layers[:1], 0.9, "layer")
    S.magnitude_prune(layers[1:], 0.5, "layer")
    assert S.to_csr(model, layers, 0.8) == ["0"]
    assert isinstance(model[0], S.SparseCSRLinear) and type(model[1]) is nn.Linear
