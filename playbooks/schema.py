"""Playbook schema: ordered ``{technique, params}`` steps and ``expect`` gates, loaded
from YAML and validated before anything is written (unknown technique, unknown or
invalid parameter → ``PlaybookError`` naming the step and the field)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from playbooks.errors import PlaybookError
from playbooks.yaml_limits import safe_yaml
from optimizers.scenarios.trace import TraceConfig
from optimizers.scenarios.training import TrainingConfig
from playbooks.search import SearchSpec

LIBRARY_DIR = Path(__file__).parent / "library"


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    technique: str = Field(description="registered technique name, or a catalog id for an advice-only step")
    params: dict[str, Any] = Field(default_factory=dict, description="the technique's config")
    alternatives: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="the config of a catalog alternative, by technique, for when the guide "
        "swaps it in for this step (e.g. TensorRT → onnx_runtime on a CPU: {onnx_runtime: {precision: int8_static}})")


class Gate(BaseModel):
    """A quality/size goal checked against the baseline after the last step."""

    model_config = ConfigDict(extra="forbid")
    metric: str
    max_ratio: float | None = Field(None, description="final / baseline must be ≤ this")
    min_ratio: float | None = Field(None, description="final / baseline must be ≥ this")
    max: float | None = Field(None, description="final value must be ≤ this")
    min: float | None = Field(None, description="final value must be ≥ this")

    @model_validator(mode="after")
    def _one_bound(self) -> "Gate":
        if all(v is None for v in (self.max_ratio, self.min_ratio, self.max, self.min)):
            raise ValueError(f"gate on {self.metric!r} needs one of max_ratio, min_ratio, max, min")
        return self

    def check(self, baseline: float | None, final: float | None) -> tuple[bool | None, str]:
        """(True, …) met, (False, …) missed, (None, …) not measured in this run (e.g. advice-only steps)."""
        if final is None:
            return None, f"{self.metric}: not measured in this run"
        problems = []
        if self.max is not None and final > self.max:
            problems.append(f"{final:.4g} > max {self.max:.4g}")
        if self.min is not None and final < self.min:
            problems.append(f"{final:.4g} < min {self.min:.4g}")
        if self.max_ratio is not None or self.min_ratio is not None:
            if not baseline:
                return None, f"{self.metric}: no baseline to take a ratio against"
            r = final / baseline
            if self.max_ratio is not None and r > self.max_ratio:
                problems.append(f"ratio {r:.4g} > {self.max_ratio:.4g}")
            if self.min_ratio is not None and r < self.min_ratio:
                problems.append(f"ratio {r:.4g} < {self.min_ratio:.4g}")
        return (not problems), f"{self.metric}: " + ("; ".join(problems) if problems else "ok")


GATES_VERDICTS = ("passed", "missed", "not checked")


def gates_verdict(results: list[dict[str, Any]]) -> str:
    """One word for a run's gates: ``missed`` if any gate missed, ``passed`` if every gate was
    checked and met, else ``not checked`` (no gates, or a metric this run did not measure)."""
    oks = [r.get("ok") for r in results]
    if any(ok is False for ok in oks):
        return "missed"
    if oks and all(ok is True for ok in oks):
        return "passed"
    return "not checked"


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=100, description="slug, unique in the library")
    title: str = Field(min_length=1, max_length=200, description="one line people read")
    source: str = Field("", max_length=500, description="where in the taxonomy this playbook comes from")
    description: str = Field("", max_length=10_000)
    when: dict[str, Any] = Field(default_factory=dict, description="the constraints this playbook serves")
    scenario: Literal["inference", "serving", "training"] | None = Field(
        None, description="the protocol the run is judged in; default from when.goal (serve → serving for a causal LM, "
                          "pretrain/finetune → training, else inference)")
    trace: TraceConfig | None = Field(None, description="the serving scenario's request trace (seeded); default: "
                                                         "16 requests, all at once, 16 admitted at a time")
    training: TrainingConfig | None = Field(None, description="the training scenario's budget (steps, batch, "
                                                              "sequence length, lr, seed); default: 12 steps of 4 × 128")
    steps: list[Step] = Field(min_length=1, max_length=64)
    expect: list[Gate] = Field(default_factory=list, max_length=64)
    search: SearchSpec | None = Field(None, description="parameters `speedbook tune` and the Search page may vary, "
                                                         "what it optimizes and its budget (playbooks/search.py)")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(exclude_defaults=False), sort_keys=False, allow_unicode=True)


def _format_validation(err: ValidationError, where: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        parts.append(f"{where}{loc}: {e['msg']}")
    return "; ".join(parts)


def validate_steps(pb: Playbook) -> None:
    """Each step must name a registered technique (params checked by its config) or a catalog id."""
    from optimizers import registry
    from playbooks import catalog

    known = registry.names()
    for i, step in enumerate(pb.steps):
        where = f"steps[{i}] ({step.technique})"
        if step.technique in known:
            tech = registry.get(step.technique)
            try:
                tech.config(step.params)
            except ValidationError as err:
                raise PlaybookError(_format_validation(err, f"{where}.params.")) from None
        elif catalog.has_entry(step.technique):
            if step.params:
                raise PlaybookError(f"{where}: advice-only catalog step takes no params, got {sorted(step.params)}")
        else:
            raise PlaybookError(
                f"{where}: unknown technique {step.technique!r}; registered techniques: {', '.join(known)}"
                " (or a catalog id, see `speedbook catalog`)"
            )
        for alt, params in step.alternatives.items():
            if alt not in known:
                raise PlaybookError(f"{where}.alternatives: {alt!r} is not a registered technique; "
                                    f"registered techniques: {', '.join(known)}")
            try:
                registry.get(alt).config(params)
            except ValidationError as err:
                raise PlaybookError(_format_validation(err, f"{where}.alternatives.{alt}.")) from None


def parse_playbook(data: Any) -> Playbook:
    if not isinstance(data, dict):
        raise PlaybookError(f"a playbook must be a mapping with name, title and steps; got {type(data).__name__}")
    try:
        pb = Playbook.model_validate(data)
    except ValidationError as err:
        raise PlaybookError(_format_validation(err, "")) from None
    validate_steps(pb)
    if pb.search is not None:
        validate_search(pb)
    return pb


def validate_search(pb: Playbook) -> None:
    """The space against the steps (playbooks/search.py), and objectives to optimize: named, or the gates'."""
    from playbooks import search

    ds = search.dims(pb.search, pb.steps)
    if pb.search.strategy == "grid":
        search.check_grid(ds, pb.steps)
    if not pb.search.objectives and not pb.expect:
        raise PlaybookError("search: needs objectives (e.g. [{metric: perplexity}]) or expect gates to judge trials by")


def load_playbook_text(text: str) -> Playbook:
    return parse_playbook(safe_yaml(text, "playbook", PlaybookError))


def load_playbook(path: str | Path) -> Playbook:
    p = Path(path)
    if not p.is_file():
        raise PlaybookError(f"playbook file not found: {p}")
    return load_playbook_text(p.read_text())


def library() -> dict[str, Playbook]:
    """Every playbook in playbooks/library/, keyed by name."""
    out: dict[str, Playbook] = {}
    for f in sorted(LIBRARY_DIR.glob("*.yaml")):
        pb = load_playbook(f)
        if pb.name != f.stem:
            raise PlaybookError(f"{f.name}: name {pb.name!r} must equal the file name {f.stem!r}")
        out[pb.name] = pb
    return out
