"""The base of the serving scenario's runtime settings (continuous batching, paged KV cache,
chunked prefill, prefix caching, static batching): each step leaves the model alone and returns
settings the serving engines read (``optimizers.scenarios.serving``); the scenario then serves the
same trace again, so the step's figures are its effect on the same requests."""
from __future__ import annotations

from typing import Any, ClassVar

from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.workloads.base import Workload


class SettingStep(Technique):
    """What a runtime or recipe setting shares: it never changes the model, so once the declared
    capabilities allow it, it runs, and its verdict says how the scenario measures it."""

    def measured_by(self) -> str:
        raise NotImplementedError

    def notes(self, config: TechniqueConfig) -> list[str]:
        return []

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        return Verdict("runs", self.measured_by()) if verdict.runnable else verdict


class ServingSetting(SettingStep):
    kind = "runtime"
    tasks = frozenset({"causal_lm"})
    engine: ClassVar[str] = "continuous"  # the engine the setting runs on

    def settings(self, config: TechniqueConfig) -> dict[str, Any]:
        raise NotImplementedError

    def measured_by(self) -> str:
        return f"a serving-engine setting: measured by serving the run's trace ({self.engine} engine); the model is unchanged"

    def apply(self, workload: Workload, config: TechniqueConfig) -> StepRecord:
        if workload.task != "causal_lm":
            raise ValueError(f"{self.name} applies to causal LMs served in the serving scenario, not {workload.task}")
        return StepRecord(workload, settings={"batching": self.engine, **self.settings(config)},
                          notes=self.notes(config))

class TrainingSetting(SettingStep):
    """The base of the training scenario's recipe settings (mixed precision, checkpointing,
    accumulation, optimizers, adapters, sharding): each leaves the model alone and returns the
    recipe fields it sets (under ``training``; the pipeline merges them with the earlier steps'),
    and the scenario trains again from the same starting weights on the same batches, so the
    step's figures are the recipe's effect."""

    kind = "recipe"
    tasks = frozenset({"causal_lm", "encoder", "vision"})

    def recipe(self, config: TechniqueConfig) -> dict[str, Any]:
        raise NotImplementedError

    def measured_by(self) -> str:
        return ("a training-recipe setting: measured by training the run's batches again under the recipe so far; "
                "the starting model is unchanged")

    def apply(self, workload: Workload, config: TechniqueConfig) -> StepRecord:
        return StepRecord(workload, settings={"training": self.recipe(config)}, notes=self.notes(config))

def merge_settings(before: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Settings after a step: a key replaces the earlier value, except the training recipe,
    whose fields accumulate (bf16 then checkpointing trains with both)."""
    out = {**before, **new}
    if isinstance(before.get("training"), dict) and isinstance(new.get("training"), dict):
        out["training"] = {**before["training"], **new["training"]}
    return out
