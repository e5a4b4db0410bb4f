"""ONNX Runtime as a model: a PyTorch module exported to ONNX (``torch.onnx``, the dynamo or the
legacy TorchScript exporter), optionally quantized by ``onnxruntime.quantization`` (static QDQ or
dynamic int8), and run by an ``InferenceSession`` behind an ``nn.Module`` whose outputs have the
original model's structure, so the one measurement harness judges it (ONNX Runtime, Microsoft,
onnxruntime.ai). Every import of onnx / onnxruntime is lazy: this module imports without them."""
from __future__ import annotations

import importlib.util
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from torch import nn
from torch.utils import _pytree as pytree

Exporter = Literal["dynamo", "legacy"]
Precision = Literal["fp32", "int8_static", "int8_dynamic"]
GraphLevel = Literal["all", "extended", "basic", "disabled"]
ORT_VERSION = "1.31.1"  # the pin in requirements.txt; also the newest onnxruntime-gpu
INSTALL = f"pip install onnx==1.23.2 onnxscript==0.7.2 onnxruntime=={ORT_VERSION}"
ENABLE_CUDA = (f"pip uninstall -y onnxruntime && pip install onnxruntime-gpu=={ORT_VERSION} "
               "(one of the two wheels: both install the `onnxruntime` package)")
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
             "QLinearConv", "QLinearMatMul")
TOKEN_TYPE_IDS = "token_type_ids"  # transformers' encoders take zeros when it is omitted; so does the session


def missing() -> str | None:
    """Why an ONNX export cannot run here, with the pip command; None when it can."""
    absent = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    return f"{', '.join(absent)} not installed: {INSTALL}" if absent else None


def providers(device: str) -> list[str]:
    """Execution providers, first choice first: CUDA (when the workload is on a GPU and this
    onnxruntime build has it), then CPU."""
    import onnxruntime as ort

    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def cuda_provider_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def session(model_bytes: bytes, device: str, level: GraphLevel, threads: int) -> Any:
    """An InferenceSession on ``model_bytes`` with ``threads`` intra-op threads (torch's count, so
    the comparison is like with like) and one inter-op thread (the graph runs sequentially)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[level]
    opts.log_severity_level = 3  # errors only: no per-node warnings in the worker's log
    return ort.InferenceSession(model_bytes, opts, providers=providers(device))


# ---------------------------------------------------------------- inputs and outputs


def input_names(example: Any) -> list[str]:
    """ONNX input names: a dict batch's keys (encoders), else ``input`` (one tensor, vision)."""
    return list(example) if isinstance(example, dict) else ["input"]


def feeds(batch: Any, names: list[str]) -> dict[str, Any]:
    """One batch (a tensor or a dict of tensors) as the session's numpy inputs, by name; an
    omitted ``token_type_ids`` becomes zeros (what transformers' encoders assume)."""
    given = dict(batch) if isinstance(batch, dict) else {names[0]: batch}
    if TOKEN_TYPE_IDS in names and given.get(TOKEN_TYPE_IDS) is None and "input_ids" in given:
        given[TOKEN_TYPE_IDS] = torch.zeros_like(given["input_ids"])
    absent = [n for n in names if given.get(n) is None]
    if absent:
        raise ValueError(f"the ONNX model takes inputs {names}; this call lacks {absent}")
    unknown = [k for k, v in given.items() if k not in names and isinstance(v, torch.Tensor)]
    if unknown:
        raise ValueError(f"inputs {unknown} are not inputs of the exported graph ({names}); export with them")
    return {n: given[n].detach().cpu().numpy() for n in names}


def output_spec(model: nn.Module, example: Any) -> Any:
    """The structure of ``model``'s output (a tensor, a ModelOutput…), whose tensor leaves come in
    the order the exporters flatten them into ONNX outputs."""
    with torch.no_grad():
        out = model(**example) if isinstance(example, dict) else model(example)
    leaves, spec = pytree.tree_flatten(out)
    if not all(isinstance(t, torch.Tensor) for t in leaves):
        raise ValueError(f"{type(model).__name__} returns non-tensor values ({type(out).__name__}); "
                         "an ONNX graph returns tensors only")
    return spec


