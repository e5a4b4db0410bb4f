"""kernels.flash_attention vs its fp32 reference: GQA/MQA, T not a multiple of the tile, causal and
full, decode / chunked prefill (T_q < T_k), several head dims, small tiles to cross many blocks.

bf16 is not run here (Triton 3.7's interpreter computes bf16 tl.dot on raw bits); see gpu_check.py.
"""
import pytest
import torch

from kernels import flash_attention as k

DTYPES = [torch.float32, torch.float16]

# (B, H, H_kv, T_q, T_k, D, causal, block_m, block_n); None tiles = the GPU defaults
CASES = [
    (1, 4, 2, 37, 37, 16, True, None, None),  # GQA, one tile holds all rows
    (2, 4, 1, 67, 67, 32, False, 16, 16),  # MQA, full, many tiles and a key tail
    (1, 2, 2, 67, 67, 32, True, 16, 32),  # MHA causal: unmasked + diagonal phases
    (1, 2, 1, 40, 67, 16, True, 16, 16),  # chunked prefill: the last 40 of 67 positions
    (1, 4, 2, 5, 67, 64, True, None, None),  # decode-like: 5 new tokens, BLOCK_M=16
    (1, 2, 1, 1, 67, 128, True, None, None),  # single-token decode, D=128
    (1, 2, 1, 80, 67, 16, False, 32, 16),  # non-causal with T_q > T_k
]


@pytest.mark.parametrize("b,h,h_kv,t_q,t_k,d,causal,block_m,block_n", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_flash_attention_matches_reference_and_writes_every_element(
    b, h, h_kv, t_q, t_k, d, causal, block_m, block_n, dtype, poisoned, assert_bounded
):
    q, kk, v = k.example_inputs(b, h, h_kv, t_q, t_k, d, dtype, "cpu", seed=t_q)
    out, check_written = poisoned((b, h, t_q, d), dtype)
    k.flash_attention(q, kk, v, causal, out=out, block_m=block_m, block_n=block_n)
    check_written()
    # observed max-abs err (kernel / eager): fp32 4.8e-7 / 0, fp16 9.6e-4 / 1.1e-3
    assert_bounded(out, k.reference(q, kk, v, causal, upcast=False), k.reference(q, kk, v, causal))


def test_flash_attention_strided_inputs_and_custom_scale():
    qkv = torch.randn(1, 37, 3, 2, 32)  # (B, T, 3, H, D) like a fused projection
    q, kk, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, H, T, D) non-contiguous views
    got = k.flash_attention(q, kk, v, causal=True, sm_scale=0.3, block_m=16, block_n=16)
    torch.testing.assert_close(got, k.reference(q, kk, v, True, 0.3), atol=1e-5, rtol=1e-5)


def _good(t_q=8, t_k=8, d=16):
    return torch.randn(1, 4, t_q, d), torch.randn(1, 2, t_k, d), torch.randn(1, 2, t_k, d)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda q, kk, v: (q, kk[:, :1].expand(1, 3, 8, 16), v[:, :1].expand(1, 3, 8, 16)), "multiple of kv heads"),
        (lambda q, kk, v: (q[..., :12], kk[..., :12], v[..., :12]), "head_dim D=12 is not supported"),
        (lambda q, kk, v: (q, kk, v[:, :, :5]), "must have the same shape"),
        (lambda q, kk, v: (q, kk.half(), v), "k has dtype torch.float16"),
        (lambda q, kk, v: (q[0], kk, v), r"q must be \(B, H, T_q, D\)"),
        (lambda q, kk, v: (q, kk[:, :, :4], v[:, :, :4]), "causal attention needs T_q=8 <= T_k=4"),
        (lambda q, kk, v: (q, kk.to("meta"), v.to("meta")), "one device"),
        (lambda q, kk, v: (q[:, :, :0], kk[:, :, :0], v[:, :, :0]), "T_k=0"),
    ],
)
def test_flash_attention_rejects_bad_inputs(mutate, match):
    with pytest.raises(ValueError, match=match):
        k.flash_attention(*mutate(*_good()), causal=True)


def test_flash_attention_rejects_bad_tiles():
    with pytest.raises(ValueError, match="block_m=24"):
        k.flash_attention(*_good(), block_m=24)
