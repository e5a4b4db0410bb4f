"""kernels.matmul_w8a16 vs its fp32 reference: decode and prefill M, odd N and K, split-K on and off.

bf16 is not run here: Triton 3.7's interpreter computes bf16 tl.dot on raw bits (the wrapper refuses
it, tested in test_kernel_runtime.py); benchmarks/gpu_check.py checks bf16 on a GPU.
"""
import pytest
import torch

from kernels import matmul_w8a16 as k
from quant.packing import quantize_int8_per_channel

DTYPES = [torch.float32, torch.float16]


# (M, N, K, split_k): M=1/5/16 take the decode tiles (BLOCK_M=16), 37 the prefill tiles; K=257/300 leave K tails
@pytest.mark.parametrize(
    "m,n,kdim,split_k", [(1, 67, 300, None), (5, 67, 300, 3), (16, 131, 257, 2), (37, 131, 257, None)]
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_w8a16_matches_reference_and_writes_every_element(m, n, kdim, split_k, dtype, poisoned, assert_bounded):
    x, qweight, scale = k.example_inputs(m, n, kdim, dtype, "cpu", seed=m)
    out, check_written = poisoned((m, n), dtype)
    k.matmul_w8a16(x, qweight, scale, out=out, split_k=split_k)
    check_written()
    # observed max-abs err (kernel / eager): fp32 1.7e-6 / 0, fp16 9.6e-4 / 1.4e-3
    assert_bounded(out, k.reference(x, qweight, scale, upcast=False), k.reference(x, qweight, scale))


def test_w8a16_strided_activations():
    x = torch.randn(40, 5)[:, :].T  # (5, 40) with column stride 5
    qweight, scale = quantize_int8_per_channel(torch.randn(24, 40))
    torch.testing.assert_close(k.matmul_w8a16(x, qweight, scale), k.reference(x, qweight, scale), atol=1e-5, rtol=1e-5)


def _good():
    qweight, scale = quantize_int8_per_channel(torch.randn(24, 40))
    return torch.randn(3, 40), qweight, scale


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda x, q, s: (x.reshape(1, 3, 40), q, s), "x must be 2-D"),
        (lambda x, q, s: (x[:, :39], q, s), r"qweight must be \(N, K=39\)"),
        (lambda x, q, s: (x, q.float(), s), "qweight has dtype torch.float32"),
        (lambda x, q, s: (x, q, s[:5]), r"scale must be \(24,\)"),
        (lambda x, q, s: (x.to(torch.int32), q, s), "x has dtype torch.int32"),
        (lambda x, q, s: (x, q, s.to("meta")), "one device"),
    ],
)
def test_w8a16_rejects_bad_inputs(mutate, match):
    with pytest.raises(ValueError, match=match):
        k.matmul_w8a16(*mutate(*_good()))


def test_w8a16_rejects_bad_split_k():
    with pytest.raises(ValueError, match="split_k=0"):
        k.matmul_w8a16(*_good(), split_k=0)
