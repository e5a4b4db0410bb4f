"""A playbook's ``search:`` section: which step parameters may vary (a list of values or a
numeric range each), what the search optimizes, and its budget. Pure data and math — the
space, a configuration applied to the playbook, a trial's score against the gates, the Pareto
front and the closest miss; jobs/search.py dispatches the trials as ordinary runs.

    search:
      space:
        steps[0].technique: [gptq, int4_weight_only]   # swap the step's technique
        steps[0].group_size: [32, 64, 128]            # a parameter of the step's technique
        steps[0].act_order: [true, false]             # only where the technique takes it
        steps[1].sparsity: {low: 0.3, high: 0.7, step: 0.1}
      objectives: [{metric: stored_bytes}, {metric: perplexity}]  # direction from the metric
      strategy: tpe          # grid | random | tpe
      max_trials: 12
"""
from __future__ import annotations

import itertools
import math
import re
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from playbooks.errors import PlaybookError

STRATEGIES = ("grid", "random", "tpe")
MAX_GRID = 10_000  # a grid larger than this is refused: name a smaller space or use tpe/random
_KEY = re.compile(r"^steps\[(\d+)\]\.([a-z_][a-z0-9_]*)$")


class Range(BaseModel):
    """A numeric range: integers when low and high are integers, else floats."""

    model_config = ConfigDict(extra="forbid")
    low: float
    high: float
    step: float | None = Field(None, description="spacing of the values; needed for a grid over floats")
    log: bool = Field(False, description="sample on a log scale (random / tpe); low must be > 0")
    integer: bool = Field(False, description="integer values (set when low and high are written as integers)")

    @model_validator(mode="before")
    @classmethod
    def _ints(cls, data: Any) -> Any:
        if isinstance(data, dict) and "integer" not in data:
            lo, hi = data.get("low"), data.get("high")
            data = {**data, "integer": isinstance(lo, int) and isinstance(hi, int)
                    and not isinstance(lo, bool) and not isinstance(hi, bool)}
        return data

    @model_validator(mode="after")
    def _check(self) -> "Range":
        if not self.low < self.high:
            raise ValueError(f"low={self.low:g} must be below high={self.high:g}")
        if self.step is not None and not 0 < self.step <= self.high - self.low:
            raise ValueError(f"step={self.step:g} must be in (0, high − low = {self.high - self.low:g}]")
        if self.log and self.low <= 0:
            raise ValueError(f"log=true needs low > 0; got low={self.low:g}")
        if self.log and self.step is not None:
            raise ValueError("a log range takes no step; drop step or log")
        return self

    def values(self) -> list[float | int] | None:
        """The grid's values, or None when the range is continuous (no step, not integer)."""
        if self.integer:
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.step is None:
            return None
        n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 12) for i in range(n)]


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: str
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="default: from the metric (perplexity and bytes minimize, tokens/s and accuracy maximize)")

    def sign(self) -> float:
        """+1 when lower is better, −1 when higher is."""
        if self.direction:
            return 1.0 if self.direction == "minimize" else -1.0
        from optimizers.metrics import spec

        return -1.0 if spec(self.metric).better == "higher" else 1.0


class SearchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    space: dict[str, list[Any] | Range] = Field(
        min_length=1, description="steps[i].param (or steps[i].technique) → a list of values or {low, high, step, log}")
    objectives: list[Objective] = Field(
        default_factory=list, description="what 'best' means among the trials that meet every gate, first decides; "
                                          "default: the gates' metrics in order")
    strategy: Literal["grid", "random", "tpe"] = "tpe"
    max_trials: int = Field(12, ge=1, le=500, description="trials at most (a grid runs min(max_trials, its size))")
    max_minutes: float = Field(60.0, gt=0, le=24 * 60, description="no new trial starts after this")
    stop_when_met: bool = Field(False, description="stop once a trial meets every gate")
    seed: int = Field(0, description="the sampler's seed (random / tpe): the same seed proposes the same trials")
    parallel: int | None = Field(None, ge=1, le=64, description="trials at once; default: the live workers of the device")

    @field_validator("space")
    @classmethod
    def _lists(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, vals in v.items():
            if isinstance(vals, list) and not vals:
                raise ValueError(f"{key}: an empty list of values; give at least one")
            if isinstance(vals, list) and len({repr(x) for x in vals}) != len(vals):
                raise ValueError(f"{key}: the values repeat; list each once")
        return v


class Dim:
    """One searchable dimension: a step's technique or one parameter of it."""

    def __init__(self, key: str, step: int, param: str, choices: list[Any] | None, rng: Range | None):
        self.key, self.step, self.param, self.choices, self.range = key, step, param, choices, rng

    @property
    def finite(self) -> list[Any] | None:
        return self.choices if self.choices is not None else self.range.values()


def dims(spec: SearchSpec, steps: list[Any]) -> list[Dim]:
    """The space checked against the playbook's steps: each key names a step that exists, a
    registered technique, and a parameter some candidate technique of that step takes, with
    values its config accepts. Technique dimensions come first (the others depend on them)."""
    from optimizers import registry

    out: list[Dim] = []
    for key, vals in spec.space.items():
        m = _KEY.match(key)
        if not m:
            raise PlaybookError(f"search.space.{key}: write a key as steps[i].param or steps[i].technique, "
                                "e.g. steps[0].group_size")
        i, param = int(m.group(1)), m.group(2)
        if i >= len(steps):
            raise PlaybookError(f"search.space.{key}: the playbook has {len(steps)} steps (steps[0]–steps[{len(steps) - 1}])")
        if param == "technique":
            if not isinstance(vals, list):
                raise PlaybookError(f"search.space.{key}: a technique takes a list of technique names, not a range")
            for t in vals:
                if t not in registry.names():
                    raise PlaybookError(f"search.space.{key}: {t!r} is not a registered technique")
        out.append(Dim(key, i, param, vals if isinstance(vals, list) else None, vals if isinstance(vals, Range) else None))
    out.sort(key=lambda d: (d.step, d.param != "technique"))
    for d in out:
        if d.param == "technique":
            continue
        cands = candidates(out, steps, d.step)
        takers = [t for t in cands if d.param in registry.get(t).Config.model_fields]
        if not takers:
            raise PlaybookError(f"search.space.{d.key}: no candidate technique of steps[{d.step}] "
                                f"({', '.join(cands)}) takes a parameter {d.param!r}")
        probe = d.finite if d.finite is not None else [d.range.low, d.range.high]
        for t in takers:
            for v in probe:
                _check_value(t, steps[d.step].params, d, v)
    return out


def _check_value(technique: str, base: dict[str, Any], d: Dim, value: Any) -> None:
    from pydantic import ValidationError

    from optimizers import registry

    try:
        registry.get(technique).config({**base, d.param: value})
    except ValidationError as err:
        msg = "; ".join(e["msg"] for e in err.errors())
        raise PlaybookError(f"search.space.{d.key}: {value!r} is not valid for {technique}: {msg}") from None


def candidates(ds: list[Dim], steps: list[Any], step: int) -> list[str]:
    for d in ds:
        if d.step == step and d.param == "technique":
            return list(d.choices)
    return [steps[step].technique]


def takes(technique: str, param: str) -> bool:
    from optimizers import registry

    return param in registry.get(technique).Config.model_fields


def check_grid(ds: list[Dim], steps: list[Any]) -> int:
    """A grid's size, or a refusal naming the dimension that has no finite values."""
    _require_finite(ds)
    return grid_size(ds, steps)


def _require_finite(ds: list[Dim]) -> None:
    for d in ds:
        if d.finite is None:
            raise PlaybookError(f"search.space.{d.key}: a grid needs finite values; give a list, integer bounds, "
                                "or a step (or use strategy random / tpe)")


def grid(ds: list[Dim], steps: list[Any]) -> Iterator[dict[str, Any]]:
    """Every distinct configuration, techniques first; a parameter the chosen technique does not
    take is left out (GPTQ's act_order is not a dimension of RTN), so no trial repeats another."""
    _require_finite(ds)
    seen: set[tuple] = set()
    for combo in itertools.product(*[d.finite for d in ds]):
        config = active(ds, steps, dict(zip([d.key for d in ds], combo)))
        key = tuple(sorted(config.items(), key=lambda kv: kv[0]))
        if key not in seen:
            seen.add(key)
            yield config


def grid_size(ds: list[Dim], steps: list[Any]) -> int | None:
    if any(d.finite is None for d in ds):
        return None
    total = math.prod(len(d.finite) for d in ds)
    if total > MAX_GRID:
        raise PlaybookError(f"search.space spans {total:,} configurations, more than {MAX_GRID:,}; narrow it, "
                            "or use strategy random / tpe with max_trials")
    return sum(1 for _ in grid(ds, steps))


def active(ds: list[Dim], steps: list[Any], config: dict[str, Any]) -> dict[str, Any]:
    """The configuration restricted to the dimensions the chosen techniques take."""
    out = {}
    for d in ds:
        if d.key not in config:
            continue
        tech = config.get(f"steps[{d.step}].technique", steps[d.step].technique)
        if d.param == "technique" or takes(tech, d.param):
            out[d.key] = config[d.key]
    return out


def apply_config(pb_data: dict[str, Any], config: dict[str, Any], trial: int) -> dict[str, Any]:
    """The trial's playbook (as data): the base playbook with the configuration written into its
    steps, parameters the new technique does not take dropped, and no search section."""
    data = {k: v for k, v in pb_data.items() if k != "search"}
    steps = [dict(s, params=dict(s.get("params") or {})) for s in data["steps"]]
    for key, value in sorted(config.items(), key=lambda kv: not kv[0].endswith(".technique")):
        i, param = _KEY.match(key).groups()
        st = steps[int(i)]
        if param == "technique":
            if value != st["technique"]:
                st["technique"] = value
                st["params"] = {k: v for k, v in st["params"].items() if takes(value, k)}
                st["alternatives"] = {}
        else:
            st["params"][param] = value
    data["steps"] = steps
    data["title"] = (f"{data['title']} · trial {trial}: " + ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in config.items()))[:200]
    return data


