"""Continuous (iteration-level) batching (Yu et al., Orca, OSDI 2022): the scheduler rebuilds the
batch at every decode step, so finished requests leave and queued ones join at once instead of
waiting for the batch's longest request. Runs transformers' continuous-batching manager over its
paged KV cache (page size and block count from a ``paged_kv_cache`` step, else 16-token pages
sized to the trace); exact: every output must equal one-at-a-time greedy decoding."""
from __future__ import annotations

from typing import Any

from optimizers.base import TechniqueConfig
from optimizers.registry import register
from optimizers.scenarios.settings import ServingSetting


class ContinuousBatchingConfig(TechniqueConfig):
    pass


@register
class ContinuousBatching(ServingSetting):
    name = "continuous_batching"
    summary = "iteration-level scheduling: requests join and leave the running batch at every decode step"
    Config = ContinuousBatchingConfig

    def settings(self, config: TechniqueConfig) -> dict[str, Any]:
        return {}

    def notes(self, config: TechniqueConfig) -> list[str]:
        return ["transformers' ContinuousBatchingManager (FIFO scheduler, paged KV cache); requests stop at their "
                "stated length, so outputs compare token for token with the baseline's"]
