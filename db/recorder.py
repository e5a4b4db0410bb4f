"""The one writer of a run's results (DESIGN.md "One record per step"): the pipeline folds over
steps and hands the recorder each step's outcome; every row a run leaves — baseline, each
step's status, verdict, notes, diagnostics and measurements, the final figures and the gates —
is written here, each in its own transaction, so a crash keeps every finished step."""
from __future__ import annotations

import json
import math
from typing import Any

from db import queries
from db.models import StepResult, StepStatus, utcnow
from db.session import session_scope

DIAGNOSTIC = "diagnostic"  # the metrics phase of figures a step computed while applying (not re-measured)


def json_safe(value: Any, limit: int = 200_000) -> Any:
    """Details as JSON the database stores and a page shows: numbers, strings, lists and dicts;
    anything else as its type name (never a repr of a model); NaN and ±inf become null."""
    def clean(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if hasattr(v, "item") and getattr(v, "numel", lambda: 2)() == 1:  # a 0-d tensor or numpy scalar
            return clean(v.item())
        return f"<{type(v).__name__}>"

    out = clean(value)
    if len(json.dumps(out)) > limit:
        raise ValueError(f"step details exceed {limit} characters of JSON; store a summary instead")
    return out


class RunRecorder:
    def __init__(self, run_id: int) -> None:
        self.run_id = run_id

    def _step(self, s, index: int) -> StepResult:
        return s.query(StepResult).filter_by(run_id=self.run_id, index=index).one()

    def baseline(self, metrics: dict[str, float], estimates: dict[str, float], environment: dict[str, Any]) -> None:
        with session_scope() as s:
            queries.write_metrics(s, self.run_id, "baseline", metrics)
            queries.write_metrics(s, self.run_id, "baseline", estimates, kind="estimated")
            s.get(queries.Run, self.run_id).environment = environment

    def step_started(self, index: int) -> None:
        with session_scope() as s:
            row = self._step(s, index)
            row.status, row.started_at = StepStatus.running, utcnow()

    def progress(self, index: int | None, info: dict[str, Any]) -> None:
        """Where a long measurement is (the training scenario's step, loss, ETA): on the running
        step's row, or on the run while the baseline is measured; the finished record replaces it."""
        with session_scope() as s:
            if index is None:
                run = s.get(queries.Run, self.run_id)
                run.environment = {**(run.environment or {}), "progress": json_safe(info)}
            else:
                row = self._step(s, index)
                row.details = {**(row.details or {}), "progress": json_safe(info)}

    def step_skipped(self, index: int, verdict: dict[str, str]) -> None:
        with session_scope() as s:
            row = self._step(s, index)
            row.status, row.finished_at, row.verdict = StepStatus.skipped, utcnow(), verdict

    def step_failed(self, index: int, error: str) -> None:
        with session_scope() as s:
            row = self._step(s, index)
            row.status, row.finished_at, row.error = StepStatus.failed, utcnow(), error

    def step_done(self, index: int, verdict: dict[str, str], record: Any, *, settings: dict[str, Any],
                  metrics: dict[str, float] | None, peers: dict[str, dict[str, float]]) -> None:
        """One step's outcome (an ``optimizers.base.StepRecord``) and what the scenario measured
        after it; ``metrics`` is None for a check-only step, whose own figures are stored instead."""
        details = json_safe({**record.details, **({"settings": settings} if settings else {}),
                             **({"artifacts": record.artifacts} if record.artifacts else {})})
        with session_scope() as s:
            if record.check_metrics is not None:
                queries.write_metrics(s, self.run_id, "check", record.check_metrics, step_index=index)
            if metrics is not None:
                queries.write_metrics(s, self.run_id, "step", metrics, step_index=index)
            for variant, values in peers.items():
                queries.write_metrics(s, self.run_id, "step", values, step_index=index, variant=variant)
            queries.write_metrics(s, self.run_id, DIAGNOSTIC, record.diagnostics, step_index=index)
            row = self._step(s, index)
            row.status, row.finished_at, row.verdict = StepStatus.succeeded, utcnow(), verdict
            row.notes, row.details = list(record.notes), details

    def final(self, metrics: dict[str, float], gates: list[dict[str, Any]], verdict: str) -> None:
        with session_scope() as s:
            queries.write_metrics(s, self.run_id, "final", metrics)
            run = s.get(queries.Run, self.run_id)
            run.gates, run.gates_verdict = gates, verdict
