"""The Technique contract (DESIGN.md): one name everywhere, a strict typed config,
``check(target) -> Verdict`` and ``apply(workload, config) -> StepRecord``.
Configs are pydantic models with ``extra="forbid"`` so a typo in a playbook fails
before anything runs (the llm-compressor / torchao convention)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from optimizers.workloads.base import Workload


class TechniqueConfig(BaseModel):
    """Base of every technique config: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


VerdictStatus = Literal["runs", "needs_gpu", "refused", "advice_only"]
VERDICTS: tuple[str, ...] = ("runs", "needs_gpu", "refused", "advice_only")  # one vocabulary: techniques, guide, DB, UI


@dataclass(frozen=True)
class Verdict:
    """Whether a technique can run on a target, and if not, why and what would fix it."""

    status: VerdictStatus
    reason: str = ""
    blame: Literal["target", "config"] = "target"  # config: the step's params are at fault (fix them), not the hardware

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
    linears: tuple[tuple[str, int], ...] = ()  # (name, in_features) of the nn.Linear layers the shared selection takes
    head_linear: bool = False  # the output projection (lm_head) is a plain nn.Linear (selected only on request)
    quantized: bool = False  # the model holds quantized Linear layers (what an exporter writes)
    draft: str | None = None  # the workload's own draft model: its name (or its class, when given as a model)
    has_train: bool = True  # the workload has a training split (what a technique that trains needs)
    attention_heads: tuple[int, int] | None = None  # (query heads, K/V heads) of a transformers model's attention
    convs: tuple[tuple[str, int, int, int, int, int], ...] = ()  # (name, out, in, kh, kw, groups) of each nn.Conv2d
    tied_embeddings: bool | None = None  # the LM head shares the input embedding's storage (None: no such pair)
    blocks: int | None = None  # transformer blocks (num_hidden_layers) of a transformers model

    @classmethod
    def of(cls, workload: "Workload") -> "Target":
        import torch

        from optimizers.quant.modules import default_predicate

        cap = None
        if workload.device.startswith("cuda") and torch.cuda.is_available():
            cap = torch.cuda.get_device_capability()
        pick = default_predicate(workload.model)
        linears = tuple((n, m.in_features) for n, m in workload.model.named_modules() if pick(n, m))
        draft = workload.meta.get("draft")
        head = getattr(workload.model, "get_output_embeddings", lambda: None)()
        return cls(
            device="cuda" if workload.device.startswith("cuda") else "cpu",
            capability=cap,
            task=workload.task,
            has_linear=bool(linears),
            has_calibration=bool(workload.calibration),
            linears=linears,
            head_linear=type(head) is torch.nn.Linear,
            quantized=any(type(m).__name__.startswith("QuantLinear") for m in workload.model.modules()),
            draft=None if draft is None else (draft if isinstance(draft, str) else type(draft).__name__),
            has_train=workload.train is not None,
            attention_heads=_attention_heads(workload.model),
            convs=tuple((n, m.out_channels, m.in_channels, *m.kernel_size, m.groups)
                        for n, m in workload.model.named_modules() if type(m) is torch.nn.Conv2d),
            tied_embeddings=_tied(head, getattr(workload.model, "get_input_embeddings", lambda: None)()),
            blocks=_blocks(workload.model),
        )

    def after(self, technique: "Technique", config: "TechniqueConfig | None" = None) -> "Target":
        """The target a later step sees, as far as it can be known before anything runs: a weight
        quantizer leaves no selected nn.Linear behind (nor the lm_head, if it took it) and a
        quantized model."""
        if technique.replaces_linear:
            took_head = bool(getattr(config, "include_lm_head", False))
            return replace(self, has_linear=False, linears=(), quantized=True,
                           head_linear=self.head_linear and not took_head)
        return self


def _tied(head: Any, embedding: Any) -> bool | None:
    """Whether the output head's weight shares storage with the input embedding's (None: either
    is missing or holds no plain weight tensor, e.g. a quantized head)."""
    import torch

    w_head, w_emb = getattr(head, "weight", None), getattr(embedding, "weight", None)
    plain = (torch.Tensor, torch.nn.Parameter)  # a tensor subclass (torchao's packed weight) has no one storage
    if type(w_head) not in plain or type(w_emb) not in plain:
        return None
    return w_head.untyped_storage().data_ptr() == w_emb.untyped_storage().data_ptr()


