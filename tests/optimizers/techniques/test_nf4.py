"""nf4: config, verdicts, swap, ~4.13 bits a weight with double quantization, error bound."""
import pytest

from optimizers import registry
from optimizers.quant.nf4 import QuantLinearNF4
from optimizers.quant.testing import (check_bad_inputs, check_config_roundtrip, check_swapped, check_verdicts,
                                      linear_weight_bytes, logits, rel_err, tiny_lm_workload)

T = registry.get("nf4")


def test_config_and_verdicts():
    check_config_roundtrip(T, {"block_size": 32, "double_quant": False, "dq_block_size": 128})
    check_verdicts(T)
    with pytest.raises(ValueError, match="block_size=48 must be a positive power of two"):
        T.config({"block_size": 48})


@pytest.mark.parametrize("double_quant,max_ratio", [(True, 0.26), (False, 0.285)])
def test_apply(double_quant, max_ratio):
    wl = tiny_lm_workload()
    out = T.apply(wl, T.config({"double_quant": double_quant})).workload
    check_swapped(wl, out, QuantLinearNF4)
    q, f16 = linear_weight_bytes(out.model)
    assert q / f16 < max_ratio  # vs fp16: 4.127/16 = 0.258 double-quantized, 4.5/16 = 0.281 without
    assert rel_err(logits(wl), logits(out)) < 0.2  # observed 0.162


def test_bad_inputs():
    check_bad_inputs(T, {})