# ---------------------------------------------------------------- scoring

def gate_shortfall(gate: Any, baseline: float | None, final: float | None) -> float | None:
    """How far a gate is off, as a fraction of its bound (0 when met); None when not measured."""
    if final is None or (gate.max_ratio is not None or gate.min_ratio is not None) and not baseline:
        return None
    off = 0.0
    if gate.max is not None:
        off = max(off, (final - gate.max) / abs(gate.max or 1.0))
    if gate.min is not None:
        off = max(off, (gate.min - final) / abs(gate.min or 1.0))
    if gate.max_ratio is not None:
        off = max(off, final / baseline / gate.max_ratio - 1.0)
    if gate.min_ratio is not None:
        off = max(off, 1.0 - final / baseline / gate.min_ratio)
    return max(off, 0.0)


def objective_values(objectives: list[Objective], baseline: dict[str, float], final: dict[str, float]) -> list[float] | None:
    """Each objective as final / baseline (a ratio, so bytes and perplexity weigh alike), signed so
    lower is better; None when a trial did not measure one."""
    out = []
    for o in objectives:
        v, b = final.get(o.metric), baseline.get(o.metric)
        if v is None:
            return None
        r = v / b if b else v
        out.append(r if o.sign() > 0 else -r)
    return out


def score(values: list[float] | None, shortfalls: list[float | None]) -> float:
    """One number for the sampler, lower better: a trial meeting every gate scores its first
    objective (later ones break ties, weighted 1e-3, 1e-6 …); a miss scores 1000 + its total
    shortfall, so the sampler learns how far off it was; an unmeasured trial scores 1e6."""
    if values is None or any(s is None for s in shortfalls):
        return 1e6
    miss = sum(shortfalls)
    if miss > 0:
        return 1000.0 + miss
    return sum(v * 10.0 ** (-3 * k) for k, v in enumerate(values))


def pareto_front(points: dict[Any, list[float]]) -> list[Any]:
    """Keys of the non-dominated points (every coordinate lower is better), in input order."""
    keys = list(points)
    front = []
    for a in keys:
        pa = points[a]
        dominated = any(all(x <= y for x, y in zip(points[b], pa)) and any(x < y for x, y in zip(points[b], pa))
                        for b in keys if b != a)
        if not dominated:
            front.append(a)
    return front


def closest_miss(trials: dict[Any, list[float | None]]) -> Any | None:
    """The trial whose total shortfall over the gates is smallest (unmeasured gates count as
    missed by 1, i.e. 100 %): what to show when no trial meets every gate."""
    best, best_off = None, math.inf
    for key, offs in trials.items():
        total = sum(1.0 if o is None else o for o in offs)
        if total < best_off:
            best, best_off = key, total
    return best


def objectives_of(pb: Any) -> list[Objective]:
    """The search's objectives, or by default each gate's metric once, in order."""
    if pb.search and pb.search.objectives:
        return list(pb.search.objectives)
    seen: list[str] = []
    for g in pb.expect:
        if g.metric not in seen:
            seen.append(g.metric)
    return [Objective(metric=m) for m in seen]
