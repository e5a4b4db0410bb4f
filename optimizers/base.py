"""The Technique contract (DESIGN.md): one name everywhere, a strict typed config,
``check(target) -> Verdict`` and ``apply(workload, config) -> workload``.
Configs are pydantic models with ``extra="forbid"`` so a typo in a playbook fails
before anything runs (the llm-compressor / torchao convention)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from optimizers.workloads.base import Workload


class TechniqueConfig(BaseModel):
    """Base of every technique config: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


VerdictStatus = Literal["runs", "needs_gpu", "refused"]


@dataclass(frozen=True)
class Verdict:
    """Whether a technique can run on a target, and if not, why and what would fix it."""

    status: VerdictStatus
    reason: str = ""

    @property
    def runnable(self) -> bool:
        return self.status == "runs"

    def to_dict(self) -> dict[str, str]:
        return {"status": self.status, "reason": self.reason}


@dataclass(frozen=True)
class Target:
    """What a technique is asked to run on: the device and what the model is."""

    device: str = "cpu"  # "cpu" or "cuda"
    capability: tuple[int, int] | None = None  # CUDA compute capability, None on CPU
    task: str | None = None  # "causal_lm" | "encoder" | "vision" | None (unknown)
    has_linear: bool = True
    has_calibration: bool = True

    @classmethod
    def of(cls, workload: "Workload") -> "Target":
        import torch

        cap = None
        if workload.device.startswith("cuda") and torch.cuda.is_available():
            cap = torch.cuda.get_device_capability()
        has_linear = any(isinstance(m, torch.nn.Linear) for m in workload.model.modules())
        return cls(
            device="cuda" if workload.device.startswith("cuda") else "cpu",
            capability=cap,
            task=workload.task,
            has_linear=has_linear,
            has_calibration=bool(workload.calibration),
        )


@dataclass
class StepOutcome:
    """What ``apply`` reports besides the new workload: side-by-side extras and notes."""

    notes: list[str] = field(default_factory=list)
    extra_metrics: dict[str, float] = field(default_factory=dict)


class Technique:
    """Subclass, set the class attributes, implement ``apply``; register with ``@register``."""

    name: ClassVar[str]
    family: ClassVar[str]  # e.g. "quantization", "pruning", "kernels"
    summary: ClassVar[str]
    Config: ClassVar[type[TechniqueConfig]]
    tasks: ClassVar[frozenset[str]] = frozenset({"causal_lm", "encoder", "vision"})
    devices: ClassVar[frozenset[str]] = frozenset({"cpu", "cuda"})
    lossless: ClassVar[bool] = False  # True only if outputs are unchanged up to float error
    kind: ClassVar[str] = "transform"  # transform (returns a new model) | runtime | recipe (settings a scenario applies)
    needs_calibration: ClassVar[bool] = False

    def config(self, params: dict[str, Any] | None = None) -> TechniqueConfig:
        return self.Config(**(params or {}))

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        """Default checks from the declared capabilities; override to add more."""
        if target.task is not None and target.task not in self.tasks:
            return Verdict("refused", f"{self.name} applies to {sorted(self.tasks)} models, not {target.task}")
        if target.device not in self.devices:
            if "cuda" in self.devices:
                return Verdict("needs_gpu", f"{self.name} needs a CUDA GPU; this target is {target.device}")
            return Verdict("refused", f"{self.name} runs on {sorted(self.devices)}, not {target.device}")
        if not target.has_linear and self.family == "quantization":
            return Verdict("refused", f"{self.name} quantizes nn.Linear layers and this model has none")
        if self.needs_calibration and not target.has_calibration:
            return Verdict("refused", f"{self.name} needs calibration data; the workload has none")
        return Verdict("runs")

    def apply(self, workload: "Workload", config: TechniqueConfig) -> "Workload":
        raise NotImplementedError(f"{type(self).__name__}.apply")

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Name, family and the config's JSON schema (the UI renders forms from it)."""
        return {
            "name": cls.name,
            "family": cls.family,
            "summary": cls.summary,
            "lossless": cls.lossless,
            "kind": cls.kind,
            "needs_calibration": cls.needs_calibration,
            "tasks": sorted(cls.tasks),
            "devices": sorted(cls.devices),
            "config_schema": cls.Config.model_json_schema(),
        }
