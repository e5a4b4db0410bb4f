"""FSDP (Zhao et al. 2023, PyTorch's ZeRO-3; Rajbhandari et al. 2020): parameters, gradients and
optimizer states sharded over data-parallel ranks, each decoder layer all-gathered just in time
for its forward and backward (FSDP2 ``fully_shard``). The training scenario launches the ranks
with torch.distributed's launcher on the worker's machine — gloo between processes on a CPU,
NCCL between GPUs — splits every batch between them and reports one rank's memory; the loss
curve must equal the single-process one (checked by the benchmark and tests)."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from optimizers.base import TechniqueConfig
from optimizers.registry import register
from optimizers.scenarios.settings import TrainingSetting


class FsdpConfig(TechniqueConfig):
    ranks: int = Field(2, ge=2, le=64, description="data-parallel processes (GPUs, or CPU processes with gloo); "
                                                   "must divide training.batch_size")


@register
class Fsdp(TrainingSetting):
    name = "fsdp"
    summary = "shard parameters, gradients and optimizer states over ranks (FSDP2 fully_shard)"
    Config = FsdpConfig
    tasks = frozenset({"causal_lm"})
    stage = 3

    def recipe(self, config: TechniqueConfig) -> dict[str, Any]:
        return {"sharding": {"stage": getattr(config, "stage", self.stage), "ranks": config.ranks}}

    def notes(self, config: TechniqueConfig) -> list[str]:
        return [f"{config.ranks} ranks launched by torch.distributed.run on this machine, sharing its cores; "
                "memory figures are one rank's"]
