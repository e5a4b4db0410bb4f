"""onnx_runtime: config, verdicts, digits-cnn exported by both exporters runs in ONNX Runtime
within float error of torch, static int8 keeps its predictions in a smaller file, stored bytes are
the .onnx file's size, an encoder returns ``last_hidden_state``, a torch-quantized model exports
through its dequantized weights, export failures are ValueErrors naming the exporter, and the
measurement harness runs on the result."""
from __future__ import annotations

import copy
import os
from unittest import mock

import pytest
import torch

from optimizers.base import Target
from optimizers.measure import measure, stored_bytes
from optimizers.quant.modules import QuantLinearInt8
from optimizers.quant.testing import check_config_roundtrip
from optimizers.runtimes import onnxruntime as ort_rt
from optimizers.techniques.onnx_runtime import OnnxRuntime
from optimizers.workloads.base import EncoderEval, VisionEval, Workload

T = OnnxRuntime()


@pytest.fixture(scope="module")
def digits():
    from optimizers.workloads import load_workload

    return load_workload("digits-cnn")


@pytest.fixture(scope="module")
def fp32(digits, tmp_path_factory):
    wl = digits.with_model(digits.model, artifact_dir=str(tmp_path_factory.mktemp("run")))
    return wl, T.apply(wl, T.config({}))


@pytest.fixture(scope="module")
def int8_static(digits):
    return T.apply(digits, T.config({"precision": "int8_static", "calibration_batches": 2}))


def _logits(model, x):
    with torch.no_grad():
        return model(x)


def test_config_roundtrip_and_choices():
    check_config_roundtrip(T, {"precision": "int8_static", "exporter": "legacy", "graph_optimization": "basic",
                               "calibration_batches": 2, "opset": 18})
    with pytest.raises(ValueError, match="precision"):
        T.config({"precision": "int4"})


def test_verdicts():
    assert T.check(Target(device="cpu", task="vision"), T.config({})).status == "runs"
    assert T.check(Target(device="cpu", task="encoder"), T.config({})).status == "runs"
    lm = T.check(Target(device="cpu", task="causal_lm"), T.config({"exporter": "legacy"}))
    assert lm.status == "refused" and "past_key_values" in lm.reason and "exporter: dynamo" in lm.reason
    v = T.check(Target(device="cpu", task="vision", quantized=True), T.config({}))
    assert v.status == "runs" and "dequantized weights" in v.reason
    v = T.check(Target(device="cpu", task="vision", has_calibration=False), T.config({"precision": "int8_static"}))
    assert v.status == "refused" and v.blame == "config" and "calibration" in v.reason
    assert T.check(Target(device="cpu", task="vision", has_calibration=False), T.config({})).runnable
    v = T.check(Target(device="cpu", task="encoder"), T.config({"precision": "int8_static"}))
    assert v.runnable and "int8_dynamic" in v.reason
    with mock.patch.object(ort_rt, "cuda_provider_available", return_value=False):
        v = T.check(Target(device="cuda", capability=(9, 0), task="vision"), T.config({}))
    assert v.status == "refused" and "onnxruntime-gpu" in v.reason
    with mock.patch("importlib.util.find_spec", return_value=None):
        v = T.check(Target(device="cpu", task="vision"), T.config({}))
    assert v.status == "refused" and "pip install onnx" in v.reason


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_fp32_matches_torch(digits, fp32, exporter):
    rec = fp32[1] if exporter == "dynamo" else T.apply(digits, T.config({"exporter": exporter}))
    x = digits.eval.images[:37]  # a batch size the export never saw: the batch dimension is dynamic
    err = (_logits(rec.model, x) - _logits(digits.model, x)).abs().max()
    assert err < 1e-4  # observed 7e-6 (dynamo and legacy)
    assert rec.diagnostics["onnx_max_abs_diff"] < 1e-4 and rec.diagnostics["onnx_nodes"] > 0
    assert rec.diagnostics["onnx_quant_nodes"] == 0
    assert any(f"({exporter}, opset 20)" in n and "CPUExecutionProvider" in n for n in rec.notes)


def test_stored_bytes_are_the_onnx_file(fp32):
    wl, rec = fp32
    path = os.path.join(wl.meta["artifact_dir"], "onnx", "model.onnx")
    assert rec.artifacts == [os.path.dirname(path)]
    assert stored_bytes(rec.model) == os.path.getsize(path) == rec.diagnostics["onnx_file_bytes"]
    assert wl.model is not rec.model and isinstance(wl.model, torch.nn.Module)  # the input is untouched


def test_int8_static_keeps_predictions_in_a_smaller_file(digits, fp32, int8_static):
    x = digits.eval.images
    ref, out = _logits(digits.model, x), _logits(int8_static.model, x)
    assert (ref.argmax(-1) == out.argmax(-1)).double().mean() > 0.97  # observed 1.0 on the 360 test images
    assert stored_bytes(int8_static.model) < 0.6 * stored_bytes(fp32[1].model)  # observed 0.44
    assert int8_static.diagnostics["onnx_quant_nodes"] > 0
    assert any("QuantizeLinear" in n and "2 calibration batches" in n for n in int8_static.notes)


