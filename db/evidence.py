"""Evidence: each executable technique's claim from the taxonomy (playbooks/claims.py) beside what
Speedbook measured for it — median and best over stored runs per workload, device and scenario,
with the latest date, the machine and the runs — and a verdict: within, better than or worse than
the claimed range, or not comparable here with the reason. Computed on demand in two queries (the
steps, and one conditional-aggregation pivot of their figures), so a thousand runs stay fast.

A step is judged by its own effect: its figures against the state just before it (the baseline,
or the last measured step), so "prune → GPTQ" credits GPTQ with its own cut. A timed ratio uses
the interleaved interval stored with the step (optimizers/stats.py) where the state before it is
the baseline the interval was measured against."""
from __future__ import annotations

import csv
import datetime as dt
import io
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Literal
from urllib.parse import quote

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from db.models import Metric, Run, StepResult
from optimizers.stats import RatioInterval
from playbooks.catalog import CatalogEntry, entries
from playbooks.claims import Claim, claims_for

Verdict = Literal["within", "better than", "worse than", "not comparable here"]
VERDICTS: tuple[str, ...] = ("within", "better than", "worse than", "not comparable here", "no runs yet")
# the speed each scenario measures, first present wins: (metric, higher is better)
SPEED = (("decode_tokens_per_s", True), ("latency_ms", False), ("throughput_tokens_per_s", True),
         ("train_tokens_per_s", True))
# figure → (metric, label): an improvement factor, the state before the step ÷ after it
CUTS = {
    "memory": ("stored_bytes", "bytes ↓ vs the step's input"),
    "kv_memory": ("kv_cache_bytes", "KV-cache bytes ↓"),
    "kv_memory_reserved": ("kv_cache_bytes_reserved", "KV bytes reserved ↓"),
    "train_memory": ("train_peak_memory_bytes", "peak training memory ↓"),
    "optimizer_memory": ("train_memory_optimizer_bytes", "optimizer-state bytes ↓"),
    "trainable_params": ("trainable_params", "trainable parameters ↓"),
}
# quality after ÷ before ("ratio", lower is better) or (after − before) × 100 ("points", higher is better)
QUALITY = (("perplexity", "ratio"), ("eval_loss", "ratio"), ("accuracy", "points"), ("pair_spearman", "points"))
LABELS = {
    **{k: label for k, (_, label) in CUTS.items()},
    "memory_vs_16bit": "bytes ↓ vs a 16-bit copy", "memory_vs_fp32": "bytes ↓ vs an fp32 copy", "speed": "speed-up",
    "perplexity": "perplexity", "eval_loss": "eval loss", "accuracy": "accuracy", "pair_spearman": "Spearman",
}
LOWER_IS_BETTER = frozenset(n for n, how in QUALITY if how == "ratio")
POINTS = frozenset(n for n, how in QUALITY if how == "points")
PIVOT = tuple(dict.fromkeys((
    "stored_bytes_vs_16bit", *(m for m, _ in CUTS.values()), *(m for m, _ in SPEED), *(m for m, _ in QUALITY),
    *(f"{m}_ci_{k}" for m in ("decode_tokens_per_s", "latency_ms") for k in ("ratio", "low", "high")),
)))
UNMEASURED = {
    "params": "the claim counts parameters; Speedbook measures stored bytes",
    "wall_clock": "the claim is time to train to a quality; Speedbook times a fixed number of steps",
    "compute": "the claim counts FLOPs; Speedbook measures time and bytes",
    "capacity": "the claim is the batch or context that fits; Speedbook measures one configuration",
}
GPU_MODELS = {"H100": ("H100",), "A100": ("A100",), "Hopper": ("H100", "H200", "H800"), "Blackwell": ("B100", "B200", "RTX 50")}


@dataclass(frozen=True)
class Measured:
    """One succeeded step of one run: its figures against the state before it."""

    run_id: int
    index: int
    technique: str
    workload: str
    device: str
    scenario: str
    created_at: dt.datetime
    machine: str
    figures: dict[str, float]
    interval: tuple[float, float] | None = None  # the speed-up's 95 % interval
    speed_metric: str = ""


