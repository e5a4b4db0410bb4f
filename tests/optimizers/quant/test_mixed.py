"""LLM.int8(): outlier columns chosen by the threshold stay float16 exactly; the rest int8;
with outliers present the decomposition beats plain W8A8."""
import torch
import torch.nn.functional as F
from torch import nn

from optimizers.quant.mixed import QuantLinearLLMInt8, outlier_columns
from optimizers.quant.modules import QuantLinearInt8, sqnr_db, stored_bytes


def test_outlier_columns_threshold():
    assert outlier_columns(torch.tensor([1.0, 6.0, 5.99, 30.0])).tolist() == [1, 3]


def test_decomposition_is_exact_on_outlier_columns_and_beats_w8a8():
    torch.manual_seed(0)
    lin = nn.Linear(128, 64)
    x = torch.randn(16, 128)
    x[:, [7, 77]] *= 60  # outlier features
    out = outlier_columns(x.abs().amax(0))
    assert set(out.tolist()) == {7, 77}
    q = QuantLinearLLMInt8(lin.weight, out, lin.bias)
    w = q.dequantized_weight()
    assert torch.equal(w[:, out], lin.weight[:, out].detach().half().float())
    assert torch.allclose(q(x), F.linear(x, lin.weight, lin.bias), atol=0.2)
    plain = QuantLinearInt8.from_linear(lin, act_int8=True)
    s_mixed, s_plain = sqnr_db(lin(x), q(x)), sqnr_db(lin(x), plain(x))
    assert s_mixed > s_plain + 15  # observed 58.7 vs 32.1 dB
    # bytes: int8 (64, 126) + fp16 (64, 2) + fp32 scale + int32 indices + fp32 bias
    assert stored_bytes(q) == 64 * 126 + 64 * 2 * 2 + 64 * 4 + 128 * 4 + 64 * 4
