"""qat: config (bits 8|4, bounded steps), verdicts, fine-tune then real packed modules, loss
curve recorded; int4 QAT ends closer to the float model than RTN int4 on its own objective."""
import pytest
import torch

from optimizers import registry
from optimizers.quant.modules import QuantLinearInt4, QuantLinearInt8
from optimizers.quant.qat import FakeQuantLinear
from optimizers.quant.testing import (check_bad_inputs, check_config_roundtrip, check_swapped, check_verdicts,
                                      tiny_lm_workload)

T = registry.get("qat")


def test_config_and_verdicts():
    check_config_roundtrip(T, {"bits": 8, "steps": 10, "lr": 1e-4, "group_size": 64})
    check_verdicts(T)
    with pytest.raises(ValueError, match=r"bits=2 is not supported; choose one of \[4, 8\]"):
        T.config({"bits": 2})
    with pytest.raises(ValueError, match="steps=0 must be between 1 and 2000"):
        T.config({"steps": 0})


@pytest.mark.parametrize("bits,qtype", [(8, QuantLinearInt8), (4, QuantLinearInt4)])
def test_apply_converts_to_real_modules(bits, qtype):
    wl = tiny_lm_workload(n_calib=2)
    rec = T.apply(wl, T.config({"bits": bits, "group_size": 32, "steps": 6, "lr": 1e-3}))
    out = rec.workload
    check_swapped(wl, out, qtype)
    assert not any(isinstance(m, FakeQuantLinear) for m in out.model.modules())
    assert not any(p.requires_grad for p in out.model.parameters())
    losses = rec.details["qat_losses"]
    assert len(losses) == 6 and min(losses[-2:]) < losses[0]  # observed 6.21 → 5.34 (int4), 6.22 → 5.34 (int8)
    # the next-token loss after QAT is below the loss of RTN at the same bits on these batches
    rtn_t = registry.get("int4_weight_only" if bits == 4 else "int8_weight_only")
    rtn = rtn_t.apply(wl, rtn_t.config({"group_size": 32} if bits == 4 else {})).workload
    b = wl.calibration[0]
    with torch.no_grad():
        l_qat = out.model(input_ids=b, labels=b).loss
        l_rtn = rtn.model(input_ids=b, labels=b).loss
    assert l_qat < l_rtn  # observed 4.88 vs 6.21 (int4), 4.92 vs 6.22 (int8); in-sample: shows the fine-tune took


def test_bad_inputs():
    check_bad_inputs(T, {"group_size": 32, "steps": 1})
