"""The export step: a GPTQ/int4 model written as compressed-tensors, reloaded by that
package, weights exact; the pipeline stores the checkpoint as a run artifact."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from db import queries
from db.session import session_scope
from jobs import pipeline, submit
from optimizers import registry
from optimizers.workloads import load_workload


def test_config_round_trip_and_refusals(tmp_path):
    tech = registry.get("export_compressed_tensors")
    cfg = tech.config({"folder": "ct-int4", "verify": False})
    assert tech.Config.model_validate_json(cfg.model_dump_json()) == cfg
    from optimizers.export import ExportError

    wl = load_workload("tiny-llama")  # not quantized: nothing the format can express
    wl.meta["artifact_dir"] = str(tmp_path)
    with pytest.raises((ExportError, ValueError)):
        tech.apply(wl, tech.config({}))


@pytest.mark.parametrize("params", [{"out_dir": "/tmp/anywhere"}, {"folder": "../escape"}, {"folder": "/etc"},
                                    {"folder": "a/b"}, {"folder": ".."}])
def test_no_parameter_points_outside_the_run_folder(params):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        registry.get("export_compressed_tensors").config(params)


def test_pipeline_gptq_then_export_leaves_a_reloadable_checkpoint(migrated_sqlite):
    pb = submit.validate_request(
        {"name": "gptq-export", "title": "GPTQ then export", "steps": [
            {"technique": "int4_weight_only", "params": {"group_size": 32}},
            {"technique": "export_compressed_tensors"}]},
        "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    assert pipeline.execute_run(run_id) == "succeeded"
    with session_scope() as s:
        step = queries.run_summary(queries.get_run(s, run_id))["steps"][1]
    assert step["status"] == "succeeded" and step["check"]["export_max_abs_weight_diff"] == 0.0
    [path] = pipeline.artifacts(run_id)
    cfg = json.loads((Path(path) / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "compressed-tensors"
    assert any("round-trip exactly" in n for n in step["notes"])
    assert len(pipeline.artifact_zip(path)) > 1000