@dataclass(frozen=True)
class Figure:
    """One figure over a group of steps: median, best and the run that gave the best."""

    key: str
    median: float
    best: float
    best_run: int
    n: int
    interval: tuple[float, float] | None = None  # the median of the runs' bounds, when every run has one
    metric: str = ""

    def value_text(self, value: float) -> str:
        return f"{value:+.2f} points" if self.key in POINTS else f"×{value:.3g}"

    def _text(self, best: bool) -> str:
        value = (RatioInterval(self.median, *self.interval, self.n).text() if self.interval
                 else self.value_text(self.median))
        notes = [self.metric.replace("_tokens_per_s", " tok/s").replace("_", " ")] if self.metric else []
        if best:
            notes.append(f"best {self.value_text(self.best)} of {self.n} runs" if self.n > 1 else "1 run")
        return f"{LABELS.get(self.key, self.key)} {value}" + (f" ({'; '.join(notes)})" if notes else "")

    def short(self) -> str:
        """e.g. "bytes ↓ vs a 16-bit copy ×3.7" or "speed-up ×0.52 [0.43–0.85] (decode tok/s)"."""
        return self._text(best=False)

    def text(self) -> str:
        """``short`` with the best figure and the number of runs: "speed-up ×1.1 (decode tok/s; best ×1.5 of 4 runs)"."""
        return self._text(best=True)


@dataclass(frozen=True)
class ClaimVerdict:
    claim: Claim | None  # None: the text states no figure
    verdict: Verdict
    reason: str
    figure: Figure | None = None

    def text(self) -> str:
        return f"not comparable here: {self.reason}" if self.verdict == "not comparable here" else f"{self.verdict} the claim"


@dataclass(frozen=True)
class Group:
    """A technique's steps on one workload, device and scenario."""

    workload: str
    device: str
    scenario: str
    run_ids: tuple[int, ...]  # newest first
    latest: dt.datetime
    machines: tuple[str, ...]  # newest first
    figures: dict[str, Figure]
    verdicts: tuple[ClaimVerdict, ...]


@dataclass(frozen=True)
class TechniqueEvidence:
    entry: CatalogEntry
    claims: tuple[Claim, ...]
    groups: tuple[Group, ...] = field(default_factory=tuple)

    @property
    def technique(self) -> str:
        return self.entry.technique or self.entry.id

    def verdicts(self) -> set[str]:
        return {v.verdict for g in self.groups for v in g.verdicts} or {"no runs yet"}


def _cut(before: dict[str, float], after: dict[str, float], name: str) -> float | None:
    b, a = before.get(name), after.get(name)
    return b / a if b and a else None


def _speed(before: dict[str, float], after: dict[str, float], from_baseline: bool):
    """(speed-up, interval or None, metric) of the scenario's speed figure: the interleaved ratio where
    stored (its interval where the state before is the baseline it was timed against), else the values."""
    for name, higher in SPEED:
        r, r0 = after.get(f"{name}_ci_ratio"), 1.0 if from_baseline else before.get(f"{name}_ci_ratio")
        if r and r0:
            ratio = r / r0
            lo, hi = after.get(f"{name}_ci_low"), after.get(f"{name}_ci_high")
            iv = (lo, hi) if from_baseline and lo and hi else None
        elif before.get(name) and after.get(name):
            ratio, iv = after[name] / before[name], None
        else:
            continue
        if not higher:  # a time: the speed-up is its reciprocal
            ratio, iv = 1.0 / ratio, (None if iv is None else (1.0 / iv[1], 1.0 / iv[0]))
        return ratio, iv, name
    return None


