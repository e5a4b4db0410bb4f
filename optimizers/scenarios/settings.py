"""The base of the serving scenario's runtime settings (continuous batching, paged KV cache,
chunked prefill, prefix caching, static batching): each step leaves the model alone and returns
settings the serving engines read (``optimizers.scenarios.serving``); the scenario then serves the
same trace again, so the step's figures are its effect on the same requests."""
from __future__ import annotations

from typing import Any, ClassVar

from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.workloads.base import Workload


class ServingSetting(Technique):
    kind = "runtime"
    tasks = frozenset({"causal_lm"})
    engine: ClassVar[str] = "continuous"  # the engine the setting runs on

    def settings(self, config: TechniqueConfig) -> dict[str, Any]:
        raise NotImplementedError

    def notes(self, config: TechniqueConfig) -> list[str]:
        return []

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if not verdict.runnable:
            return verdict
        return Verdict("runs", f"a serving-engine setting: measured by serving the run's trace "
                               f"({self.engine} engine); the model is unchanged")

    def apply(self, workload: Workload, config: TechniqueConfig) -> StepRecord:
        if workload.task != "causal_lm":
            raise ValueError(f"{self.name} applies to causal LMs served in the serving scenario, not {workload.task}")
        return StepRecord(workload, settings={"batching": self.engine, **self.settings(config)},
                          notes=self.notes(config))
