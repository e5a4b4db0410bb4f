"""compressed-tensors export: int4 (RTN asym/sym, GPTQ 3-bit, AWQ) as pack-quantized, W8A16
/ W8A8 (smoothquant, int8_dynamic) as int-quantized; reloaded with transformers +
compressed-tensors the weights equal ours exactly; what it cannot express is refused."""
import json

import pytest
import torch

from optimizers import registry
from optimizers.export import ExportError, check_round_trip, export_compressed_tensors, model_scheme, reload
from optimizers.quant.testing import logits, rel_err, tiny_lm_workload

CASES = [
    ("int4_weight_only", {"group_size": 32}, "pack-quantized", {"num_bits": 4, "strategy": "group", "symmetric": False}),
    ("int4_weight_only", {"group_size": 32, "symmetric": True}, "pack-quantized", {"num_bits": 4, "symmetric": True}),
    ("gptq", {"group_size": 32, "bits": 3}, "pack-quantized", {"num_bits": 3, "group_size": 32}),
    ("awq", {"group_size": 32, "grid": 4}, "pack-quantized", {"num_bits": 4}),
    ("int8_weight_only", {}, "int-quantized", {"num_bits": 8, "strategy": "channel"}),
    ("smoothquant", {}, "int-quantized", {"num_bits": 8, "strategy": "channel"}),
    ("int8_dynamic", {}, "int-quantized", {"num_bits": 8, "strategy": "channel"}),
]


@pytest.mark.parametrize("name,params,fmt,weights", CASES)
def test_export_and_reload_round_trip(tmp_path, name, params, fmt, weights):
    wl = tiny_lm_workload(outliers=name in ("awq", "smoothquant"))
    t = registry.get(name)
    out = t.apply(wl, t.config(params)).workload
    export_compressed_tensors(out.model, tmp_path)
    qc = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == fmt
    group = qc["config_groups"]["group_0"]
    assert {k: group["weights"][k] for k in weights} == weights
    assert qc["ignore"] == ["lm_head"]
    if name in ("smoothquant", "int8_dynamic"):
        acts = group["input_activations"]
        assert acts["dynamic"] is True and acts["num_bits"] == 8
    back = reload(tmp_path)
    errs = check_round_trip(out.model, back)
    assert max(errs.values()) == 0.0  # observed: exact for every case
    # the reloaded (dequantized, float-activation) model computes what ours does up to the
    # activation quantization it does not simulate
    bound = 1e-5 if name not in ("smoothquant", "int8_dynamic") else 0.06
    assert rel_err(logits(out), logits(wl.with_model(back))) < bound  # observed 0 / ≤ 1e-6; W8A8 0.010-0.039


@pytest.mark.parametrize("name,params,match", [
    ("nf4", {}, "QuantLinearNF4, which compressed-tensors cannot express"),
    ("llm_int8", {}, "QuantLinearLLMInt8"),
    ("fp8", {}, "QuantLinearFP8"),
    ("smoothquant", {"smooth_unfoldable": True}, "explicit per-channel input scale.*smooth_unfoldable=False"),
])
def test_unexpressible_combinations_are_refused(tmp_path, name, params, match):
    wl = tiny_lm_workload(outliers=True)
    t = registry.get(name)
    with pytest.raises(ExportError, match=match):
        export_compressed_tensors(t.apply(wl, t.config(params)).model, tmp_path)


def test_unquantized_and_non_hf_models_are_refused(tmp_path):
    with pytest.raises(ExportError, match="no quantized Linear layers"):
        export_compressed_tensors(tiny_lm_workload().model, tmp_path)
    with pytest.raises(ExportError, match="not a Hugging Face PreTrainedModel"):
        export_compressed_tensors(torch.nn.Sequential(torch.nn.Linear(4, 4)), tmp_path)


def test_mixed_schemes_are_refused():
    import copy

    from optimizers.quant.modules import QuantLinearInt4, QuantLinearInt8, set_module

    wl = tiny_lm_workload()
    m = copy.deepcopy(wl.model)
    set_module(m, "model.layers.0.mlp.up_proj", QuantLinearInt8.from_linear(m.model.layers[0].mlp.up_proj))
    set_module(m, "model.layers.0.mlp.down_proj", QuantLinearInt4.from_linear(m.model.layers[0].mlp.down_proj, 32))
    with pytest.raises(ExportError, match="mixed quantization schemes"):
        model_scheme(m)
