"""kernels.softmax vs its fp32 reference: one-block rows, rows longer than the block (online path)."""
import pytest
import torch

from kernels import softmax as k

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


# (shape, block_size): 9000 > MAX_BLOCK loops by default; 3000 with block 1024 loops three times
@pytest.mark.parametrize(
    "shape,block_size", [((37, 781), None), ((2, 3, 100), None), ((3, 3000), 1024), ((2, 9000), None)]
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_matches_reference_and_writes_every_element(shape, block_size, dtype, poisoned, assert_bounded):
    x = (3 * torch.randn(shape)).to(dtype)
    out, check_written = poisoned(shape, dtype)
    k.softmax(x, out=out, block_size=block_size)
    check_written()
    # observed max-abs err (kernel / eager): fp32 6e-8 / 0, fp16 1.6e-4 / 1.6e-4, bf16 3.7e-3 / 1.7e-3
    # (bf16: the interpreter truncates fp32->bf16; atol, one bf16 ulp of max|ref|, covers it)
    assert_bounded(out, k.reference(x, upcast=False), k.reference(x))


@pytest.mark.parametrize("block_size", [None, 64])
def test_softmax_handles_minus_inf_like_torch(block_size):
    x = torch.full((3, 300), float("-inf"))  # masked-attention-like rows
    x[:, 5] = 1.0
    x[1, 290] = 2.0
    torch.testing.assert_close(k.softmax(x, block_size=block_size), torch.softmax(x, dim=-1))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: torch.randn(4, 8).to(torch.int64), "x has dtype torch.int64"),
        (lambda: torch.randn(4, 0), "non-empty last dim"),
        (lambda: torch.randn(()).reshape(()), "non-empty last dim"),
    ],
)
def test_softmax_rejects_bad_inputs(make, match):
    with pytest.raises(ValueError, match=match):
        k.softmax(make())


def test_softmax_rejects_bad_out_and_block():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="out must be"):
        k.softmax(x, out=torch.empty(4, 9))
    with pytest.raises(ValueError, match="power of two"):
        k.softmax(x, block_size=8)
