"""The CPU packed paths: int4 through aten._weight_int4pack_mm_for_cpu (codes converted once into
its layout) and int8 through aten._weight_int8pack_mm, each against the dequantized reference on
odd shapes and every group size; an fp32 model keeps the exact reference path, and a shape the
kernel refuses falls back to it."""
from __future__ import annotations

import pytest
import torch

from optimizers.measure import runtime_buffer_bytes, stored_bytes
from optimizers.quant.modules import QuantLinearInt4, QuantLinearInt8
from quant.errors import rel_error

SHAPES = [(1, 96, 64), (3, 160, 128), (7, 48, 256)]  # (tokens, out, in): batch 1 and odd token counts


@pytest.mark.parametrize("m, n, k, group_size", [(*s, g) for s in SHAPES for g in (32, 64, 128) if s[2] % g == 0])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_int4_packed_matches_the_dequantized_reference(m, n, k, group_size, dtype):
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n, bias=True)
    q = QuantLinearInt4.from_linear(lin, group_size)
    assert q.cpu_int4pack is not None  # converted at construction, not inside a (compiled) forward
    x = torch.randn(m, k)
    ref = x @ q.dequantized_weight().t() + lin.bias.detach()
    y = q(x.to(dtype))
    assert y.dtype == dtype and y.shape == (m, n)
    assert rel_error(ref, y.float()) < 1.5e-2  # 16-bit activations: observed 2-4e-3 in bf16


def test_int4_fp32_activations_keep_the_exact_reference_path():
    torch.manual_seed(0)
    lin = torch.nn.Linear(128, 64, bias=False)
    q = QuantLinearInt4.from_linear(lin, 32)
    x = torch.randn(2, 128)
    assert torch.equal(q(x), torch.nn.functional.linear(x, q.dequantized_weight()))


def test_runtime_layout_is_peak_memory_not_stored_bytes():
    q = QuantLinearInt4.from_linear(torch.nn.Linear(128, 64, bias=False), 32)
    model = torch.nn.Sequential(q)
    assert "0.cpu_int4pack" not in model.state_dict()  # the stored format stays the export's
    assert runtime_buffer_bytes(model) == q.cpu_int4pack.numel() + q.cpu_scale_zero.numel() * q.cpu_scale_zero.element_size() > 0
    assert stored_bytes(model) == 64 * 64 + 64 * 4 * 2 + 64 * 4  # packed codes + fp16 scales + uint8 zeros


def test_a_shape_the_kernel_refuses_falls_back(monkeypatch):
    def refuse(*a, **k):
        raise RuntimeError("unsupported shape")

    monkeypatch.setattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu", refuse)
    q = QuantLinearInt4.from_linear(torch.nn.Linear(64, 32, bias=False), 32)
    assert q.cpu_int4pack is None and q.cpu_int4pack_failed
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    assert rel_error(x.float() @ q.dequantized_weight().t(), q(x).float()) < 1.5e-2


@pytest.mark.parametrize("m, n, k", SHAPES)
def test_int8_packed_matches_the_dequantized_reference(m, n, k):
    torch.manual_seed(1)
    lin = torch.nn.Linear(k, n, bias=True)
    q = QuantLinearInt8.from_linear(lin)
    x = torch.randn(m, k)
    ref = x @ q.dequantized_weight().t() + lin.bias.detach()
    y = q(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and rel_error(ref, y.float()) < 1.5e-2
    assert torch.allclose(q(x), ref, rtol=1e-5, atol=1e-5)  # fp32: the reference path
