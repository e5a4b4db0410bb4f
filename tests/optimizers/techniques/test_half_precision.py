"""half_precision: config, every parameter in 16 bits, exactly half the fp32 bytes, small error;
the 16-bit reference metrics (bits per parameter, bytes against a 16-bit copy) from the harness,
and a run whose baseline itself is bf16."""
import pytest
import torch

from optimizers import registry
from optimizers.measure import measure, parameter_count, sixteen_bit_reference, stored_bytes
from optimizers.quant.testing import check_config_roundtrip, check_verdicts, logits, rel_err, tiny_lm_workload

T = registry.get("half_precision")


def test_config_and_verdicts():
    check_config_roundtrip(T, {"dtype": "fp16"})
    check_verdicts(T)
    with pytest.raises(ValueError):
        T.config({"dtype": "fp8"})


@pytest.mark.parametrize("dtype, torch_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_apply_halves_bytes_and_keeps_quality(dtype, torch_dtype):
    wl = tiny_lm_workload()
    out = T.apply(wl, T.config({"dtype": dtype})).workload
    assert all(p.dtype == torch_dtype for p in out.model.parameters())
    assert all(p.dtype == torch.float32 for p in wl.model.parameters())  # input untouched
    assert stored_bytes(out.model) * 2 == stored_bytes(wl.model)
    tol = 0.02 if dtype == "bf16" else 0.005  # 8 vs 11 mantissa bits: observed 0.0046 / 0.0006
    assert rel_err(logits(wl), logits(out).float()) < tol


def test_sixteen_bit_reference_math():
    assert sixteen_bit_reference(4000.0, 1000) == {"bits_per_param": 32.0, "stored_bytes_vs_16bit": 2.0}
    assert sixteen_bit_reference(2000.0, 1000)["bits_per_param"] == 16.0
    assert sixteen_bit_reference(10.0, 0) == {}


def test_measure_reports_bits_per_param_against_the_load_time_count():
    wl = tiny_lm_workload()
    wl.meta["param_count"] = parameter_count(wl.model)
    half = T.apply(wl, T.config()).workload
    m = measure(half, speed=False, memory=False).metrics
    assert m["bits_per_param"] == 16.0 and m["stored_bytes_vs_16bit"] == 1.0


def test_run_with_a_bf16_baseline(migrated_sqlite):
    from db import queries
    from db.session import session_scope
    from jobs import pipeline, submit

    pb = submit.validate_request({"name": "w8", "title": "w8", "steps": [{"technique": "int8_weight_only"}]},
                                 "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu", baseline_dtype="bf16")
    assert pipeline.execute_run(run_id) == "succeeded"
    with session_scope() as s:
        summary = queries.run_summary(queries.get_run(s, run_id))
    assert summary["baseline_dtype"] == "bf16"
    # tiny-llama's embeddings dominate: bf16 baseline is 16 bits/param, int8 Linears bring it lower
    assert summary["baseline"]["bits_per_param"] == 16.0
    assert summary["steps"][0]["metrics"]["bits_per_param"] < 16.0
    with pytest.raises(ValueError, match="baseline_dtype"):
        submit.create_run(pb, "tiny-llama", "cpu", baseline_dtype="int3")
