"""CUDA Graphs: capture a decode step's kernel launches once and replay them, removing the CPU's
per-kernel launch cost that dominates small-batch decode on a GPU — through torch.compile's
``mode="reduce-overhead"`` (Inductor kernels + CUDA-graph trees; Ansel et al., ASPLOS 2024),
over the harness's static KV cache, whose fixed shapes and addresses graphs need. CUDA only: on a
CPU there are no launches to save, and the verdict says so (``torch_compile`` runs there)."""
from __future__ import annotations

from pydantic import Field

from optimizers.base import StepRecord, TechniqueConfig
from optimizers.registry import register
from optimizers.techniques.torch_compile import TorchCompile, TorchCompileConfig
from optimizers.workloads.base import Workload


class CudaGraphsConfig(TechniqueConfig):
    warmup: bool = Field(True, description="capture the evaluation's shapes inside apply and report the time")


@register
class CudaGraphs(TorchCompile):
    name = "cuda_graphs"
    summary = "capture and replay decode's kernel launches (torch.compile mode reduce-overhead, CUDA)"
    Config = CudaGraphsConfig

    def apply(self, workload: Workload, config: CudaGraphsConfig) -> StepRecord:
        if not workload.device.startswith("cuda"):
            raise ValueError("cuda_graphs replays CUDA kernel launches: it needs a CUDA device; on a CPU use "
                             "torch_compile")
        return super().apply(workload, TorchCompileConfig(mode="reduce-overhead", warmup=config.warmup))
