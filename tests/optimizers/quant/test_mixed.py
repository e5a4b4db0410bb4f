"""LLM.int8(), decided per batch as in the paper: a column is decomposed into float only in a
batch where some token reaches the threshold; the product then equals the hand-computed
decomposition; a batch without outliers is plain vector-wise int8; beats W8A8 with outliers."""
import torch
import torch.nn.functional as F
from torch import nn

from optimizers.quant.mixed import QuantLinearLLMInt8, outlier_columns
from optimizers.measure import stored_bytes
from optimizers.quant.modules import QuantLinearInt8, int8_matmul, quantize_per_token_int8, sqnr_db


def test_outlier_columns_threshold():
    assert outlier_columns(torch.tensor([1.0, 6.0, 5.99, 30.0])).tolist() == [1, 3]


def _layer():
    torch.manual_seed(0)
    lin = nn.Linear(128, 64)
    return lin, QuantLinearLLMInt8(lin.weight, 6.0, lin.bias)


def test_outliers_are_decided_per_batch_and_match_the_paper_math():
    lin, q = _layer()
    x = torch.randn(16, 128)
    x[:, [7, 77]] *= 60  # outlier features in this batch
    y = q(x)
    assert set(q.last_outliers.tolist()) == {7, 77}
    # the decomposition by hand: float product on the outlier columns, vector-wise int8 on the rest
    w = q.dequantized_weight()
    xr = x.clone()
    xr[:, [7, 77]] = 0
    xq, xs = quantize_per_token_int8(xr)
    ref = int8_matmul(xq, q.qweight.t()) * xs * q.scale + x[:, [7, 77]] @ w[:, [7, 77]].t() + lin.bias
    assert torch.allclose(y, ref, atol=1e-5)
    calm = torch.randn(16, 128)  # the next batch has no outlier: no column stays float
    q(calm)
    assert q.last_outliers.numel() == 0
    plain = QuantLinearInt8.from_linear(lin, act_int8=True)
    assert torch.allclose(q(calm), plain(calm), atol=1e-4)
    assert q.outlier_stats == [2, 3 * 128]  # 2 decomposed columns over three calls


def test_beats_w8a8_with_outliers_and_stores_int8_for_every_column():
    lin, q = _layer()
    x = torch.randn(16, 128)
    x[:, [7, 77]] *= 60
    assert torch.allclose(q(x), F.linear(x, lin.weight, lin.bias), atol=0.2)
    plain = QuantLinearInt8.from_linear(lin, act_int8=True)
    s_mixed, s_plain = sqnr_db(lin(x), q(x)), sqnr_db(lin(x), plain(x))
    assert s_mixed > s_plain + 15  # observed 46.9 vs 32.1 dB
    assert stored_bytes(q) == 64 * 128 + 64 * 4 + 64 * 4  # int8 weights, fp32 row scales, fp32 bias
