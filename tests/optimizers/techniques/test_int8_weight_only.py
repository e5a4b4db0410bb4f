"""int8_weight_only: config, verdicts, every Linear but lm_head swapped, ~0.5× fp16 bytes,
small error; the harness's byte count agrees with ours."""
from optimizers import registry
from optimizers.measure import stored_bytes
from optimizers.quant.modules import QuantLinearInt8
from optimizers.quant.testing import (check_bad_inputs, check_config_roundtrip, check_swapped, check_verdicts,
                                      linear_weight_bytes, logits, rel_err, tiny_lm_workload)

T = registry.get("int8_weight_only")


def test_config_and_verdicts():
    check_config_roundtrip(T, {"include_lm_head": True})
    check_verdicts(T)


def test_apply_swaps_packs_and_keeps_quality():
    wl = tiny_lm_workload()
    before = {k: v.clone() for k, v in wl.model.state_dict().items()}
    out = T.apply(wl, T.config()).workload
    check_swapped(wl, out, QuantLinearInt8)
    assert all((v == wl.model.state_dict()[k]).all() for k, v in before.items())  # input untouched
    q, f16 = linear_weight_bytes(out.model)
    assert q / f16 < 0.52  # int8 + fp32 row scale: observed 0.513
    assert stored_bytes(wl.model) - stored_bytes(out.model) > 0
    assert rel_err(logits(wl), logits(out)) < 0.03  # observed 0.0107


def test_bad_inputs():
    check_bad_inputs(T, {})
