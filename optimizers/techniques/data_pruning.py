"""Data pruning (Paul, Ganguli & Dziugaite, Deep Learning on a Data Diet, NeurIPS 2021; Sorscher et
al., Beyond neural scaling laws, 2022): score each candidate training example by EL2N (the error
vector's norm ‖softmax(f(x)) − y‖₂) or its loss, keep the hardest fraction, train on it. In the
training scenario the same number of steps trains on the kept examples; judged by the held-out
loss reached against the baseline's shuffled, unpruned data."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from optimizers.base import TechniqueConfig
from optimizers.registry import register
from optimizers.scenarios.settings import TrainingSetting


class DataPruningConfig(TechniqueConfig):
    keep: float = Field(0.5, gt=0, le=1, description="fraction of the scored candidates kept (the hardest)")
    score: Literal["el2n", "loss"] = Field("el2n", description="difficulty: EL2N (error L2 norm) or the loss")
    warmup_steps: int = Field(0, ge=0, le=10_000, description="train a copy this many steps on the full data before "
                                                              "scoring (0: the starting model scores; else ≥ 3)")


@register
class DataPruning(TrainingSetting):
    name = "data_pruning"
    summary = "train on the hardest fraction of the examples by EL2N or loss scores (data diet)"
    Config = DataPruningConfig
    tasks = frozenset({"causal_lm", "vision"})
    kind_ = "prune"

    def recipe(self, config: Any) -> dict[str, Any]:
        return {"data": {"kind": self.kind_, "keep": getattr(config, "keep", 1.0), "score": config.score,
                         "warmup_steps": config.warmup_steps}}
