"""Pipeline v2: every technique returns one typed StepRecord; the pipeline folds over steps and
one recorder writes them; diagnostics are stored and summarised; nothing a step reports rides
in the workload's meta into later steps; steps that cannot compose are refused before the
baseline is measured, naming the step and the fix; runtime settings the whole run needs (a
speculative draft decodes through generate()) apply from the baseline on."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from db import queries
from db.models import Metric, RunStatus, StepStatus
from db.recorder import json_safe
from db.session import session_scope
from jobs import pipeline, submit
from optimizers import registry
from optimizers.base import StepRecord, Target, curve_figures, layer_error_figures
from optimizers.quant.testing import tiny_lm_workload
from optimizers.workloads import load_workload
from playbooks.errors import PlaybookError
from playbooks.schema import parse_playbook

from tests.optimizers.test_device_correct import GENERIC, PARAMS, workload_for


def _pb(*steps: dict) -> dict:
    return {"name": "fold", "title": "fold", "steps": list(steps)}


def _run(pb: dict, workload: str = "tiny-llama") -> dict:
    resolved = submit.validate_request(pb, workload, "cpu", scenario="inference")
    run_id = submit.create_run(resolved, workload, "cpu")
    pipeline.execute_run(run_id, worker="test")
    with session_scope() as s:
        return queries.run_summary(queries.get_run(s, run_id))


@pytest.mark.parametrize("name", GENERIC)
def test_apply_returns_a_record_and_leaves_meta_alone(name):
    """The old leak: notes, peers, per-layer errors and check figures rode in meta to every later step."""
    tech = registry.get(name)
    wl = workload_for(name)
    rec = tech.apply(wl, tech.config(PARAMS.get(name, {})))
    assert isinstance(rec, StepRecord)
    assert set(rec.workload.meta) <= set(wl.meta) | {"config"}, set(rec.workload.meta) - set(wl.meta)
    assert all(isinstance(v, float) for v in rec.diagnostics.values())
    json_safe(rec.details)  # storable as it is


def test_diagnostic_summaries_match_their_tables():
    assert layer_error_figures("e", {"a": 0.1, "b": 0.3}) == {"e_mean": pytest.approx(0.2), "e_max": 0.3, "e_layers": 2.0}
    assert layer_error_figures("e", {}) == {}
    assert curve_figures("loss", [3.0, 2.0, 1.5]) == {"loss_first": 3.0, "loss_last": 1.5, "loss_steps": 3.0}


def test_json_safe_never_stores_a_model_repr_or_nan():
    import torch

    out = json_safe({"m": torch.nn.Linear(2, 2), "x": float("nan"), "t": torch.tensor(2.5), "l": [1, (2, 3)]})
    assert out == {"m": "<Linear>", "x": None, "t": 2.5, "l": [1, [2, 3]]}


def test_gptq_run_stores_its_diagnostics_apart_from_the_measurement(migrated_sqlite):
    summary = _run(_pb({"technique": "gptq", "params": {"group_size": 32}}))
    assert summary["status"] == RunStatus.succeeded
    step = summary["steps"][0]
    assert step["status"] == StepStatus.succeeded
    table = step["details"]["gptq_layer_error"]
    assert len(table) == step["diagnostics"]["gptq_layer_error_layers"] > 0
    assert step["diagnostics"]["gptq_layer_error_max"] == pytest.approx(max(table.values()))
    assert "gptq_layer_error_mean" not in step["metrics"] and "perplexity" in step["metrics"]


def test_steps_that_cannot_compose_are_refused_before_the_baseline(migrated_sqlite):
    summary = _run(_pb({"technique": "int8_weight_only"}, {"technique": "gptq", "params": {"group_size": 32}}))
    assert summary["status"] == RunStatus.failed
    assert "refused before start: steps[1] (gptq)" in summary["error"]
    assert "steps[0] (int8_weight_only) replaced every nn.Linear" in summary["error"]
    assert summary["baseline"] == {} and all(s["status"] == StepStatus.pending for s in summary["steps"])


def test_a_group_size_that_divides_no_layer_is_refused_with_the_sizes_that_do():
    wl = load_workload("tiny-llama")
    pb = parse_playbook(_pb({"technique": "int4_weight_only", "params": {"group_size": 128}}))
    with pytest.raises(PlaybookError, match=r"refused before start: steps\[0\].*group_size=128 must divide.*valid choices"):
        pipeline.preflight(pb, wl)


def test_an_export_with_nothing_quantized_before_it_is_refused():
    wl = load_workload("tiny-llama")
    with pytest.raises(PlaybookError, match=r"steps\[0\] \(export_compressed_tensors\).*put a weight quantizer"):
        pipeline.preflight(parse_playbook(_pb({"technique": "export_compressed_tensors"})), wl)
    pipeline.preflight(parse_playbook(_pb({"technique": "int4_weight_only", "params": {"group_size": 32}},
                                          {"technique": "export_compressed_tensors"})), wl)  # composes


def test_a_step_that_cannot_run_on_this_workload_alone_is_skipped_not_refused():
    wl = load_workload("minilm")  # an encoder: speculative decoding and Triton kernels do not apply
    pipeline.preflight(parse_playbook(_pb({"technique": "speculative_decoding"}, {"technique": "int8_dynamic"})), wl)
    # a causal LM without a draft of its own: skipped there (the Guide's chat playbooks on tiny-llama)
    pipeline.preflight(parse_playbook(_pb({"technique": "speculative_decoding"})), load_workload("tiny-llama"))
    with pytest.raises(PlaybookError, match=r"params.draft='nope' is not a built-in workload"):
        pipeline.preflight(parse_playbook(_pb({"technique": "speculative_decoding", "params": {"draft": "nope"}})),
                           load_workload("tiny-llama"))


def test_the_target_evolves_as_the_steps_would_change_the_model():
    t = Target.of(tiny_lm_workload())
    assert t.has_linear and t.linears and not t.quantized
    after = t.after(registry.get("int4_weight_only"))
    assert not after.has_linear and after.quantized
    assert t.after(registry.get("magnitude_pruning")) == t
    # the lm_head stays a plain Linear unless the quantizer took it: a second one may still quantize it
    int8 = registry.get("int8_dynamic")
    assert t.head_linear and after.head_linear
    assert int8.check(after, int8.config({"include_lm_head": True})).runnable
    assert not int8.check(after, int8.config()).runnable
    assert not t.after(int8, int8.config({"include_lm_head": True})).head_linear


def test_run_settings_are_empty_when_every_loop_is_the_lean_one():
    pb = parse_playbook(_pb({"technique": "int8_dynamic"}, {"technique": "speculative_decoding"}))
    assert pipeline.run_settings(pb) == {}


def test_speculative_run_compares_the_draft_loop_with_the_lean_loop(migrated_sqlite, monkeypatch):
    """The step's decode comes from the draft-and-verify loop and is compared with the lean greedy
    loop — the baseline's — timed in the same measurement."""
    monkeypatch.setenv("SPEEDBOOK_REPEATS", "2")
    summary = _run(_pb({"technique": "speculative_decoding", "params": {"gamma": 3}}), "ref-lm")
    assert summary["status"] == RunStatus.succeeded, summary["error"]
    base, step = summary["baseline"], summary["steps"][0]
    assert "spec_acceptance_rate" not in base  # the baseline is the plain lean loop
    m = step["metrics"]
    assert m["greedy_match"] == 1.0 and 0 <= m["spec_acceptance_rate"] <= 1 and m["decode_tokens_per_s_plain"] > 0
    assert "parameters" in step["details"]["settings"]["speculative"]["draft"]  # described, not a repr
    with session_scope() as s:
        phases = set(s.scalars(sa.select(Metric.phase)).all())
    assert "diagnostic" in phases
