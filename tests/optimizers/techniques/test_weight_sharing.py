"""weight_sharing (Deep Compression stage 2) against the math: linear initialization over
[min, max], the k-means objective never rises and converges, every weight ends at its nearest
centroid, pruned zeros stay exactly zero, the error falls as clusters rise, stored bytes are the
codes + codebooks; config, verdicts, Conv2d and Linear layers, and the centroid fine-tune (a
centroid's gradient is the sum of its weights' gradients)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from optimizers import registry
from optimizers import sparsity as S
from optimizers.base import Target
from optimizers.measure import stored_bytes
from optimizers.quant import coded as C
from optimizers.quant.testing import (check_config_roundtrip, cpu_target, logits, rel_err, tiny_cnn_workload,
                                      tiny_lm_workload)
from optimizers.techniques.weight_sharing import kmeans_1d, linear_init, nearest, share
from quant.errors import rel_error

T = registry.get("weight_sharing")


def test_config_and_verdicts():
    check_config_roundtrip(T, {"bits": 6, "iterations": 10, "finetune_codebook": True})
    assert T.config({"clusters": 20}).k == 20 and T.config({"clusters": 20}).code_bits == 5
    assert T.config().k == 32  # the paper's 5 bits
    for bad in ({"bits": 3}, {"bits": 9}, {"clusters": 8}, {"clusters": 300}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            T.config(bad)
    assert T.check(cpu_target()).runnable
    assert T.check(Target(task="vision", has_linear=False, convs=(("c", 4, 1, 3, 3, 1),))).runnable
    v = T.check(cpu_target(has_linear=False))
    assert v.status == "refused" and "nn.Linear and nn.Conv2d" in v.reason
    v = T.check(cpu_target(has_train=False), T.config({"finetune_codebook": True}))
    assert v.status == "refused" and v.blame == "config" and "training split" in v.reason


def test_linear_init_spans_min_to_max():
    w = torch.tensor([-2.0, 0.5, 1.0, 4.0])
    assert torch.allclose(linear_init(w, 4), torch.tensor([-2.0, 0.0, 2.0, 4.0]))


@pytest.mark.parametrize("k", [16, 32, 256])
def test_kmeans_objective_never_rises_and_converges(k):
    w = torch.randn(4000, generator=torch.Generator().manual_seed(k)) * 0.05
    c, idx, history = kmeans_1d(w, k, iterations=1000)
    assert all(b <= a * (1 + 1e-6) for a, b in zip(history, history[1:]))  # Lloyd: monotone
    assert len(history) - 1 < 1000  # stopped because no assignment changed (observed 74, 117, 9 iterations)
    assert torch.equal(nearest(w, c), idx)  # a fixed point: the final assignment is the nearest one
    used = torch.bincount(idx, minlength=k) > 0
    means = torch.zeros(k).index_add_(0, idx, w) / torch.bincount(idx, minlength=k).clamp(min=1)
    assert torch.allclose(c[used], means[used], atol=1e-6)  # and each centroid is its cluster's mean


def test_every_weight_maps_to_its_nearest_centroid_and_zeros_stay_zero():
    w = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    w[torch.rand(64, 48, generator=torch.Generator().manual_seed(1)) < 0.5] = 0.0  # pruned
    c, _ = share(w, 32, 5)
    assert c.zero_code and c.levels.numel() == 31 and int(c.codes.max()) < 32
    w_hat = c.dequantize()
    assert torch.equal(w_hat == 0, w == 0)  # zeros exactly zero, and no survivor became zero
    nz = w != 0
    dist = (w[nz][:, None] - c.levels[None, :]).abs()  # (survivors, 31)
    assert torch.allclose((w[nz] - w_hat[nz]).abs(), dist.min(1).values)


def test_error_falls_with_more_clusters():
    w = torch.randn(128, 96, generator=torch.Generator().manual_seed(0))
    errs = [rel_error(w, share(w, k, 8)[0].dequantize()) for k in (16, 32, 64, 128, 256)]
    assert all(b < a for a, b in zip(errs, errs[1:]))  # observed 0.109, 0.070, 0.037, 0.019, 0.009
    assert errs[1] < 0.1  # 32 centroids on Gaussian weights


def test_lm_layers_swapped_stored_bytes_are_codes_and_codebooks():
    wl = tiny_lm_workload()
    rec = T.apply(wl, T.config({"bits": 5}))
    model = rec.workload.model
    coded = C.coded_modules(model)
    assert len(coded) == 14 and type(model.lm_head) is nn.Linear  # every Linear but the LM head
    assert not C.coded_modules(wl.model)  # the input workload's model is untouched
    n = sum(m.numel for m in coded)
    expect = sum(-(-m.numel * 5 // 8) + 4 * 32 for m in coded)  # 5-bit codes + 32 fp32 centroids a layer
    assert stored_bytes(wl.model) - stored_bytes(model) == 4 * n - expect
    assert rec.diagnostics["compression_vs_fp32"] == pytest.approx(4 * n / expect)
    assert rec.diagnostics["compression_vs_16bit"] == pytest.approx(2 * n / expect)
    assert rel_err(logits(wl), logits(rec.workload)) < 0.2  # random-init tiny llama, 5 bits: observed 0.099


def test_cnn_convs_and_pruned_csr_layers_are_shared():
    wl = tiny_cnn_workload()
    x = wl.eval.images
    dense = wl.model
    pruned = dense.__class__(widths=(8, 16, 16, 16)).eval()
    pruned.load_state_dict(dense.state_dict())
    S.magnitude_prune([("classifier", pruned.classifier)], 0.9)
    S.to_csr(pruned, [("classifier", pruned.classifier)], 0.8)
    assert isinstance(pruned.classifier, S.SparseCSRLinear)
    out = T.apply(wl.with_model(pruned), T.config({"bits": 8})).workload.model
    assert len(C.coded_modules(out)) == 8  # 7 convs (depthwise too) + the CSR classifier
    assert out.classifier.zero_code and int((out.classifier.codes() != 0).sum()) == 16  # 10 % of 160 survive
    with torch.no_grad():
        assert rel_err(pruned(x), out(x)) < 1e-3  # 8 bits, untrained: observed 5e-6


def test_no_layer_is_a_clear_error():
    from optimizers.workloads.base import VisionEval, Workload

    class Pool(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    x = torch.randn(2, 1, 8, 8)
    wl = Workload(name="pool", task="vision", model=Pool(), eval=VisionEval(images=x, labels=torch.zeros(2).long()))
    with pytest.raises(ValueError, match="nn.Linear and nn.Conv2d layers and this model has none"):
        T.apply(wl, T.config())


def test_codebook_gradient_is_the_sum_over_shared_weights():
    lin = nn.Linear(12, 6)
    m = C.CodedWeight.from_layer(lin, share(lin.weight, 16, 4)[0], train_levels=True)
    m.levels.requires_grad_(True)
    x = torch.randn(5, 12)
    w = m.dequantized_weight()
    w.retain_grad()
    (torch.nn.functional.linear(x, w, m.bias) ** 2).sum().backward()
    codes = m.codes().long()
    summed = torch.zeros(16).index_add_(0, codes.reshape(-1), w.grad.reshape(-1))
    assert torch.allclose(m.levels.grad, summed, atol=1e-5)


def test_centroid_finetune_moves_centroids_keeps_codes_and_zeros():
    wl = tiny_cnn_workload()
    S.magnitude_prune([("classifier", wl.model.classifier)], 0.5)
    plain = T.apply(wl, T.config({"bits": 4})).workload.model
    rec = T.apply(wl, T.config({"bits": 4, "finetune_codebook": True, "finetune_steps": 5,
                                "finetune_batch_size": 16, "finetune_lr": 1e-2}))
    tuned = rec.workload.model
    assert rec.diagnostics["train_steps"] == 5 and "train_loss" in rec.diagnostics
    for a, b in zip(C.coded_modules(plain), C.coded_modules(tuned)):
        assert torch.equal(a.codes(), b.codes())  # indices fixed
        assert not torch.equal(a.levels, b.levels)  # centroids trained
    assert torch.equal(tuned.classifier.dequantized_weight() == 0, wl.model.classifier.weight == 0)  # still pruned
    assert not any(p.requires_grad for p in tuned.parameters())


def test_batchnorm_folding_is_exact_and_leaves_no_bn():
    import copy

    from optimizers.techniques.weight_sharing import fold_batchnorm
    from optimizers.workloads import load_workload

    wl = load_workload("digits-cnn")
    model = copy.deepcopy(wl.model).eval()
    x = wl.eval.images[:16]
    with torch.no_grad():
        want = wl.model.eval()(x)
        assert fold_batchnorm(model) == 7
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        assert torch.allclose(model(x), want, atol=1e-4)