class OrtModule(nn.Module):
    """An ONNX Runtime session as a module: ``forward`` feeds the inputs (positional or by name)
    to the session and returns torch tensors, on the module's device, in the structure the
    exported model returned (digits-cnn: the logits tensor; an encoder: a ModelOutput with
    ``last_hidden_state``). The serialized ONNX model is the registered buffer ``onnx_model``
    (uint8), so ``stored_bytes`` is the file's size; ``anchor`` (0 elements) says the device to
    callers that read it from ``next(model.parameters())``."""

    def __init__(self, model_bytes: bytes, spec: Any, device: str = "cpu", level: GraphLevel = "all",
                 threads: int | None = None) -> None:
        super().__init__()
        self.register_buffer("onnx_model", torch.frombuffer(bytearray(model_bytes), dtype=torch.uint8).to(device))
        self.anchor = nn.Parameter(torch.empty(0, device=device), requires_grad=False)
        self.spec, self.level, self.threads = spec, level, threads or torch.get_num_threads()
        self._start()

    def _start(self) -> None:
        self.session = session(self.onnx_model.cpu().numpy().tobytes(), str(self.anchor.device), self.level, self.threads)
        self.names = [i.name for i in self.session.get_inputs()]
        if len(self.session.get_outputs()) != self.spec.num_leaves:
            raise ValueError(f"the ONNX graph has {len(self.session.get_outputs())} outputs where the model returned "
                             f"{self.spec.num_leaves} tensors; the exporter dropped or split some")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) > len(self.names):
            raise ValueError(f"the ONNX model takes {len(self.names)} inputs ({self.names}), got {len(args)}")
        batch = {**dict(zip(self.names, args)), **kwargs}
        outs = self.session.run(None, feeds(batch, self.names))
        return pytree.tree_unflatten([torch.from_numpy(o).to(self.anchor.device) for o in outs], self.spec)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __getstate__(self) -> dict[str, Any]:  # the session does not pickle: rebuilt from the bytes
        return {k: v for k, v in self.__dict__.items() if k != "session"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._start()

    def extra_repr(self) -> str:
        return f"onnx_bytes={self.onnx_model.numel()}, inputs={self.names}, providers={self.providers}"


# ---------------------------------------------------------------- export


def _summary(err: BaseException) -> str:
    """A short message from an exporter error: dynamo's "Exception summary" line, else the first line."""
    text = str(err)
    m = re.search(r"Exception summary\s*\n+(.+)", text)
    line = (m.group(1) if m else text.strip().splitlines()[0] if text.strip() else type(err).__name__)
    return re.sub(r"\x1b\[[0-9;]*m", "", line).strip()[:400]


class _ByName(nn.Module):
    """Positional inputs → the wrapped model's keyword inputs: the legacy tracer hands a dict's
    values to ``forward`` positionally, which transformers' models mis-bind (``use_cache`` twice)."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> Any:
        return self.model(**dict(zip(self.names, tensors)))


@dataclass
class Exported:
    """How an export went: the exporter that wrote the file, its seconds, the legacy tracer's
    warnings (Python control flow it froze) and, after a fallback, why the first exporter failed."""

    exporter: Exporter
    seconds: float
    tracer_warnings: list[str]
    first_failure: str | None = None


def export(model: nn.Module, example: Any, path: Path, exporter: Exporter, opset: int, seq_dim: bool,
           fallback: bool = False) -> Exported:
    """Export ``model`` (on the CPU, eval) to ``path``; the batch dimension (and the sequence
    dimension, ``seq_dim``) stay dynamic. A failure is a ValueError naming the exporter; with
    ``fallback`` the other exporter is tried first, and only both failing is an error."""
    try:
        return _export(model, example, path, exporter, opset, seq_dim)
    except ValueError as first:
        if not fallback:
            raise
        other: Exporter = "legacy" if exporter == "dynamo" else "dynamo"
        try:
            done = _export(model, example, path, other, opset, seq_dim)
        except ValueError as second:
            raise ValueError(f"{first}; and {second}") from second
        done.first_failure = str(first)
        return done


def _export(model: nn.Module, example: Any, path: Path, exporter: Exporter, opset: int, seq_dim: bool) -> Exported:
    names = input_names(example)
    args, kwargs = ((), dict(example)) if isinstance(example, dict) else ((example,), {})
    axes = {0: "batch", 1: "seq"} if seq_dim else {0: "batch"}
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if exporter == "dynamo":
                dims = {i: torch.export.Dim(n) for i, n in axes.items()}
                shapes = {n: dims for n in names} if kwargs else (dims,)
                program = torch.onnx.export(model, args, kwargs=kwargs or None, dynamo=True, dynamic_shapes=shapes,
                                            input_names=names, opset_version=opset, verbose=False)
                program.save(str(path))
            else:
                traced = _ByName(model, names) if kwargs else model
                torch.onnx.export(traced, args or tuple(kwargs.values()), str(path), dynamo=False, input_names=names,
                                  dynamic_axes={n: axes for n in names}, opset_version=opset)
        except Exception as err:  # noqa: BLE001 - every exporter failure is reported the same way
            other = "legacy" if exporter == "dynamo" else "dynamo"
            raise ValueError(f"the {exporter} ONNX exporter could not export {type(model).__name__}: "
                             f"{type(err).__name__}: {_summary(err)}; try exporter: {other}") from err
    tracer = sorted({str(w.message).split(".")[0] for w in caught if w.category.__name__ == "TracerWarning"})
    return Exported(exporter, time.perf_counter() - t0, tracer)


def external_data(path: Path) -> list[str]:
    """Files beside ``path`` the export wrote (weights as external data, models > 2 GB)."""
    return sorted(p.name for p in path.parent.iterdir() if p.is_file() and p.name != path.name)


def op_counts(model_bytes: bytes) -> dict[str, int]:
    """Node count per ONNX op type (main graph)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load_from_string(model_bytes).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


# ---------------------------------------------------------------- quantization


def _reader(batches: list[Any], names: list[str]) -> Any:
    """The calibration batches as an ``onnxruntime.quantization.CalibrationDataReader``."""
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[dict[str, Any]] = (feeds(b, names) for b in batches)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._it, None)

    return Batches()


