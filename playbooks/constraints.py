"""Constraints: what a person does with which model on which hardware, and what they care
about — DESIGN.md's public schema, validated strictly (unknown fields and impossible values
raise ``ConstraintError`` naming the field and the valid choices). Loaded from a dict, YAML
or JSON text, or a file."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from playbooks import specs
from playbooks.errors import ConstraintError
from playbooks.specs import HardwareSpec, ModelSpec
from playbooks.yaml_limits import safe_yaml

Goal = Literal["pretrain", "finetune", "serve", "edge"]
Priority = Literal["latency", "throughput", "memory", "cost"]
Tolerance = Literal["lossless", "small", "moderate", "aggressive"]
Data = Literal["none", "calibration", "training"]
Runtime = Literal["pytorch", "vllm", "tensorrt-llm", "onnx", "any"]
TOLERANCE_ORDER: tuple[str, ...] = ("lossless", "small", "moderate", "aggressive")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class CustomModel(_Strict):
    """A model not in the table, described by the fields the estimator needs."""

    family: str = Field(description="architecture family, e.g. llama")
    params_b: float = Field(gt=0, description="parameters, billions")
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int | None = Field(None, gt=0, description="K/V heads (GQA); defaults to heads")
    vocab: int = Field(gt=0)
    context: int = Field(gt=0, description="maximum context length, tokens")

    @model_validator(mode="after")
    def _shapes(self) -> "CustomModel":
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} must be a multiple of heads={self.heads}")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"heads={self.heads} must be a multiple of kv_heads={self.kv_heads}")
        return self


class GpuHardware(_Strict):
    gpu: str = Field(description="a name from the hardware table")
    count: int = Field(1, ge=1, description="GPUs of this model")

    @field_validator("gpu")
    @classmethod
    def _known(cls, v: str) -> str:
        hw = specs.find_hardware(v)
        if hw is None or not hw.is_gpu:
            raise ValueError(f"unknown GPU {v!r}; valid choices: {', '.join(specs.hardware_names(gpus_only=True))}")
        return hw.name


class CpuHardware(_Strict):
    cpu: Literal[True] = Field(description="run on the host CPU")


class Constraints(_Strict):
    """DESIGN.md's constraint schema; ``model`` is a table name, a config.json path or a CustomModel."""

    goal: Goal
    model: str | CustomModel
    hardware: GpuHardware | CpuHardware
    priority: Priority = "throughput"
    context_length: int | None = Field(None, gt=0, description="tokens per request / sequence")
    concurrency: int = Field(1, gt=0, description="requests served at once")
    accuracy_tolerance: Tolerance = "small"
    data: Data = "none"
    runtime: Runtime = "any"

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, v: Any) -> Any:
        if isinstance(v, str):
            specs.get_model(v)  # raises naming the valid choices
            found = specs.find_model(v)
            return found.name if found else v
        return v

    @field_validator("hardware", mode="before")
    @classmethod
    def _hardware(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            raise ValueError("must be {gpu: NAME, count: N} or {cpu: true}")
        if "gpu" in v and "cpu" in v:
            raise ValueError("give either gpu or cpu, not both")
        if "gpu" not in v and v.get("cpu") is not True:
            raise ValueError("must be {gpu: NAME, count: N} or {cpu: true}")
        return GpuHardware(**v) if "gpu" in v else CpuHardware(**v)

    @field_validator("context_length")
    @classmethod
    def _context_within_the_model(cls, v: int | None, info: ValidationInfo) -> int | None:
        """Serving a context longer than the model was trained for is a mistake to name, not a figure to
        estimate (training may extend the context: long-sequence research, RoPE scaling)."""
        model = info.data.get("model")
        if v is not None and model is not None and info.data.get("goal") in ("serve", "edge"):
            spec = specs.model_from_custom(model.model_dump()) if isinstance(model, CustomModel) else specs.get_model(model)
            if spec.context and v > spec.context:
                raise ValueError(f"{v:,} tokens exceed this model's {spec.context:,}-token context "
                                 f"(max_position_embeddings); use at most {spec.context:,}")
        return v

    # --- resolved views -----------------------------------------------------------------

    def model_spec(self) -> ModelSpec:
        if isinstance(self.model, CustomModel):
            return specs.model_from_custom(self.model.model_dump())
        return specs.get_model(self.model)

    def hardware_spec(self) -> HardwareSpec:
        if isinstance(self.hardware, CpuHardware):
            return specs.get_hardware("CPU")
        return specs.get_hardware(self.hardware.gpu)

    @property
    def gpu_count(self) -> int:
        return self.hardware.count if isinstance(self.hardware, GpuHardware) else 0

    @property
    def device_count(self) -> int:
        return max(self.gpu_count, 1)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


FIELDS = tuple(Constraints.model_fields)


_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", "≥"), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "≤")}


def _path(loc: tuple[Any, ...]) -> list[str]:
    """The field path, without pydantic's union-branch and validator labels."""
    return [str(p) for p in loc if not re.match(r"^(str|function-.*|GpuHardware|CpuHardware|CustomModel)$", str(p))]


def _why(err: dict[str, Any]) -> str:
    ctx, got = err.get("ctx") or {}, err.get("input")
    if err["type"] in _BOUNDS:
        key, sym = _BOUNDS[err["type"]]
        return f"must be {sym} {ctx[key]:g} (got {got!r})"
    if err["type"] == "literal_error":
        return f"{got!r} is not a valid choice; valid choices: {ctx['expected'].replace(chr(39), '')}"
    if err["type"] == "missing":
        return "required"
    return f"{str(err['msg']).removeprefix('Value error, ')} (got {got!r})"


def _message(err: dict[str, Any]) -> str:
    loc = _path(err["loc"])
    field = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        parent = ".".join(loc[:-1])
        valid = FIELDS if not parent else _sub_fields(parent)
        return f"{field}: unknown field; valid fields{' of ' + parent if parent else ''}: {', '.join(valid)}"
    return f"{field}: {_why(err)}"


def _sub_fields(parent: str) -> tuple[str, ...]:
    if parent == "model":
        return tuple(CustomModel.model_fields)
    if parent == "hardware":
        return ("gpu", "count", "cpu")
    return ()


_MODEL_SHAPE = "must be a name from the model table, a path to a config.json, or {" + ", ".join(
    CustomModel.model_fields) + "}"


def _dedupe(errs: list[dict[str, Any]]) -> list[str]:
    """A model given as a dict fails the `str` branch too: keep the CustomModel branch's errors;
    a model that is neither a string nor a mapping gets one message saying what it may be."""
    wrong_type = [e for e in errs if e["loc"][:1] == ("model",) and e["type"] in {"string_type", "model_type"}]
    out = [_message(e) for e in errs if e not in wrong_type]
    if len(wrong_type) == 2:  # neither a string nor a mapping
        out.insert(0, f"model: {_MODEL_SHAPE} (got {wrong_type[0].get('input')!r})")
    elif wrong_type and not any("CustomModel" in str(e["loc"]) for e in errs):
        out.extend(_message(e) for e in wrong_type)
    return out


def parse_constraints(data: Any) -> Constraints:
    """Validate a mapping; every problem is reported, each naming its field."""
    if not isinstance(data, dict):
        raise ConstraintError(f"constraints must be a mapping with goal, model, hardware, …; got {type(data).__name__}")
    try:
        return Constraints.model_validate(data)
    except ValidationError as err:
        raise ConstraintError("; ".join(_dedupe(err.errors()))) from None


def load_constraints_text(text: str) -> Constraints:
    """YAML or JSON text (JSON is YAML)."""
    return parse_constraints(safe_yaml(text, "constraints", ConstraintError))


def load_constraints(source: str | Path | dict[str, Any] | Constraints) -> Constraints:
    """Constraints from a dict, an existing Constraints, or a .yaml/.yml/.json file path."""
    if isinstance(source, Constraints):
        return source
    if isinstance(source, dict):
        return parse_constraints(source)
    p = Path(source)
    if not p.is_file():
        raise ConstraintError(f"constraints file not found: {p}")
    if p.suffix == ".json":
        try:
            return parse_constraints(json.loads(p.read_text()))
        except json.JSONDecodeError as err:
            raise ConstraintError(f"{p}: malformed JSON: {err}") from None
    return load_constraints_text(p.read_text())


def tolerance_allows(tolerance: str, needed: str) -> bool:
    """True when a step that needs ``needed`` tolerance is acceptable under ``tolerance``."""
    return TOLERANCE_ORDER.index(needed) <= TOLERANCE_ORDER.index(tolerance)
