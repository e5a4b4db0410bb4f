"""ZeRO (Rajbhandari et al. 2020): stage 1 shards the optimizer states over data-parallel ranks
(torch's ``ZeroRedundancyOptimizer`` with DDP all-reducing gradients); stage 3 shards parameters
and gradients too (FSDP2 ``fully_shard``, PyTorch's ZeRO-3). Stage 2 (gradients sharded,
parameters replicated) has no separate torch implementation here: choose 1 or 3."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from optimizers.registry import register
from optimizers.techniques.fsdp import Fsdp, FsdpConfig


class ZeroConfig(FsdpConfig):
    stage: Literal[1, 3] = Field(3, description="1: optimizer states sharded (ZeroRedundancyOptimizer); "
                                                "3: parameters, gradients and states (FSDP2)")


@register
class Zero(Fsdp):
    name = "zero"
    summary = "ZeRO stage 1 (ZeroRedundancyOptimizer) or 3 (FSDP2) over data-parallel ranks"
    Config = ZeroConfig
