"""LoRA (Hu et al. 2021, arXiv:2106.09685): freeze the model and train a low-rank update
W + (α/r)·B·A on the chosen projections (B starts at zero, so step 0 is the base model), through
peft. Afterwards the update is merged into W, so the inference scenario measures an ordinary
model of the same size."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from optimizers.base import TechniqueConfig
from optimizers.registry import register
from optimizers.scenarios.settings import TrainingSetting
from optimizers.training.recipe import Adapter

_DEFAULT = Adapter()


class LoraConfig(TechniqueConfig):
    rank: int = Field(_DEFAULT.rank, ge=1, le=4096, description="r: rank of the update B·A")
    alpha: float = Field(_DEFAULT.alpha, gt=0, description="α: the update is scaled by α / r")
    dropout: float = Field(_DEFAULT.dropout, ge=0, lt=1, description="dropout on the adapter's input")
    targets: list[str] = Field(list(_DEFAULT.targets), min_length=1,
                               description="projection names to adapt (the names present in the model are used)")
    lr: float = Field(_DEFAULT.lr, gt=0, le=1.0, description="adapter learning rate (LoRA trains well at ~1e-3)")


@register
class Lora(TrainingSetting):
    name = "lora"
    summary = "train a low-rank update of frozen projections (peft), merged back afterwards"
    Config = LoraConfig
    tasks = frozenset({"causal_lm", "encoder"})
    adapter_kind = "lora"

    def recipe(self, config: TechniqueConfig) -> dict[str, Any]:
        return {"adapter": {"kind": self.adapter_kind, "rank": config.rank, "alpha": config.alpha,
                            "dropout": config.dropout, "targets": tuple(config.targets), "lr": config.lr}}
