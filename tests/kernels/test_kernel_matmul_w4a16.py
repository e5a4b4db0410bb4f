"""kernels.matmul_w4a16 vs its fp32 reference on the packing.py layout: decode M, odd N, several groups.

bf16 is not run here (Triton 3.7's interpreter computes bf16 tl.dot on raw bits); see gpu_check.py.
"""
import pytest
import torch

from kernels import matmul_w4a16 as k
from quant.packing import pack_int4, quantize_int4_groupwise

DTYPES = [torch.float32, torch.float16]


# (M, N, K, group, split_k): group 48 forces BLOCK_K=16; split_k splits the K loop across programs
@pytest.mark.parametrize(
    "m,n,kdim,group,split_k",
    [(1, 67, 96, 32, None), (5, 67, 192, 64, 3), (16, 131, 256, 128, None), (37, 131, 96, 48, 2)],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_w4a16_matches_reference_and_writes_every_element(m, n, kdim, group, split_k, dtype, poisoned, assert_bounded):
    x, packed, scale, zero = k.example_inputs(m, n, kdim, group, dtype, "cpu", seed=m)
    out, check_written = poisoned((m, n), dtype)
    k.matmul_w4a16(x, packed, scale, zero, group, out=out, split_k=split_k)
    check_written()
    # observed max-abs err (kernel / eager): fp32 1.2e-6 / 0, fp16 1.7e-3 / 1.7e-3
    eager = k.reference(x, packed, scale, zero, group, upcast=False)
    assert_bounded(out, eager, k.reference(x, packed, scale, zero, group))


@pytest.mark.parametrize("symmetric", [False, True])
def test_w4a16_equals_dense_matmul_of_dequantized_weight(symmetric):
    w = torch.randn(40, 64)
    codes, scale, zero = quantize_int4_groupwise(w, 32, symmetric=symmetric)
    x = torch.randn(3, 64)
    got = k.matmul_w4a16(x, pack_int4(codes), scale, zero, 32)
    torch.testing.assert_close(got, k.reference(x, pack_int4(codes), scale, zero, 32), atol=1e-5, rtol=1e-5)


def _good():
    codes, scale, zero = quantize_int4_groupwise(torch.randn(24, 64), 32)
    return torch.randn(3, 64), pack_int4(codes), scale, zero


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda x, p, s, z, g: (x[:, :62], p, s, z, g), r"packed must be \(N, K//2\)"),
        (lambda x, p, s, z, g: (x, p.to(torch.int8), s, z, g), "packed has dtype torch.int8"),
        (lambda x, p, s, z, g: (x, p, s, z, 24), "group_size=24 must be a multiple of 16"),
        (lambda x, p, s, z, g: (x, p, s[:, :1], z, g), r"scale must be \(N, K // group_size\)"),
        (lambda x, p, s, z, g: (x, p, s, z.T, g), r"zero must be \(N, K // group_size\)"),
        (lambda x, p, s, z, g: (x[None], p, s, z, g), "x must be 2-D"),
        (lambda x, p, s, z, g: (x, p, s, z.to("meta"), g), "one device"),
    ],
)
def test_w4a16_rejects_bad_inputs(mutate, match):
    with pytest.raises(ValueError, match=match):
        k.matmul_w4a16(*mutate(*_good(), 32))
