"""Static batching: requests are grouped into padded batches of ``max_concurrency`` and each
batch runs through ``generate()`` until its longest request is done — what serving looked like
before iteration-level scheduling, and the honest middle baseline between one request at a time
and continuous batching (the padded rectangle shows in ``kv_cache_used_fraction``)."""
from __future__ import annotations

from typing import Any

from optimizers.base import TechniqueConfig
from optimizers.registry import register
from optimizers.scenarios.settings import ServingSetting


class StaticBatchingConfig(TechniqueConfig):
    pass


@register
class StaticBatching(ServingSetting):
    name = "static_batching"
    summary = "padded batches run to their longest request (the pre-Orca baseline)"
    Config = StaticBatchingConfig
    engine = "static"

    def settings(self, config: TechniqueConfig) -> dict[str, Any]:
        return {}

    def notes(self, config: TechniqueConfig) -> list[str]:
        return ["padded batches through generate() (left padding, attention mask): a batch waits for its last "
                "member and decodes until its longest output is complete"]
