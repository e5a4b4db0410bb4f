"""llm_int8: config, verdicts, the outlier columns of each batch decomposed into float (decided at
run time, reported per layer), the rest int8; beats plain W8A8 on a model with outlier channels."""
import copy

import pytest

from optimizers import registry
from optimizers.quant.mixed import QuantLinearLLMInt8
from optimizers.quant.modules import QuantLinearInt8, default_predicate, replace_linears
from optimizers.quant.testing import (check_bad_inputs, check_config_roundtrip, check_swapped, check_verdicts,
                                      linear_weight_bytes, logits, rel_err, tiny_lm_workload)

T = registry.get("llm_int8")


def test_config_and_verdicts():
    check_config_roundtrip(T, {"threshold": 4.0})
    check_verdicts(T)
    with pytest.raises(ValueError, match="threshold=0.0 must be > 0"):
        T.config({"threshold": 0.0})


def test_outliers_kept_in_float_and_beats_w8a8():
    wl = tiny_lm_workload(n_calib=4, outliers=True)
    rec = T.apply(wl, T.config())
    out = rec.workload
    check_swapped(wl, out, QuantLinearLLMInt8)
    x = wl.eval.token_ids[:64][None]
    q_proj = out.model.model.layers[0].self_attn.q_proj
    logits(out, x)
    assert set(q_proj.last_outliers.tolist()) >= {3, 17, 64, 101}  # the channels made ×40 in the norm
    frac = rec.details["llm_int8_outlier_fraction"]
    assert 0 < frac["model.layers.0.self_attn.q_proj"] < 0.2  # a few columns per batch, not most of them
    q, f16 = linear_weight_bytes(out.model)
    assert q / f16 < 0.52  # every column int8 + fp32 row scales: observed 0.51
    naive = copy.deepcopy(wl.model)
    replace_linears(naive, default_predicate(naive), lambda n, l: QuantLinearInt8.from_linear(l, act_int8=True))
    ref = logits(wl, x)
    assert rel_err(ref, logits(out, x)) < 0.5 * rel_err(ref, logits(wl.with_model(naive), x))  # observed 0.017 vs 0.094


def test_bad_inputs():
    check_bad_inputs(T, {})
