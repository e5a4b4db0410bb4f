"""triton_kernels under TRITON_INTERPRET=1 (set in tests/conftest.py): config round-trip, verdicts,
the swap on the tiny Llama (head_dim 32, GQA 4/2) alone and after int8/int4 weight-only quantization,
the logits check against the model before the swap, mask refusals, and a playbook run on the pipeline."""
from __future__ import annotations

import pytest
import torch

from optimizers import kernel_swap, registry
from optimizers.base import Target
from optimizers.workloads.tiny_llama import build_tiny_llama, load

TECH = registry.get("triton_kernels")


@pytest.fixture(scope="module")
def workload():
    return load()


def test_config_round_trips_and_rejects_typos():
    cfg = TECH.config({"attention": False, "check_tokens": 4, "atol": 1e-4})
    assert TECH.Config.model_validate_json(cfg.model_dump_json()) == cfg
    assert TECH.config({}).model_dump() == {"rmsnorm": True, "swiglu": True, "attention": True,
                                            "quantized_linears": True, "check_tokens": 8, "atol": 1e-3, "rtol": 1e-2}
    with pytest.raises(ValueError, match="rms_norm"):
        TECH.config({"rms_norm": False})
    assert all(f.description for f in TECH.Config.model_fields.values())


def test_verdicts(monkeypatch):
    from kernels import _common

    assert TECH.check(Target(task="encoder")).status == "refused"
    assert "vision" in TECH.check(Target(task="vision")).reason
    assert TECH.check(Target(device="cuda", task="causal_lm")).status == "runs"
    cpu = TECH.check(Target(device="cpu", task="causal_lm"))
    assert cpu.status == "runs" and "correctness check only" in cpu.reason
    monkeypatch.setattr(_common, "interpreter_active", lambda: False)
    v = TECH.check(Target(device="cpu", task="causal_lm"))
    assert v.status == "needs_gpu" and "TRITON_INTERPRET=1" in v.reason and "cuda worker" in v.reason


def test_swap_counts_and_the_kernels_are_called(monkeypatch):
    import kernels.flash_attention as fa

    model = build_tiny_llama()
    counts = kernel_swap.swap_kernels(model)
    # 2 layers x 2 norms + the final norm; 2 MLPs; 2 attention layers; no quantized Linear yet
    assert counts == {"rmsnorm": 5, "swiglu": 2, "attention": 2, "w8a16": 0, "w4a16": 0}
    assert model.config._attn_implementation == kernel_swap.ATTN_IMPLEMENTATION
    calls = []
    real = fa.flash_attention
    monkeypatch.setattr(fa, "flash_attention", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    ref = build_tiny_llama()
    ids = torch.randint(0, 512, (2, 6), generator=torch.Generator().manual_seed(0))
    figures = kernel_swap.compare_logits(kernel_swap.lm_logits(ref, ids), kernel_swap.lm_logits(model, ids))
    assert calls[0] == (2, 4, 5, 32) and calls[-1] == (2, 4, 1, 32)  # prefill (T_q = T_k) then decode (T_q < T_k)
    assert figures["max_abs_logit_diff"] < 1e-5  # observed 3.0e-07
    assert figures["top1_agreement"] == 1.0


@pytest.mark.parametrize("pre, params, swapped", [
    (None, {}, 9),
    ("int8_weight_only", {}, 23),  # + 14 W8A16 Linears (7 per layer; lm_head stays float)
    ("int4_weight_only", {"group_size": 32}, 23),  # 32 divides 128 and 352; the kernel needs % 16 == 0
])
def test_check_only_on_cpu(workload, pre, params, swapped):
    wl = workload
    if pre:
        quant = registry.get(pre)
        wl = quant.apply(workload, quant.config(params)).workload
    before = {k: v.clone() for k, v in wl.model.state_dict().items()}
    rec = TECH.apply(wl, TECH.config({}))
    out = rec.workload
    assert out.model is wl.model  # CPU: the original model goes on, only the check is reported
    assert all(torch.equal(before[k], v) for k, v in wl.model.state_dict().items())  # never mutated
    m = rec.check_metrics
    assert m["modules_swapped"] == swapped
    # observed max |Δlogit| 3.0e-07 (fp32), 5.1e-07 (int8), 4.8e-07 (int4); logits reach ~0.9
    assert m["max_abs_logit_diff"] < 1e-5 and m["rel_error"] < 1e-5
    assert m["top1_agreement"] == 1.0
    assert "speed needs a GPU" in rec.notes[0]


def test_failed_check_raises(workload, monkeypatch):
    import kernels.swiglu as sw

    real = sw.swiglu
    monkeypatch.setattr(sw, "swiglu", lambda g, u, **k: real(g, u, **k) * 1.01)  # a 1 % bug in the activation
    with pytest.raises(ValueError, match="output check failed"):
        TECH.apply(workload, TECH.config({"attention": False, "rmsnorm": False, "atol": 0.0, "rtol": 1e-6}))


def test_nothing_to_swap_is_an_error(workload):
    with pytest.raises(ValueError, match="nothing to swap"):
        TECH.apply(workload, TECH.config({"rmsnorm": False, "swiglu": False, "attention": False}))


def test_padding_is_refused_and_causal_masks_pass():
    model = build_tiny_llama()
    kernel_swap.swap_kernels(model, rmsnorm=False, swiglu=False, quantized_linears=False)
    ids = torch.randint(0, 512, (2, 5), generator=torch.Generator().manual_seed(1))
    padded = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="padding"), torch.inference_mode():
        model(input_ids=ids, attention_mask=padded)
    # a causal mask over a static cache's written prefix: keys past position 4 are cut, not refused
    visible = torch.ones(3, 8, dtype=torch.bool).tril(diagonal=2)  # queries at positions 2..4
    visible[:, 5:] = False
    assert kernel_swap._plain_mask(visible[None, None], 3, 8, causal=True) == 5
    with pytest.raises(ValueError, match="biases"):
        kernel_swap._plain_mask(torch.full((1, 1, 3, 3), 0.5), 3, 3, causal=True)


def test_playbook_runs_as_a_check_on_the_pipeline(migrated_sqlite):
    from db import queries
    from db.session import session_scope
    from jobs import pipeline, submit

    pb = submit.validate_request({
        "name": "triton-test", "title": "triton check",
        "steps": [{"technique": "int8_weight_only"}, {"technique": "triton_kernels", "params": {"check_tokens": 6}}],
    }, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    assert pipeline.execute_run(run_id, worker="test") == "succeeded"
    with session_scope() as s:
        summary = queries.run_summary(queries.get_run(s, run_id))
    step = summary["steps"][1]
    assert step["status"] == "succeeded" and step["metrics"] == {}
    assert step["check"]["modules_swapped"] == 23
    assert step["check"]["max_abs_logit_diff"] < 1e-5 and step["check"]["top1_agreement"] == 1.0
    assert "speed needs a GPU" in step["notes"][0]
