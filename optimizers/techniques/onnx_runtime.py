"""ONNX export + ONNX Runtime: the model exported to ONNX (torch.onnx, dynamo or legacy TorchScript
exporter), optionally quantized to int8 by onnxruntime.quantization (static QDQ from the
calibration batches, or dynamic), and run by an ONNX Runtime session with graph optimizations and
torch's thread count; the next workload's model is that session (``OrtModule``), measured by the
same harness as every step (ONNX Runtime, Microsoft, 2018–; onnxruntime.ai).

Sample yaml::

    - technique: onnx_runtime
      params: {precision: int8_static, calibration_batches: 4}
"""
from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.registry import register
from optimizers.runtimes import onnxruntime as ort_rt
from optimizers.workloads.base import Workload

LM_REASON = ("onnx_runtime runs vision and encoder models. A causal LM's measurement prefills and decodes through "
             "transformers' KV cache and generate(), which an exported graph without past_key_values inputs does not "
             "offer (ONNX Runtime GenAI is that route; not measured here); a Llama also exports only with "
             "exporter: dynamo, the legacy TorchScript exporter fails on it")


class OnnxRuntimeConfig(TechniqueConfig):
    precision: ort_rt.Precision = Field(
        "fp32", description="fp32: the exported graph as is; int8_static: QDQ int8 with activation ranges from the "
        "calibration batches (the int8 path for CNNs: a 0.45× smaller file on digits-cnn, no faster than ORT fp32 "
        "there); int8_dynamic: activation scales at run time (MatMulInteger / ConvInteger: for encoders; ConvInteger "
        "made digits-cnn 6-14× slower than torch)")
    exporter: ort_rt.Exporter = Field(
        "dynamo", description="dynamo: torch.export + onnxscript (the one for transformers); legacy: the TorchScript "
        "tracer (freezes Python control flow to the example's path)")
    graph_optimization: ort_rt.GraphLevel = Field(
        "all", description="ONNX Runtime graph optimizations: all (layout + fusions), extended, basic (constant "
        "folding, redundant nodes), disabled")
    calibration_batches: int = Field(4, ge=1, le=1024, description="calibration batches that set the activation "
                                                                  "ranges (int8_static)")
    fallback: bool = Field(True, description="when the chosen exporter fails, export with the other one (said in "
                                             "the notes); false: the failure is the step's error")
    opset: int = Field(20, ge=17, le=23, description="ONNX opset the exporter targets (torch's default: 20)")
    folder: str = Field("onnx", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                        description="sub-folder of the run's artifact folder for model.onnx (a name, never a path)")


def float_linears(model: torch.nn.Module) -> list[str]:
    """Replace torch-side quantized Linear layers (Speedbook's QuantLinear*, torch.ao's dynamic
    ones), which have no ONNX op, by nn.Linear holding their dequantized weights; in place."""
    from torch.ao.nn.quantized.dynamic import Linear as AoDynamicLinear

    from optimizers.quant.modules import QuantLinearBase, replace_linears

    def to_float(_: str, m: torch.nn.Module) -> torch.nn.Linear:
        if isinstance(m, AoDynamicLinear):
            weight, bias = m.weight().dequantize(), m.bias()
        else:
            weight, bias = m.dequantized_weight(), m.bias
            if m.input_scale is not None:  # layer(x * s) = x @ (W * s)ᵀ
                weight = weight * m.input_scale.float()[None, :]
        lin = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            lin.weight.copy_(weight)
            if bias is not None:
                lin.bias.copy_(bias)
        return lin

    return replace_linears(model, lambda n, m: isinstance(m, (QuantLinearBase, AoDynamicLinear)), to_float)


def eval_batch(workload: Workload) -> Any:
    """The first evaluation batch as the model takes it (an encoder's through its tokenizer)."""
    ev = workload.eval
    if workload.task == "vision":
        return ev.images[: ev.batch_size]
    return dict(workload.tokenizer(ev.sentences[: ev.batch_size], padding=True, truncation=True, return_tensors="pt"))


def example_batch(workload: Workload) -> Any:
    """The batch the graph is traced with: the first calibration batch, else the first evaluation
    batch; an encoder's gets zero ``token_type_ids`` when its tokenizer takes them. Dynamic
    dimensions need a size ≥ 2 in the example (torch.export specializes 0 and 1)."""
    batch = workload.calibration[0] if workload.calibration else eval_batch(workload)
    if isinstance(batch, dict):
        batch = {k: v.cpu() for k, v in batch.items() if isinstance(v, torch.Tensor)}
        takes = getattr(workload.tokenizer, "model_input_names", [])
        if ort_rt.TOKEN_TYPE_IDS in takes and ort_rt.TOKEN_TYPE_IDS not in batch and "input_ids" in batch:
            batch[ort_rt.TOKEN_TYPE_IDS] = torch.zeros_like(batch["input_ids"])
        return {k: v if v.shape[0] > 1 else torch.cat([v, v]) for k, v in batch.items()}
    batch = batch.cpu()
    return batch if batch.shape[0] > 1 else torch.cat([batch, batch])