def _pre_process(src: Path, dst: Path) -> None:
    """Shape inference + graph cleanup, as the quantizer expects; ONNX's own shape inference where
    onnxruntime's symbolic one gives up (it does on dynamo-exported transformers)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
    except Exception:  # noqa: BLE001 - "Incomplete symbolic shape inference"
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def quantize(src: Path, dst: Path, precision: Precision, calibration: list[Any], names: list[str]) -> None:
    """int8 with onnxruntime.quantization, per-channel weights: ``int8_static`` inserts QDQ pairs
    whose activation ranges come from the calibration batches (MinMax); ``int8_dynamic`` computes
    activation scales at run time (DynamicQuantizeLinear, MatMulInteger / ConvInteger)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    import contextlib
    import tempfile

    src, dst = src.resolve(), dst.resolve()
    pre = src.with_suffix(".pre.onnx")
    try:  # the symbolic shape inference writes scratch files (a model and its ~model-sized external data) to
        # the working directory and leaves them: run it in a folder of its own that goes afterwards
        with tempfile.TemporaryDirectory(prefix="ort-quant-") as scratch, contextlib.chdir(scratch):
            _pre_process(src, pre)
            if precision == "int8_static":
                quantize_static(str(pre), str(dst), _reader(calibration, names), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
            else:
                quantize_dynamic(str(pre), str(dst), per_channel=True, weight_type=QuantType.QInt8)
    except Exception as err:  # noqa: BLE001 - a quantizer failure names the step, never a raw trace
        raise ValueError(f"onnxruntime.quantization could not make {precision}: {type(err).__name__}: "
                         f"{_summary(err)}; try precision: fp32") from err
    finally:
        pre.unlink(missing_ok=True)
