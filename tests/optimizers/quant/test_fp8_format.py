"""FP8 E4M3 / E5M2: storage dtypes, per-row / per-tensor scales, round-trip error from the
mantissa width, the simulated activation path, and that CPU has no _scaled_mm."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optimizers.quant.fp8 import QuantLinearFP8, dequantize_fp8, quantize_fp8, scaled_mm_supported
from optimizers.measure import stored_bytes
from optimizers.quant.modules import sqnr_db


@pytest.mark.parametrize("fmt,mant_bits,dtype", [("e4m3", 3, torch.float8_e4m3fn), ("e5m2", 2, torch.float8_e5m2)])
@pytest.mark.parametrize("granularity", ["per_row", "per_tensor"])
def test_round_trip_relative_error_from_mantissa(fmt, mant_bits, dtype, granularity):
    w = torch.randn(33, 80) * torch.logspace(-1, 1, 33)[:, None]
    q, s = quantize_fp8(w, fmt, granularity)
    assert q.dtype == dtype and s.shape == ((33, 1) if granularity == "per_row" else (1, 1))
    back = dequantize_fp8(q, s)
    # absmax maps exactly to the format's max
    assert torch.allclose(back.abs().amax(1 if granularity == "per_row" else None),
                          w.abs().amax(1 if granularity == "per_row" else None), rtol=1e-6)
    normal = (w / s).abs() >= torch.finfo(dtype).smallest_normal
    rel = ((back - w).abs() / w.abs())[normal]
    assert rel.max() <= 2.0 ** -(mant_bits + 1) + 1e-6  # round to nearest: half an ulp


def test_bad_format_is_a_clear_error():
    with pytest.raises(ValueError, match=r"fp8 format 'e3m4' is not supported; choose one of \['e4m3', 'e5m2'\]"):
        quantize_fp8(torch.randn(2, 2), "e3m4")


def test_weight_only_and_simulated_activation_forward():
    lin = nn.Linear(128, 48)
    x = torch.randn(7, 128)
    wo = QuantLinearFP8.from_linear(lin)
    assert torch.allclose(wo(x), F.linear(x, wo.dequantized_weight(), lin.bias), atol=1e-5)
    assert sqnr_db(lin(x), wo(x)) > 27  # observed 31.9 (e4m3, per row)
    wa = QuantLinearFP8.from_linear(lin, act_fmt="e4m3")
    xq, xs = quantize_fp8(x, "e4m3", "per_row")
    assert torch.allclose(wa(x), F.linear(dequantize_fp8(xq, xs), wa.dequantized_weight(), lin.bias), atol=1e-5)
    assert sqnr_db(lin(x), wa(x)) > 25  # observed 29.3
    assert stored_bytes(wo) == 48 * 128 + 48 * 4 + 48 * 4  # fp8 weight + fp32 row scale + fp32 bias


def test_scaled_mm_not_on_cpu():
    assert not scaled_mm_supported("cpu")