def max_abs_diff(ref: Any, out: Any) -> float:
    """Largest |Δ| over the outputs' tensor leaves (the logits, the hidden states)."""
    from torch.utils import _pytree as pytree

    pairs = zip(pytree.tree_leaves(ref), pytree.tree_leaves(out))
    return max(float((a.float().cpu() - b.float().cpu()).abs().max()) for a, b in pairs)


def _run(model: torch.nn.Module, batch: Any) -> Any:
    with torch.no_grad():
        return model(**batch) if isinstance(batch, dict) else model(batch)


@register
class OnnxRuntime(Technique):
    name = "onnx_runtime"
    summary = "export to ONNX and run in ONNX Runtime (graph optimizations; optional static QDQ or dynamic int8)"
    Config = OnnxRuntimeConfig
    tasks = frozenset({"encoder", "vision"})

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        if target.task == "causal_lm":
            return Verdict("refused", LM_REASON)
        verdict = super().check(target, config)
        if not verdict.runnable:
            return verdict
        if problem := ort_rt.missing():
            return Verdict("refused", f"onnx_runtime needs {problem}")
        precision = getattr(config, "precision", "fp32")
        if precision == "int8_static" and not target.has_calibration:
            return Verdict("refused", "precision int8_static sets activation ranges from calibration batches and "
                                      "the workload has none: use int8_dynamic or fp32", blame="config")
        reasons = []
        if precision == "int8_static" and target.task == "encoder":
            reasons.append("static int8 quantizes every activation of a transformer with MinMax ranges: on minilm "
                           "the embedding cosine fell to 0.38 (int8_dynamic: 0.992); prefer int8_dynamic for encoders")
        if target.device == "cuda":
            if not ort_rt.cuda_provider_available():
                return Verdict("refused", f"this onnxruntime build has no CUDAExecutionProvider, so it would run a "
                                          f"CUDA workload on the CPU: {ort_rt.ENABLE_CUDA}")
            if precision != "fp32":
                reasons.append("the CUDA provider runs int8 QDQ graphs without int8 kernels (TensorRT's provider has "
                               "them): expect no speed-up from int8 there")
        if target.quantized:
            reasons.append("its torch-side quantized Linear layers have no ONNX op: they are exported as float Linear "
                           "layers holding their dequantized weights (the rounding stays, the int8 GEMM does not)")
        return Verdict("runs", "; ".join(reasons))

    def apply(self, workload: Workload, config: OnnxRuntimeConfig) -> StepRecord:
        _require(workload, config)
        model = copy.deepcopy(workload.model).cpu().eval()
        dequantized = float_linears(model)
        example = example_batch(workload)
        spec = ort_rt.output_spec(model, example)
        with tempfile.TemporaryDirectory(prefix="speedbook-onnx-") as tmp:
            path = Path(tmp) / "export" / "model.onnx"
            path.parent.mkdir()
            done = ort_rt.export(model, example, path, config.exporter, config.opset, workload.task == "encoder",
                                 config.fallback)
            if extra := ort_rt.external_data(path):
                raise ValueError(f"the export wrote its weights as external data ({extra[:3]}: a model over 2 GB); "
                                 "onnx_runtime counts one self-contained .onnx file only")
            if config.precision != "fp32":
                quantized = Path(tmp) / "model.int8.onnx"
                batches = workload.calibration[: config.calibration_batches] or [example]
                ort_rt.quantize(path, quantized, config.precision, batches, ort_rt.input_names(example))
                path = quantized
            model_bytes = path.read_bytes()
            artifacts = self._keep(workload, config, path)
        ort_model = ort_rt.OrtModule(model_bytes, spec, workload.device, config.graph_optimization)
        if config.precision == "fp32":  # on the traced batch and on one it never saw
            _require_faithful(model, ort_model, [example, eval_batch(workload)], done.exporter)
        batch = workload.calibration[0] if workload.calibration else example
        out = _run(ort_model, batch)
        ops = ort_rt.op_counts(model_bytes)
        quant_ops = {k: v for k, v in ops.items() if k in ort_rt.QUANT_OPS}
        notes = self._notes(workload, config, done, ort_model, ops, quant_ops, len(model_bytes))
        if dequantized:
            notes.append(f"{len(dequantized)} torch-side quantized Linear layers exported as float Linear with their "
                         "dequantized weights (no ONNX op runs them)")
        diagnostics = {"onnx_export_s": done.seconds, "onnx_nodes": float(sum(ops.values())),
                       "onnx_quant_nodes": float(sum(quant_ops.values())),
                       "onnx_max_abs_diff": max_abs_diff(_run(workload.model, _on(batch, workload.device)), out),
                       "onnx_file_bytes": float(len(model_bytes))}
        return StepRecord(workload.with_model(ort_model), notes=notes, diagnostics=diagnostics, artifacts=artifacts)

    @staticmethod
    def _keep(workload: Workload, config: OnnxRuntimeConfig, path: Path) -> list[str]:
        """Copy the .onnx file into the run's artifact folder, when the run has one."""
        if not workload.meta.get("artifact_dir"):
            return []
        out = Path(workload.meta["artifact_dir"]) / config.folder
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / "model.onnx")
        return [str(out)]

    @staticmethod
    def _notes(workload: Workload, config: OnnxRuntimeConfig, done: ort_rt.Exported, ort_model: ort_rt.OrtModule,
               ops: dict[str, int], quant_ops: dict[str, int], nbytes: int) -> list[str]:
        import onnxruntime

        from optimizers.measure import parameter_count

        params = workload.meta.get("param_count") or parameter_count(workload.uncompressed)
        notes = [f"exported by torch.onnx ({done.exporter}, opset {config.opset}) in {done.seconds:.1f} s: "
                 f"{sum(ops.values())} ONNX nodes; ONNX Runtime {onnxruntime.__version__}, providers "
                 f"{ort_model.providers}, {ort_model.threads} intra-op threads (torch's count), graph optimization "
                 f"{config.graph_optimization}",
                 f"model.onnx is {nbytes:,} B = {nbytes / (2 * params):.2f}× a 16-bit copy of the {params:,} parameters",
                 "peak_memory_bytes sees torch's allocations only: ONNX Runtime's own arena is not counted"]
        if quant_ops:
            calib = f", {config.calibration_batches} calibration batches" if config.precision == "int8_static" else ""
            notes.insert(1, f"{config.precision} (per-channel int8 weights{calib}): "
                            + ", ".join(f"{v} {k}" for k, v in sorted(quant_ops.items())))
        if done.first_failure:
            notes.insert(0, f"{done.first_failure.split('; try exporter')[0]} → exported with {done.exporter} instead")
        if done.tracer_warnings:
            notes.append("the legacy tracer froze Python control flow to the example batch's path (outputs checked "
                         f"against torch): {'; '.join(done.tracer_warnings[:3])}")
        return notes


