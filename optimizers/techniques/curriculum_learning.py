"""Curriculum learning (Bengio et al., Curriculum Learning, ICML 2009): the same training examples
as the baseline, ordered easy → hard by the difficulty scores data pruning uses (EL2N or loss from
the starting model, or after a short warm-up). Judged in the training scenario by the held-out
loss reached on the same budget against the baseline's shuffled order."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from optimizers.base import TechniqueConfig
from optimizers.registry import register
from optimizers.techniques.data_pruning import DataPruning


class CurriculumLearningConfig(TechniqueConfig):
    score: Literal["el2n", "loss"] = Field("loss", description="difficulty: the loss or EL2N (error L2 norm)")
    warmup_steps: int = Field(0, ge=0, le=10_000, description="train a copy this many steps before scoring "
                                                              "(0: the starting model scores; else ≥ 3)")


@register
class CurriculumLearning(DataPruning):
    name = "curriculum_learning"
    summary = "train on the same examples ordered easy → hard by loss or EL2N scores"
    Config = CurriculumLearningConfig
    kind_ = "curriculum"