def step_figures(before: dict[str, float], after: dict[str, float], from_baseline: bool) -> tuple[dict[str, float], Any]:
    """Every figure of one step against the state before it; and its speed (ratio, interval, metric)."""
    out = {key: v for key, (metric, _) in CUTS.items() if (v := _cut(before, after, metric)) is not None}
    if after.get("stored_bytes_vs_16bit"):
        out["memory_vs_16bit"] = 1.0 / after["stored_bytes_vs_16bit"]
        out["memory_vs_fp32"] = 2.0 / after["stored_bytes_vs_16bit"]
    speed = _speed(before, after, from_baseline)
    if speed is not None:
        out["speed"] = speed[0]
    for name, how in QUALITY:
        b, a = before.get(name), after.get(name)
        if b is not None and a is not None and (how == "points" or b):
            out[name] = (a - b) * 100 if how == "points" else a / b
    return out, speed


def _machine(row: Any) -> str:
    if row.gpu:
        return row.gpu
    return " · ".join(p for p in (row.cpu, row.cpu_isa) if p) or "unrecorded machine"


def _states(s: Session, runs: Any) -> dict[int, dict[int, dict[str, float]]]:
    """Run → step index (-1: the baseline) → its measured figures: one conditional-aggregation pivot."""
    rows = s.execute(
        select(Metric.run_id, Metric.phase, Metric.step_index,
               *(func.max(case((Metric.name == n, Metric.value))).label(n) for n in PIVOT))
        .where(Metric.run_id.in_(runs), Metric.variant == "", Metric.kind == "measured",
               Metric.phase.in_(("baseline", "step")), Metric.name.in_(PIVOT))
        .group_by(Metric.run_id, Metric.phase, Metric.step_index)
    ).all()
    out: dict[int, dict[int, dict[str, float]]] = defaultdict(dict)
    for run_id, phase, index, *values in rows:
        out[run_id][index if phase == "step" else -1] = {n: v for n, v in zip(PIVOT, values) if v is not None}
    return out


def collect(s: Session, *where: Any) -> list[Measured]:
    """Every succeeded step (of runs matching ``where``) with its figures against the state before it: two queries."""
    env = Run.environment
    steps = s.execute(
        select(StepResult.run_id, StepResult.index, StepResult.technique, Run.workload, Run.device, Run.created_at,
               env["scenario"].as_string().label("scenario"), env["cpu"].as_string().label("cpu"),
               env["cpu_isa"].as_string().label("cpu_isa"), env["gpu"].as_string().label("gpu"))
        .join(Run, Run.id == StepResult.run_id).where(StepResult.status == "succeeded", *where)
    ).all()
    by_run = _states(s, select(StepResult.run_id).join(Run, Run.id == StepResult.run_id)
                     .where(StepResult.status == "succeeded", *where))
    out = []
    for st in steps:
        states = by_run.get(st.run_id, {})
        prior = max((i for i in states if i < st.index), default=None)
        if st.index not in states or prior is None:
            continue  # not measured (a check-only step), or no baseline
        figures, speed = step_figures(states[prior], states[st.index], from_baseline=prior == -1)
        out.append(Measured(st.run_id, st.index, st.technique, st.workload, st.device, st.scenario or "inference",
                            st.created_at, _machine(st), figures, speed[1] if speed else None, speed[2] if speed else ""))
    return out


def aggregate(key: str, have: list[Measured]) -> Figure:
    """Median and best of one figure over steps that have it; the interval where every step has one."""
    best = (min if key in LOWER_IS_BETTER else max)(have, key=lambda m: m.figures[key])
    interval = None
    if key == "speed" and all(m.interval for m in have):
        interval = (statistics.median(m.interval[0] for m in have), statistics.median(m.interval[1] for m in have))
    return Figure(key, statistics.median(m.figures[key] for m in have), best.figures[key], best.run_id,
                  len({m.run_id for m in have}), interval, have[0].speed_metric if key == "speed" else "")


def figures_of(steps: Iterable[Measured]) -> dict[str, Figure]:
    """Every figure the steps have, aggregated (one pass to sort the steps by figure)."""
    by_key: dict[str, list[Measured]] = defaultdict(list)
    for m in steps:
        for k in m.figures:
            by_key[k].append(m)
    return {k: aggregate(k, have) for k, have in by_key.items()}