def _require(workload: Workload, config: OnnxRuntimeConfig) -> None:
    """What ``check`` refuses, said again where a caller skipped it."""
    if workload.task not in OnnxRuntime.tasks:
        raise ValueError(LM_REASON)
    if isinstance(workload.model, ort_rt.OrtModule):
        raise ValueError("the model already is an ONNX Runtime session (an earlier onnx_runtime step); keep one")
    if problem := ort_rt.missing():
        raise ValueError(f"onnx_runtime needs {problem}")
    if config.precision == "int8_static" and not workload.calibration:
        raise ValueError("onnx_runtime needs calibration data for precision int8_static: the workload has none; "
                         "use precision int8_dynamic or fp32")


def _require_faithful(model: torch.nn.Module, ort_model: torch.nn.Module, batches: list[Any], exporter: str) -> None:
    """An fp32 graph computes what the exported model does, up to float error: |Δ| ≤ 1e-3·max(1, max|ref|)
    (observed 7e-6 on digits-cnn, 3e-5 on minilm). A traced graph that froze a branch fails on a batch
    that takes the other one."""
    from torch.utils import _pytree as pytree

    for batch in batches:
        ref = _run(model, _on(batch, "cpu"))
        scale = max(1.0, max(float(t.abs().max()) for t in pytree.tree_leaves(ref)))
        diff = max_abs_diff(ref, _run(ort_model, batch))
        if diff > 1e-3 * scale:
            raise ValueError(f"ONNX Runtime's outputs differ from torch's by {diff:.3g} (outputs up to {scale:.3g}): "
                             f"the {exporter} graph does not compute what the model does (Python control flow frozen "
                             "by tracing?); try the other exporter")


def _on(batch: Any, device: str) -> Any:
    if isinstance(batch, dict):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return batch.to(device)
