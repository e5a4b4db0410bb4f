"""Gradient accumulation: an optimizer step's batch runs as ``micro_batches`` smaller forward /
backward passes whose gradients add up before one update — the same sequences and the same
update as the whole batch (up to float summation order), with activations for one micro-batch
at a time. The training scenario keeps the step's batch fixed, so the loss curve is comparable."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from optimizers.base import TechniqueConfig
from optimizers.registry import register
from optimizers.scenarios.settings import TrainingSetting


class GradientAccumulationConfig(TechniqueConfig):
    micro_batches: int = Field(4, ge=2, le=1024, description="micro-batches per optimizer step; must divide "
                                                            "training.batch_size")


@register
class GradientAccumulation(TrainingSetting):
    name = "gradient_accumulation"
    summary = "split each step's batch into micro-batches whose gradients accumulate"
    Config = GradientAccumulationConfig

    def recipe(self, config: TechniqueConfig) -> dict[str, Any]:
        return {"accumulation": config.micro_batches}
