"""Queries shared by the pipeline, the CLI and the pages. Every statement goes through
SQLAlchemy with bound parameters; callers pass a Session (or use ``session_scope``)."""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from db.models import FINAL_STATUSES, DeadLetter, Metric, Playbook, Run, StepResult, Team, Worker, utcnow

DEFAULT_TEAM_ID = 1


def create_run(
    s: Session,
    *,
    playbook_name: str,
    snapshot: dict[str, Any],
    workload: str,
    device: str,
    team_id: int = DEFAULT_TEAM_ID,
    playbook_id: int | None = None,
    baseline_dtype: str = "fp32",
    search_id: int | None = None,
    trial_number: int | None = None,
    trial_params: dict[str, Any] | None = None,
) -> Run:
    run = Run(
        search_id=search_id,
        trial_number=trial_number,
        trial_params=trial_params,
        baseline_dtype=baseline_dtype,
        team_id=team_id,
        playbook_id=playbook_id,
        playbook_name=playbook_name,
        playbook_snapshot=snapshot,
        workload=workload,
        device=device,
        status="queued",
    )
    for i, step in enumerate(snapshot["steps"]):
        run.steps.append(StepResult(index=i, technique=step["technique"], params=step.get("params") or {}, status="pending"))
    s.add(run)
    s.flush()
    return run


def get_run(s: Session, run_id: int) -> Run | None:
    return s.scalars(
        select(Run).where(Run.id == run_id).options(selectinload(Run.steps), selectinload(Run.metrics))
    ).first()


def claim_run(s: Session, run_id: int, worker: str) -> bool:
    """queued → running, atomically; False if another worker took it or it was cancelled."""
    now = utcnow()
    res = s.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "queued")
        .values(status="running", started_at=now, heartbeat_at=now, worker=worker)
    )
    s.commit()
    return res.rowcount == 1