def figure_key(claim: Claim, entry: CatalogEntry, scenario: str) -> str | None:
    """Which measured figure a claim is judged by; None where Speedbook measures no such quantity. Memory
    is weights' bytes (training: peak training memory); against the claim's reference precision when it
    names one, against a 16-bit copy for a quantizer (the taxonomy quotes those wins against 16-bit
    deployments), else against the step's input."""
    q = claim.quantity
    if q in UNMEASURED:
        return None
    if q == "memory":
        if scenario == "training":
            return "train_memory"
        if claim.reference == "fp32":
            return "memory_vs_fp32"
        return "memory_vs_16bit" if claim.reference == "16-bit" or entry.effects.weights else "memory"
    if q == "kv_memory" and scenario == "serving":
        return "kv_memory_reserved"
    return q


def _hardware_mismatch(claim: Claim, device: str, machines: Iterable[str]) -> str | None:
    """Why a speed claim does not transfer to where it was measured (bytes do not depend on the device)."""
    if claim.quantity != "speed" or claim.hardware is None:
        return None
    said = f" ({claim.hardware_text})" if claim.hardware_text else ""
    on_gpu = device.startswith("cuda")
    if claim.hardware == "sparse":
        return f"the claim is for sparse-aware hardware, measured on {device}"
    if claim.hardware == "gpu" and not on_gpu:
        return f"the claim is for a GPU{said}, measured on {device}"
    if claim.hardware == "cpu" and on_gpu:
        return f"the claim is for a CPU{said}, measured on {device}"
    names = GPU_MODELS.get(claim.hardware_text)
    if on_gpu and names and not any(n in m for m in machines for n in names):
        return f"the claim is for {claim.hardware_text}, measured on {', '.join(machines)}"
    return None


def judge(claim: Claim, entry: CatalogEntry, figures: dict[str, Figure], device: str, scenario: str,
          machines: Iterable[str] = ()) -> ClaimVerdict:
    """Within / better than / worse than the claimed range (the median, or its interval: overlapping
    the range is within), or not comparable here with the reason."""
    key = figure_key(claim, entry, scenario)
    if key is None:
        return ClaimVerdict(claim, "not comparable here", UNMEASURED[claim.quantity])
    if (why := _hardware_mismatch(claim, device, list(machines))) is not None:
        return ClaimVerdict(claim, "not comparable here", why, figures.get(key))
    fig = figures.get(key)
    if fig is None:
        return ClaimVerdict(claim, "not comparable here", f"these runs ({scenario} scenario) stored no {LABELS[key]}")
    lo, hi = claim.factor_range()
    m_lo, m_hi = fig.interval or (fig.median, fig.median)
    verdict: Verdict = "worse than" if m_hi < lo else "better than" if m_lo > hi else "within"
    claimed = f"×{lo:.3g}–{hi:.3g}" if math.isfinite(hi) else f"above ×{lo:.3g}"
    return ClaimVerdict(claim, verdict, f"measured {fig.text()}; claimed {claimed}", fig)


def _verdicts(entry: CatalogEntry, claims: tuple[Claim, ...], figures: dict[str, Figure], device: str,
              scenario: str, machines: tuple[str, ...]) -> tuple[ClaimVerdict, ...]:
    if not claims:
        return (ClaimVerdict(None, "not comparable here", "the claim states no figure"),)
    return tuple(judge(c, entry, figures, device, scenario, machines) for c in claims)


def _group(entry: CatalogEntry, claims: tuple[Claim, ...], steps: list[Measured]) -> Group:
    steps = sorted(steps, key=lambda m: (m.created_at, m.run_id), reverse=True)
    figures = figures_of(steps)
    first = steps[0]
    machines = tuple(dict.fromkeys(m.machine for m in steps))
    return Group(first.workload, first.device, first.scenario, tuple(dict.fromkeys(m.run_id for m in steps)),
                 first.created_at, machines, figures,
                 _verdicts(entry, claims, figures, first.device, first.scenario, machines))


def executable_entries() -> dict[str, CatalogEntry]:
    """Registered technique name → its catalog entry."""
    return {e.technique: e for e in entries() if e.status == "executable" and e.technique}


