"""kernels.swiglu vs its fp32 reference: sizes that are not multiples of the block, every dtype."""
import pytest
import torch

from kernels import swiglu as k

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("shape", [(37, 781), (2, 3, 1025), (1,)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_swiglu_matches_reference_and_writes_every_element(shape, dtype, poisoned, assert_bounded):
    gate, up = (2 * torch.randn(shape)).to(dtype), torch.randn(shape).to(dtype)
    out, check_written = poisoned(shape, dtype)
    k.swiglu(gate, up, out=out)
    check_written()
    # observed max-abs err (kernel / eager): fp32 9.5e-7 / 0, fp16 7.7e-3 / 7.9e-3, bf16 1.3e-1 / 5.1e-2
    # (bf16: the interpreter truncates fp32->bf16; atol, one bf16 ulp of max|ref|, covers it: 0.49 of the bound)
    assert_bounded(out, k.reference(gate, up, upcast=False), k.reference(gate, up))


def test_swiglu_non_contiguous_inputs_are_copied():
    gate, up = torch.randn(8, 40).T, torch.randn(8, 40).T  # (40, 8) views, not contiguous
    torch.testing.assert_close(k.swiglu(gate, up), k.reference(gate, up), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: (torch.randn(4, 8), torch.randn(4, 9)), "same shape"),
        (lambda: (torch.randn(4, 8), torch.randn(4, 8).half()), "up has dtype torch.float16"),
        (lambda: (torch.ones(4, dtype=torch.int8), torch.ones(4, dtype=torch.int8)), "gate has dtype torch.int8"),
        (lambda: (torch.randn(4), torch.randn(4, device="meta")), "one device"),
    ],
)
def test_swiglu_rejects_bad_inputs(make, match):
    gate, up = make()
    with pytest.raises(ValueError, match=match):
        k.swiglu(gate, up)
