"""int8_dynamic under the same tests as the other quantizers: config round-trip and its one
refused combination, verdicts, Linear layers swapped (per-token int8 modules by default,
PyTorch's dynamic-quantized ones for per_tensor), true bytes (the harness counts packed int8),
error vs the float model, and why per-token is the default: one outlier token."""
import pytest
import torch
from pydantic import ValidationError

from optimizers import registry
from optimizers.base import Target
from optimizers.measure import stored_bytes as harness_bytes
from optimizers.quant.modules import QuantLinearInt8
from optimizers.quant.testing import check_config_roundtrip, logits, no_linear_workload, rel_err, tiny_lm_workload

T = registry.get("int8_dynamic")
DQ = torch.ao.nn.quantized.dynamic.Linear


def test_config_and_verdicts():
    check_config_roundtrip(T, {"include_lm_head": True, "activations": "per_tensor", "per_channel": False})
    check_config_roundtrip(T, {"activations": "per_token"})
    with pytest.raises(ValidationError, match="per_channel=false.*activations='per_tensor'"):
        T.config({"per_channel": False})
    assert T.check(Target(device="cpu", task="causal_lm")).status == "runs"
    assert T.check(Target(device="cpu", task="causal_lm", has_linear=False)).status == "refused"
    assert T.check(Target(device="cuda", capability=(9, 0), task="causal_lm")).status == "refused"


@pytest.mark.parametrize("activations, module, max_err", [("per_token", QuantLinearInt8, 0.03), ("per_tensor", DQ, 0.05)])
def test_apply_swaps_and_shrinks(activations, module, max_err):
    wl = tiny_lm_workload()
    rec = T.apply(wl, T.config({"activations": activations}))
    out = rec.workload
    swapped = [n for n, m in out.model.named_modules() if isinstance(m, module)]
    assert len(swapped) == 14 and type(out.model.lm_head) is torch.nn.Linear
    assert rec.diagnostics["layers_quantized"] == 14
    assert all(type(m) not in (DQ, QuantLinearInt8) for m in wl.model.modules())  # input untouched
    lin_fp32 = sum(m.weight.numel() * 4 for n, m in wl.model.named_modules()
                   if isinstance(m, torch.nn.Linear) and n != "lm_head")
    saved = harness_bytes(wl.model) - harness_bytes(out.model)
    assert saved / lin_fp32 > 0.70  # fp32 → int8 saves 0.75 less the scales: observed 0.724 (per_tensor)
    assert rel_err(logits(wl), logits(out)) < max_err  # observed 0.040 per_tensor


def test_per_token_keeps_ordinary_tokens_exact_beside_an_outlier_token():
    """LLM activations: a few tokens (BOS, delimiters) carry values 100x the rest. One scale per
    batch spends the int8 range on them and rounds every other token coarsely; one per token
    does not. The error on the ordinary tokens tells the two apart."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 128)
    x = torch.randn(16, 256)
    x[0] *= 100.0
    ref = lin(x)
    per_token = QuantLinearInt8.from_linear(lin, act_int8=True)(x)
    per_batch = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), dtype=torch.qint8)(x)
    tok, batch = rel_err(ref[1:], per_token[1:]), rel_err(ref[1:], per_batch[1:])
    assert tok < 0.02 and batch > 5 * tok, (tok, batch)


def test_no_linear_is_a_clear_error():
    for activations in ("per_token", "per_tensor"):
        with pytest.raises(ValueError, match="no nn.Linear"):
            T.apply(no_linear_workload(), T.config({"activations": activations}))