def evidence(s: Session, team_id: int | None = None, techniques: Iterable[str] | None = None) -> list[TechniqueEvidence]:
    """Every executable technique (or those named) with its claims and its measured groups, catalog order."""
    catalog = executable_entries()
    wanted = list(catalog) if techniques is None else [t for t in techniques if t in catalog]
    where = [Run.status == "succeeded", StepResult.technique.in_(wanted)]
    if team_id is not None:
        where.append(Run.team_id == team_id)
    by_group: dict[tuple[str, str, str, str], list[Measured]] = defaultdict(list)
    for m in collect(s, *where) if wanted else []:
        by_group[(m.technique, m.workload, m.device, m.scenario)].append(m)
    out = []
    for tech in wanted:
        entry, claims = catalog[tech], claims_for(catalog[tech].id)
        groups = [_group(entry, claims, steps) for key, steps in sorted(by_group.items()) if key[0] == tech]
        out.append(TechniqueEvidence(entry, claims, tuple(sorted(groups, key=lambda g: g.latest, reverse=True))))
    return out


def technique_evidence(s: Session, technique: str, team_id: int | None = None) -> TechniqueEvidence:
    """One technique's evidence (the Catalog page's section)."""
    found = evidence(s, team_id, [technique])
    if not found:
        raise KeyError(f"{technique!r} is no executable technique of the catalog; see `speedbook catalog`")
    return found[0]


def run_evidence(s: Session, run_id: int) -> dict[int, tuple[Measured, tuple[ClaimVerdict, ...]]]:
    """Step index → this run's figures for that step and each claim's verdict (the Run page's lines)."""
    catalog = executable_entries()
    out = {}
    for m in collect(s, Run.id == run_id):
        if (entry := catalog.get(m.technique)) is None:
            continue
        out[m.index] = (m, _verdicts(entry, claims_for(entry.id), figures_of([m]), m.device, m.scenario, (m.machine,)))
    return out


def memory_key(group: Group, entry: CatalogEntry) -> str | None:
    """The memory figure a row shows: the one its claims are judged by, else the scenario's own."""
    judged = [v.figure.key for v in group.verdicts if v.figure is not None and v.figure.key != "speed"]
    default = ("train_memory",) if group.scenario == "training" else (
        "memory_vs_16bit" if entry.effects.weights else "memory", "kv_memory", "kv_memory_reserved")
    return next((k for k in (*judged, *default) if k in group.figures), None)


def quality_key(group: Group) -> str | None:
    return next((name for name, _ in QUALITY if name in group.figures), None)


def headline(group: Group, entry: CatalogEntry) -> list[Figure]:
    """The figures a group is shown by: its memory figure, its speed-up, its quality change."""
    keys = (memory_key(group, entry), "speed", quality_key(group))
    return [group.figures[k] for k in keys if k in group.figures]


def claim_line(verdicts: Iterable[ClaimVerdict]) -> str:
    """e.g. "2–4× mem ↓: within the claim; 1.2–1.8× speed: not comparable here: …"."""
    return "; ".join(f"{v.claim.text}: {v.text()}" if v.claim else v.text() for v in verdicts)


def verdict_line(v: ClaimVerdict, one_run: bool = False) -> str:
    """e.g. "taxonomy claims 2–4× mem ↓ · measured bytes ↓ vs a 16-bit copy ×1.34 (1 run) · worse than the claim"."""
    if v.claim is None:
        return f"the taxonomy states no figure · {v.text()}"
    here = "" if v.figure is None else f" · {'this run' if one_run else 'measured'} " + (
        v.figure.short() if one_run else v.figure.text())
    return f"taxonomy claims {v.claim.text}{here} · {v.text()}"


def step_line(verdicts: Iterable[ClaimVerdict]) -> str:
    """A Run page step's evidence: each claim beside this run's figure, and the verdict."""
    return "; ".join(verdict_line(v, one_run=True) for v in verdicts)


