"""Feature distillation: knowledge distillation plus the teacher's intermediate hidden states as
hints (FitNets, Romero et al. 2015), regressed through a learned projection when the widths
differ, student block i matched to teacher block round(i·L_t/L_s) with normalized states (Patient
KD, Sun et al. 2019). The projection trains with the student and is discarded afterwards."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from optimizers.registry import register
from optimizers.techniques.knowledge_distillation import KnowledgeDistillation, KnowledgeDistillationConfig


class FeatureDistillationConfig(KnowledgeDistillationConfig):
    beta: float = Field(1.0, gt=0, le=1000, description="weight of the hidden-state loss beside the logit loss")


@register
class FeatureDistillation(KnowledgeDistillation):
    name = "feature_distillation"
    summary = "knowledge distillation plus hidden-state hints through a projection (FitNets / Patient KD)"
    Config = FeatureDistillationConfig
    tasks = frozenset({"causal_lm", "encoder"})

    def beta(self, config: Any) -> float:
        return config.beta