def test_int8_dynamic_quantizes_at_run_time(digits):
    rec = T.apply(digits, T.config({"precision": "int8_dynamic"}))
    x = digits.eval.images[:64]
    assert (_logits(digits.model, x).argmax(-1) == _logits(rec.model, x).argmax(-1)).double().mean() > 0.95
    assert any("DynamicQuantizeLinear" in n for n in rec.notes)


def test_measure_runs_on_the_session(digits, fp32, monkeypatch):
    monkeypatch.setenv("SPEEDBOOK_MIN_TIME_S", "0")
    monkeypatch.setenv("SPEEDBOOK_REPEATS", "2")
    base = measure(digits, speed=False, memory=False)
    m = measure(fp32[1].workload, base)
    assert m.metrics["accuracy"] == base.metrics["accuracy"] and m.metrics["top1_agreement"] == 1.0
    assert m.metrics["latency_ms"] > 0 and m.metrics["stored_bytes"] == fp32[1].diagnostics["onnx_file_bytes"]


def test_session_survives_deepcopy(digits, fp32):
    again = copy.deepcopy(fp32[1].model)
    x = digits.eval.images[:5]
    assert torch.equal(_logits(again, x), _logits(fp32[1].model, x))


def test_torch_quantized_layers_export_dequantized(digits):
    model = copy.deepcopy(digits.model)
    model.classifier = QuantLinearInt8.from_linear(model.classifier, act_int8=True)
    wl = digits.with_model(model)
    assert Target.of(wl).quantized
    rec = T.apply(wl, T.config({}))
    x = digits.eval.images[:64]
    assert (_logits(rec.model, x) - _logits(model, x)).abs().max() < 0.05  # observed ~5e-3: int8 activations in torch
    assert any("1 torch-side quantized Linear layers exported as float Linear" in n for n in rec.notes)


class _Branchy(torch.nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x  # data-dependent control flow: torch.export cannot capture it


def _branchy() -> Workload:
    x = torch.rand(4, 3)  # calibration sums > 0, evaluation sums < 0: the other branch
    return Workload(name="branchy", task="vision", model=_Branchy(), calibration=[x],
                    eval=VisionEval(images=-x, labels=torch.zeros(4, dtype=torch.long)))


def test_export_failure_names_the_exporter_and_the_other_one():
    with pytest.raises(ValueError, match=r"the dynamo ONNX exporter could not export _Branchy: .*try exporter: legacy"):
        T.apply(_branchy(), T.config({"fallback": False}))


def test_a_trace_that_froze_the_wrong_branch_is_an_error():
    with pytest.raises(ValueError, match=r"differ from torch's by .* the legacy graph does not compute what the model"):
        T.apply(_branchy(), T.config({}))  # dynamo fails, the legacy trace keeps the calibration batch's branch


def test_fallback_to_legacy_for_an_early_exit_cnn(digits):
    from optimizers.techniques.early_exit import EarlyExitCNN

    model = EarlyExitCNN(copy.deepcopy(digits.model), criterion="confidence", threshold=0.0).eval()  # all exit at head 1
    rec = T.apply(digits.with_model(model), T.config({}))
    assert rec.notes[0].startswith("the dynamo ONNX exporter could not export EarlyExitCNN") and "legacy instead" in rec.notes[0]
    assert any("froze Python control flow" in n for n in rec.notes)
    x = digits.eval.images
    assert (_logits(rec.model, x) - _logits(model, x)).abs().max() < 1e-4  # observed 2e-7


def test_causal_lm_is_refused_in_apply_too():
    x = torch.randn(4, 3)
    wl = Workload(name="lm", task="causal_lm", model=_Branchy(), eval=VisionEval(images=x, labels=x[:, 0].long()))
    with pytest.raises(ValueError, match="vision and encoder models"):
        T.apply(wl, T.config({}))


@pytest.fixture(scope="module")
def encoder():
    from transformers import AutoTokenizer, BertConfig, BertModel

    from optimizers.workloads import minilm

    tok = AutoTokenizer.from_pretrained(minilm.model_dir(), local_files_only=True)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64)).eval()
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The cat sleeps.",
                 "Stock markets fell sharply today after the announcement.", "def f(x): return x"]
    return Workload(name="tiny-bert", task="encoder", model=model, tokenizer=tok,
                    eval=EncoderEval(sentences=sentences, batch_size=4),
                    calibration=minilm.calibration_batches(tok, sentences, batch_size=3))


def test_encoder_returns_last_hidden_state(encoder, monkeypatch):
    rec = T.apply(encoder, T.config({}))
    enc = encoder.tokenizer(encoder.eval.sentences[1:], padding=True, return_tensors="pt")  # other batch and length
    with torch.no_grad():
        ref, out = encoder.model(**enc).last_hidden_state, rec.model(**enc).last_hidden_state
    assert out.shape == ref.shape and (out - ref).abs().max() < 1e-4  # observed 6e-7
    without = {k: v for k, v in enc.items() if k != "token_type_ids"}  # zeros, as transformers assumes
    assert torch.allclose(rec.model(**without).last_hidden_state, out)
    monkeypatch.setenv("SPEEDBOOK_MIN_TIME_S", "0")
    monkeypatch.setenv("SPEEDBOOK_REPEATS", "2")
    m = measure(rec.workload, measure(encoder, speed=False, memory=False), memory=False)
    assert m.metrics["embedding_cosine"] > 0.9999
