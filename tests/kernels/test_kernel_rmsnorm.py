"""kernels.rmsnorm vs its fp32 reference under the interpreter: odd shapes, looped rows, every dtype."""
import pytest
import torch

from kernels import rmsnorm as k

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


# (shape, block_size): block_size < n forces the looped two-pass path
@pytest.mark.parametrize("shape,block_size", [((37, 781), None), ((3, 5, 257), None), ((4, 3000), 1024)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsnorm_matches_reference_and_writes_every_element(shape, block_size, dtype, poisoned, assert_bounded):
    x = torch.randn(shape).to(dtype)
    weight = (1 + 0.1 * torch.randn(shape[-1])).to(dtype)  # around 1, like a trained norm
    out, check_written = poisoned(shape, dtype)
    k.rmsnorm(x, weight, out=out, block_size=block_size)
    check_written()
    # observed max-abs err (kernel / eager): fp32 7e-7 / 0, fp16 1.6e-3 / 3.4e-3, bf16 2.9e-2 / 3.8e-2
    assert_bounded(out, k.reference(x, weight, upcast=False), k.reference(x, weight))


def test_rmsnorm_strided_input_is_handled():
    x = torch.randn(64, 100)[::2, :50]  # (32, 50), row stride 100
    weight = torch.rand(50) + 0.5
    torch.testing.assert_close(k.rmsnorm(x, weight), k.reference(x, weight), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: (torch.randn(4, 8), torch.ones(7)), r"weight must have shape \(8,\)"),
        (lambda: (torch.randn(4, 8).to(torch.int32), torch.ones(8)), "x has dtype torch.int32"),
        (lambda: (torch.randn(4, 0), torch.ones(0)), "non-empty last dim"),
        (lambda: (torch.randn(4, 8), torch.ones(8, device="meta")), "one device"),
    ],
)
def test_rmsnorm_rejects_bad_inputs(make, match):
    x, weight = make()
    with pytest.raises(ValueError, match=match):
        k.rmsnorm(x, weight)


def test_rmsnorm_rejects_bad_eps_and_out():
    x, weight = torch.randn(4, 8), torch.ones(8)
    with pytest.raises(ValueError, match="eps=0"):
        k.rmsnorm(x, weight, eps=0)
    with pytest.raises(ValueError, match="out must be"):
        k.rmsnorm(x, weight, out=torch.empty(4, 8, dtype=torch.float16))
    with pytest.raises(ValueError, match="power of two"):
        k.rmsnorm(x, weight, block_size=100)
