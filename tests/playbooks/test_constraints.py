"""Constraints: DESIGN.md's schema, strictly validated; every error names the field and,
where there is a closed set, the valid choices."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from playbooks.constraints import Constraints, load_constraints, load_constraints_text, parse_constraints
from playbooks.errors import ConstraintError

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
BASE = {"goal": "serve", "model": "Llama-3.1-8B", "hardware": {"gpu": "H100", "count": 1}}


def bad(**changes) -> dict:
    return {**BASE, **changes}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_is_valid(path):
    c = load_constraints(path)
    assert isinstance(c, Constraints)
    assert parse_constraints(c.to_dict()) == c  # dict round-trip


def test_defaults_and_resolution():
    c = parse_constraints({"goal": "edge", "model": "resnet50", "hardware": {"cpu": True}})
    assert (c.priority, c.concurrency, c.accuracy_tolerance, c.data, c.runtime) == ("throughput", 1, "small", "none", "any")
    assert c.model == "ResNet-50" and c.model_spec().params == 25_557_032
    assert c.hardware_spec().name == "CPU" and c.gpu_count == 0


def test_names_are_canonicalized():
    c = parse_constraints({"goal": "serve", "model": "llama-3.1-8b", "hardware": {"gpu": "h100-sxm", "count": 2}})
    assert c.model == "Llama-3.1-8B" and c.hardware.gpu == "H100" and c.hardware.count == 2


@pytest.mark.parametrize("data, pattern", [
    (bad(hardware={"gpu": "H1000"}), r"hardware\.gpu: unknown GPU 'H1000'; valid choices: A100-40GB, A100-80GB, H100"),
    (bad(hardware={"gpu": "H100", "count": 0}), r"hardware\.count: must be ≥ 1 \(got 0\)"),
    (bad(context_length=-5), r"context_length: must be > 0 \(got -5\)"),
    (bad(concurrency=0), r"concurrency: must be > 0"),
    (bad(colour="red"), r"colour: unknown field; valid fields: goal, model, hardware, priority, context_length"),
    (bad(goal="fly"), r"goal: 'fly' is not a valid choice; valid choices: pretrain, finetune, serve or edge"),
    (bad(priority="speed"), r"priority: 'speed' is not a valid choice; valid choices: latency, throughput, memory or cost"),
    (bad(accuracy_tolerance="none"), r"accuracy_tolerance: .*valid choices: lossless, small, moderate or aggressive"),
    (bad(runtime="tgi"), r"runtime: .*valid choices: pytorch, vllm, tensorrt-llm, onnx or any"),
    (bad(data="lots"), r"data: .*valid choices: none, calibration or training"),
    (bad(model="Llama-9"), r"model: unknown model 'Llama-9'; valid choices: Llama-2-7B, .* \(or a path to a config\.json\)"),
    (bad(model=5), r"model: must be a name from the model table, a path to a config\.json, or \{family, params_b"),
    (bad(hardware={"cpu": False}), r"hardware: must be \{gpu: NAME, count: N\} or \{cpu: true\}"),
    (bad(hardware={"gpu": "H100", "cpu": True}), r"hardware: give either gpu or cpu, not both"),
    (bad(hardware={"gpu": "CPU"}), r"hardware\.gpu: unknown GPU 'CPU'"),
    (bad(hardware={"gpu": "H100", "colour": 1}), r"hardware\.colour: unknown field; valid fields of hardware: gpu, count, cpu"),
    ({"model": "GPT-2", "hardware": {"cpu": True}}, r"goal: required"),
])
def test_bad_constraints_name_the_field(data, pattern):
    with pytest.raises(ConstraintError, match=pattern):
        parse_constraints(data)


CUSTOM = {"family": "llama", "params_b": 7, "layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 8,
          "vocab": 32000, "context": 4096}


@pytest.mark.parametrize("change, pattern", [
    ({"params_b": -7}, r"model\.params_b: must be > 0 \(got -7\)"),
    ({"layers": 0}, r"model\.layers: must be > 0"),
    ({"foo": 1}, r"model\.foo: unknown field; valid fields of model: family, params_b, layers"),
    ({"kv_heads": 5}, r"model: heads=32 must be a multiple of kv_heads=5"),
])
def test_bad_custom_model(change, pattern):
    with pytest.raises(ConstraintError, match=pattern) as err:
        parse_constraints(bad(model={**CUSTOM, **change}))
    assert "valid string" not in str(err.value)  # the str branch of the union is not reported


def test_custom_model_and_spec():
    c = parse_constraints(bad(model=CUSTOM))
    spec = c.model_spec()
    assert spec.params == 7_000_000_000 and spec.n_kv_heads == 8


def test_load_from_yaml_text_json_file_and_config_path(tmp_path):
    assert load_constraints_text("goal: serve\nmodel: GPT-2\nhardware: {cpu: true}\n").model == "GPT-2"
    p = tmp_path / "c.json"
    p.write_text(json.dumps(BASE))
    assert load_constraints(p).hardware.gpu == "H100"
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "llama", "hidden_size": 256, "intermediate_size": 512,
                               "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}))
    assert load_constraints(bad(model=str(cfg))).model_spec().hidden == 256


def test_load_errors():
    with pytest.raises(ConstraintError, match="constraints file not found"):
        load_constraints("/no/such/file.yaml")
    with pytest.raises(ConstraintError, match=r"malformed constraints YAML, line \d+, column \d+: "):
        load_constraints_text("goal: [serve\n")
    with pytest.raises(ConstraintError, match="must be a mapping"):
        load_constraints_text("- serve\n")
