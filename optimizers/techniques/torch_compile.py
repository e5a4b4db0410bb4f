"""torch.compile: Dynamo captures the graph, Inductor fuses pointwise/reduction ops and
generates C++/OpenMP (CPU) or Triton (GPU) kernels (Ansel et al., PyTorch 2, ASPLOS 2024).
Same function, so lossless up to float reassociation; the first call of each input shape
compiles (~25 s on this CPU, FACTS.md), so apply compiles the evaluation's shapes — prefill, and
the harness's decode loop over a static KV cache (fixed shapes: one graph at every length; with
a growing cache, dynamic=None marks the length dynamic after one recompile) — and reports the
time. Peak memory is measured on the compiled graphs."""
from __future__ import annotations

import copy
import time
from typing import Literal

import torch
from pydantic import Field

from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.registry import register
from optimizers.workloads.base import LMEval, VisionEval, Workload


class TorchCompileConfig(TechniqueConfig):
    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="Inductor preset; reduce-overhead adds CUDA graphs (GPU), max-autotune tunes matmuls")
    dynamic: bool | None = Field(
        None, description="None (PyTorch's default): a shape that changes is marked dynamic after one recompile, so "
                          "decode with a growing KV cache runs one compiled graph; False: one static graph per shape "
                          "(decode recompiles per length and falls back to eager past the recompile limit)")
    fullgraph: bool = Field(False, description="fail instead of falling back to eager at a graph break")
    backend: Literal["inductor", "aot_eager", "eager"] = Field(
        "inductor", description="inductor generates fused kernels; aot_eager/eager only capture the graph (debugging)")
    warmup: bool = Field(True, description="compile the evaluation prompt's shape inside apply and report the time")


DECODE_WARMUP_TOKENS = 3  # decode steps run in apply, over the harness's static KV cache: one graph for all


def _example(workload: Workload):
    ev = workload.eval
    if isinstance(ev, LMEval):
        ids = ev.token_ids[: ev.prompt_len * ev.batch_size].reshape(ev.batch_size, ev.prompt_len).to(workload.device)

        def prefill_and_decode(m):
            from optimizers.measure import greedy_decode

            m(input_ids=ids, use_cache=False)  # the prefill graph the harness times
            greedy_decode(m, ids, DECODE_WARMUP_TOKENS)  # the decode loop the harness times: a static cache

        return prefill_and_decode
    if isinstance(ev, VisionEval):
        x = ev.images[: ev.batch_size].to(workload.device)
        return lambda m: m(x)
    return None


@register
class TorchCompile(Technique):
    kind = "runtime"  # how the scenario runs the model (compile mode), not a new model
    name = "torch_compile"
    summary = "torch.compile (Dynamo + Inductor): fused kernels, same outputs; compile time per input shape"
    Config = TorchCompileConfig

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if not verdict.runnable:
            return verdict
        if isinstance(config, TorchCompileConfig) and config.mode == "reduce-overhead" and target.device == "cpu":
            return Verdict("runs", "reduce-overhead's CUDA graphs do nothing on CPU; expect the default mode's "
                                   "speed. Each new input shape compiles first (~25 s on a 2-core CPU)")
        if isinstance(config, TorchCompileConfig) and config.dynamic is False and target.task == "causal_lm":
            return Verdict("runs", "dynamic=False compiles one graph per KV-cache length: decode recompiles every "
                                   "token and falls back to eager past the recompile limit; leave dynamic unset")
        return Verdict("runs", "each new input shape compiles on its first call (~25 s on a 2-core CPU)")

    def apply(self, workload: Workload, config: TorchCompileConfig) -> StepRecord:
        model = copy.deepcopy(workload.model).eval()
        mode = config.mode if config.backend == "inductor" else None  # modes are Inductor options
        compiled = torch.compile(model, backend=config.backend, mode=mode, dynamic=config.dynamic,
                                 fullgraph=config.fullgraph)
        notes = [f"torch.compile(backend={config.backend!r}, mode={mode!r}, dynamic={config.dynamic}, "
                 f"fullgraph={config.fullgraph}), "
                 f"torch {torch.__version__}"]
        run = _example(workload) if config.warmup else None
        if run is not None:
            with torch.inference_mode():
                t0 = time.perf_counter()
                run(compiled)
                first = time.perf_counter() - t0
                t0 = time.perf_counter()
                run(compiled)
                second = time.perf_counter() - t0
            notes.append(f"compiling the evaluation's shapes (prefill, and decode with a growing KV cache) took "
                         f"{first:.1f} s; running them again {second * 1e3:.1f} ms; other shapes compile on first use, "
                         "inside the measurement's warm-up")
        return StepRecord(workload.with_model(compiled), notes=notes,
                          diagnostics={"compile_time_s": round(first, 2)} if run else {})
