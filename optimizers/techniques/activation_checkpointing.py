"""Activation checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"):
keep only each decoder layer's input during the forward pass and recompute the layer in
backward — activation memory falls from all layers' intermediates to one layer's plus the
inputs, for about one extra forward pass of compute (transformers' non-reentrant checkpointing)."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from optimizers.base import TechniqueConfig
from optimizers.registry import register
from optimizers.scenarios.settings import TrainingSetting


class ActivationCheckpointingConfig(TechniqueConfig):
    every_n_layers: int = Field(1, ge=1, le=1024, description="recompute every n-th decoder layer (1: all; larger "
                                                               "keeps more activations for less recompute)")


@register
class ActivationCheckpointing(TrainingSetting):
    name = "activation_checkpointing"
    summary = "recompute each decoder layer in backward instead of storing its activations"
    Config = ActivationCheckpointingConfig
    tasks = frozenset({"causal_lm", "encoder"})

    def recipe(self, config: TechniqueConfig) -> dict[str, Any]:
        return {"checkpointing": config.every_n_layers}