def heartbeat(s: Session, run_id: int) -> bool:
    """Touch the heartbeat; returns whether the worker should stop: a cancel was requested, or the
    run is no longer running (reaped, or ended by a watchdog) and nothing more may be written."""
    touched = s.execute(update(Run).where(Run.id == run_id, Run.status == "running").values(heartbeat_at=utcnow()))
    s.commit()
    return touched.rowcount != 1 or bool(s.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


def write_metrics(
    s: Session,
    run_id: int,
    phase: str,
    values: dict[str, float],
    *,
    step_index: int = -1,
    kind: str = "measured",
    variant: str = "",
) -> None:
    from optimizers.metrics import spec  # pure module: no torch model code runs

    for name, value in values.items():
        if value is None or value != value:  # skip None / NaN
            continue
        s.add(
            Metric(
                run_id=run_id, phase=phase, step_index=step_index, name=name, value=float(value),
                unit=spec(name).unit, kind=kind, variant=variant,
            )
        )


def finish_run(s: Session, run_id: int, status: str, error: str | None = None, *,
               expect: tuple[str, ...] = ("running",)) -> bool:
    """Compare-and-set to a terminal status: only from one of ``expect`` (queued → running →
    terminal), so no terminal status is ever overwritten. Returns whether this call won."""
    assert status in FINAL_STATUSES, status
    res = s.execute(
        update(Run).where(Run.id == run_id, Run.status.in_(expect)).values(status=status, error=error, finished_at=utcnow())
    )
    if res.rowcount != 1:
        return False
    if status != "succeeded":
        s.execute(
            update(StepResult)
            .where(StepResult.run_id == run_id, StepResult.status == "running")
            .values(status="failed", error=error, finished_at=utcnow())
        )
    return True


def cancel_run(s: Session, run_id: int) -> str:
    """Cancel a queued run at once, or ask a running one to stop at the next step boundary. The
    queued → cancelled change is a compare-and-set, so a worker's claim and a cancel never both win."""
    if finish_run(s, run_id, "cancelled", "cancelled before it started", expect=("queued",)):
        s.commit()
        return "cancelled"
    res = s.execute(update(Run).where(Run.id == run_id, Run.status == "running").values(cancel_requested=True))
    s.commit()
    if res.rowcount == 1:
        return "cancel requested"
    status = s.scalar(select(Run.status).where(Run.id == run_id))
    if status is None:
        raise KeyError(f"run {run_id} not found")
    return f"already {status}"


def reap_stale_runs(s: Session, stale_after_s: float = 90.0, now: dt.datetime | None = None) -> list[int]:
    """Fail running runs whose heartbeat is older than ``stale_after_s``; finished steps keep their rows."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=stale_after_s)
    stale = s.scalars(select(Run).where(Run.status == "running", Run.heartbeat_at < cutoff)).all()
    reaped: list[int] = []
    for run in stale:
        age = (now - run.heartbeat_at).total_seconds() if run.heartbeat_at else float("inf")
        done = sum(1 for st in run.steps if st.status == "succeeded")
        msg = (
            f"worker {run.worker or '?'} stopped responding: no heartbeat for {age:.0f} s "
            f"(limit {stale_after_s:.0f} s); {done} of {len(run.steps)} steps had finished and keep their results"
        )
        if finish_run(s, run.id, "failed", msg):
            reaped.append(run.id)
    return reaped


def list_runs(s: Session, *, team_id: int | None = None, limit: int = 200, offset: int = 0) -> list[Run]:
    q = select(Run).order_by(Run.id.desc()).limit(limit).offset(offset)
    if team_id is not None:
        q = q.where(Run.team_id == team_id)
    return list(s.scalars(q).all())


ACTIVE = ("queued", "running")


def has_active_runs(s: Session, team_id: int | None = None, run_id: int | None = None) -> bool:
    """Whether a run of the team (or the one run) is queued or running: what a page polls for."""
    q = select(func.count(Run.id)).where(Run.status.in_(ACTIVE))
    if team_id is not None:
        q = q.where(Run.team_id == team_id)
    if run_id is not None:
        q = q.where(Run.id == run_id)
    return bool(s.scalar(q))


def count_runs(s: Session, team_id: int | None = None) -> int:
    q = select(func.count(Run.id))
    if team_id is not None:
        q = q.where(Run.team_id == team_id)
    return int(s.scalar(q) or 0)


def metrics_by_phase(metrics: Iterable[Metric], variant: str = "") -> dict[tuple[str, int], dict[str, float]]:
    out: dict[tuple[str, int], dict[str, float]] = {}
    for m in metrics:
        if m.variant == variant and m.kind == "measured":
            out.setdefault((m.phase, m.step_index), {})[m.name] = m.value
    return out


def run_summary(run: Run) -> dict[str, Any]:
    """The run as DESIGN.md's JSON: baseline, each step's metrics, final."""
    by = metrics_by_phase(run.metrics)
    estimated = {m.name: m.value for m in run.metrics if m.kind == "estimated"}
    peers: dict[str, dict[str, dict[str, float]]] = {}
    for m in run.metrics:
        if m.variant:
            peers.setdefault(str(m.step_index), {}).setdefault(m.variant, {})[m.name] = m.value
    return {
        "run_id": run.id,
        "status": run.status,
        "playbook": run.playbook_name,
        "workload": run.workload,
        "device": run.device,
        "error": run.error,
        "baseline": by.get(("baseline", -1), {}),
        "steps": [
            {
                "technique": st.technique,
                "params": st.params,
                "status": st.status,
                "verdict": st.verdict,
                "error": st.error,
                "notes": st.notes or [],
                "metrics": by.get(("step", st.index), {}),
                "check": by.get(("check", st.index), {}),  # correctness-check figures of a check-only step
                "diagnostics": by.get(("diagnostic", st.index), {}),  # figures computed while applying
                "details": st.details or {},  # per-layer tables, curves, the settings the step added
                "peers": peers.get(str(st.index), {}),
            }
            for st in run.steps
        ],
        "final": by.get(("final", -1), {}),
        "estimated": estimated,
        "gates": run.gates or [],
        "gates_verdict": run.gates_verdict or "not checked",
        "executed": any(st.status == "succeeded" for st in run.steps),
        "baseline_dtype": run.baseline_dtype,
        "scenario": (run.playbook_snapshot or {}).get("scenario") or "inference",
        "environment": run.environment or {},
    }


def upsert_worker(s: Session, *, name: str, host: str, device: str, device_name: str, memory_bytes: int,
                  queues: list[str], versions: dict[str, Any]) -> None:
    w = s.scalars(select(Worker).where(Worker.name == name)).first()
    if w is None:
        w = Worker(name=name, host=host, device=device, device_name=device_name, memory_bytes=memory_bytes,
                   queues=queues, versions=versions)
        s.add(w)
    else:
        w.host, w.device, w.device_name, w.memory_bytes = host, device, device_name, memory_bytes
        w.queues, w.versions = queues, versions
        w.started_at = utcnow()
    w.last_seen = utcnow()


def touch_worker(s: Session, name: str) -> None:
    s.execute(update(Worker).where(Worker.name == name).values(last_seen=utcnow()))


def live_workers(s: Session, within_s: float = 60.0) -> list[Worker]:
    cutoff = utcnow() - dt.timedelta(seconds=within_s)
    return list(s.scalars(select(Worker).where(Worker.last_seen >= cutoff).order_by(Worker.name)).all())


def ensure_team(s: Session, slug: str, name: str | None = None) -> Team:
    team = s.scalars(select(Team).where(Team.slug == slug)).first()
    if team is None:
        team = Team(slug=slug, name=name or slug)
        s.add(team)
        s.flush()
    return team


def save_playbook(s: Session, *, name: str, title: str, yaml_text: str, team_id: int = DEFAULT_TEAM_ID,
                  origin: str = "saved", notes: str | None = None) -> Playbook:
    pb = Playbook(team_id=team_id, name=name, title=title, yaml_text=yaml_text, origin=origin, notes=notes)
    s.add(pb)
    s.flush()
    return pb


def saved_playbooks(s: Session, team_id: int | None = None) -> list[Playbook]:
    q = select(Playbook).order_by(Playbook.id.desc())
    if team_id is not None:
        q = q.where(Playbook.team_id == team_id)
    return list(s.scalars(q).all())


def runs_of_playbook(s: Session, playbook_id: int) -> list[Run]:
    return list(s.scalars(select(Run).where(Run.playbook_id == playbook_id).order_by(Run.id.desc())).all())


def teams(s: Session) -> list[Team]:
    return list(s.scalars(select(Team).order_by(Team.id)).all())


def add_dead_letter(s: Session, *, worker: str, task: str, reason: str, excerpt: str) -> None:
    s.add(DeadLetter(worker=worker, task=task, reason=reason, excerpt=excerpt))


def dead_letters(s: Session, limit: int = 50) -> list[DeadLetter]:
    return list(s.scalars(select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)).all())