def _blocks(model: Any) -> int | None:
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    return n if isinstance(n, int) else None


def _attention_heads(model: Any) -> tuple[int, int] | None:
    cfg = getattr(model, "config", None)
    q = getattr(cfg, "num_attention_heads", None)
    if not isinstance(q, int):
        return None
    kv = getattr(cfg, "num_key_value_heads", None)
    return q, kv if isinstance(kv, int) else q


@dataclass
class StepRecord:
    """What ``apply`` returns: the typed outcome of one step, which the pipeline folds over and
    ``db.recorder`` stores. ``workload`` is the next workload (the same one for a runtime or
    recipe step, whose effect is in ``settings``); nothing here rides in ``workload.meta``."""

    workload: "Workload"
    settings: dict[str, Any] = field(default_factory=dict)  # runtime / recipe settings the scenario applies
    notes: list[str] = field(default_factory=list)
    diagnostics: dict[str, float] = field(default_factory=dict)  # scalars computed while applying (stored as metrics)
    details: dict[str, Any] = field(default_factory=dict)  # JSON-safe tables and curves (per-layer error, loss curve)
    # {variant: model or runtime}: a peer library's result for the same step — an nn.Module is measured
    # by the harness; another runtime (optimizers.runtimes) measures itself: metrics(workload, reference, settings)
    peers: dict[str, Any] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)  # files the step wrote, under the run's artifact folder
    check_metrics: dict[str, float] | None = None  # a correctness-check step: these figures, no re-measurement

    @property
    def model(self) -> Any:
        return self.workload.model


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
    needs_linear: ClassVar[bool] = False  # works on plain nn.Linear layers (quantizers, pruners, factorizations)
    replaces_linear: ClassVar[bool] = False  # swaps every selected nn.Linear for a quantized module
    run_settings: ClassVar[dict[str, Any]] = {}  # what the whole run (baseline too) needs to compare this step like with like

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
        head_only = bool(getattr(config, "include_lm_head", False)) and target.head_linear
        if self.needs_linear and not target.has_linear and not head_only:
            return Verdict("refused", f"{self.name} works on nn.Linear layers and this model has none left "
                                      "(an earlier weight quantizer replaces them: keep one, or put this step first)")
        if self.needs_calibration and not target.has_calibration:
            return Verdict("refused", f"{self.name} needs calibration data; the workload has none")
        group_size = getattr(config, "group_size", None)
        if isinstance(group_size, int) and target.linears and getattr(config, "bits", 4) != 8:  # 8-bit is per channel
            from optimizers.quant.modules import group_size_problem

            problem = group_size_problem(dict(target.linears), group_size)
            if problem:
                return Verdict("refused", problem, blame="config")
        return Verdict("runs")

    def apply(self, workload: "Workload", config: TechniqueConfig) -> StepRecord:
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
            "needs_linear": cls.needs_linear,
            "replaces_linear": cls.replaces_linear,
            "tasks": sorted(cls.tasks),
            "devices": sorted(cls.devices),
            "config_schema": cls.Config.model_json_schema(),
        }


def layer_error_figures(name: str, per_layer: dict[str, float]) -> dict[str, float]:
    """A per-layer diagnostic (GPTQ error, AWQ α, LLM.int8 outlier fraction) as stored scalars:
    its mean and maximum over layers; the table itself goes in ``StepRecord.details``."""
    values = [float(v) for v in per_layer.values()]
    if not values:
        return {}
    return {f"{name}_mean": sum(values) / len(values), f"{name}_max": max(values), f"{name}_layers": float(len(values))}


def curve_figures(name: str, curve: list[float]) -> dict[str, float]:
    """A curve (e.g. QAT's training loss per step) as stored scalars: its first and last values."""
    if not curve:
        return {}
    return {f"{name}_first": float(curve[0]), f"{name}_last": float(curve[-1]), f"{name}_steps": float(len(curve))}