def run_url(run_id: int, team: str | None = None) -> str:
    """The Run page's address (relative, so it works under any base path)."""
    return f"run?run={run_id}" + (f"&team={quote(team)}" if team else "")


def _scoped(found: Iterable[TechniqueEvidence], keep: set[str]) -> Iterator[tuple[TechniqueEvidence, Group | None]]:
    """Each technique's groups (None for a technique with no runs), only those with a verdict in ``keep`` if any."""
    for ev in found:
        if not ev.groups and (not keep or "no runs yet" in keep):
            yield ev, None
        for g in ev.groups:
            if not keep or keep & {v.verdict for v in g.verdicts}:
                yield ev, g


def table_rows(found: Iterable[TechniqueEvidence], team: str | None = None,
               verdicts: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The Evidence page's table: one row per technique × workload/device/scenario (one for a technique
    with no runs), keeping rows with one of ``verdicts`` when given; ratios computed from measured figures."""
    rows = []
    for ev, g in _scoped(found, set(verdicts)):
        row = {"technique": ev.technique, "family": ev.entry.family, "taxonomy claims": ev.entry.typical_wins}
        if g is None:
            rows.append({**row, "verdict": "no runs yet"})
            continue
        shown = dict(zip(("memory", "speed", "quality"), (memory_key(g, ev.entry), "speed", quality_key(g))))
        rows.append({
            **row, "workload": g.workload, "device": g.device, "scenario": g.scenario, "runs": len(g.run_ids),
            **{f"{col} (computed)": g.figures[k].text() if k in g.figures else "" for col, k in shown.items()},
            "verdict": claim_line(g.verdicts), "latest": g.latest.strftime("%Y-%m-%d"), "machine": g.machines[0],
            "latest run": run_url(g.run_ids[0], team), "run ids": ", ".join(map(str, g.run_ids)),
        })
    return rows


def _csv_row(g: Group, v: ClaimVerdict) -> dict[str, Any]:
    f, (lo, hi) = v.figure, (v.claim.factor_range() if v.claim else (None, None))
    return {
        "workload": g.workload, "device": g.device, "scenario": g.scenario,
        "claim": v.claim.text if v.claim else "", "quantity": v.claim.quantity if v.claim else "",
        "claimed_factor_low": lo, "claimed_factor_high": hi if hi is None or math.isfinite(hi) else "",
        "figure": LABELS[f.key] if f else "", "metric": f.metric if f else "",
        "median": f.median if f else None, "best": f.best if f else None,
        "interval_low": f.interval[0] if f and f.interval else None,
        "interval_high": f.interval[1] if f and f.interval else None,
        "runs": len(g.run_ids), "latest": g.latest.strftime("%Y-%m-%d %H:%M"), "machine": g.machines[0],
        "verdict": v.verdict, "reason": v.reason, "run_ids": " ".join(map(str, g.run_ids)),
    }


def csv_rows(found: Iterable[TechniqueEvidence], verdicts: Iterable[str] = ()) -> list[dict[str, Any]]:
    """One row per technique × workload/device/scenario × claim, figures as numbers (the CSV export)."""
    keep = set(verdicts)
    rows = []
    for ev, g in _scoped(found, keep):
        base = {"technique": ev.technique, "family": ev.entry.family, "typical_wins": ev.entry.typical_wins}
        if g is None:
            rows.append({**base, "verdict": "no runs yet"})
            continue
        rows += [{**base, **_csv_row(g, v)} for v in g.verdicts if not keep or v.verdict in keep]
    return rows


CSV_COLUMNS = ("technique", "family", "typical_wins", "workload", "device", "scenario", "claim", "quantity",
               "claimed_factor_low", "claimed_factor_high", "figure", "metric", "median", "best", "interval_low",
               "interval_high", "runs", "latest", "machine", "verdict", "reason", "run_ids")


def to_csv(found: Iterable[TechniqueEvidence], verdicts: Iterable[str] = ()) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="raise")
    writer.writeheader()
    writer.writerows(csv_rows(found, verdicts))
    return buf.getvalue()
