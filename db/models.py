"""SQLAlchemy 2 typed models: teams, playbooks, runs, step results, metrics (long
format: one row per name/value, measured or estimated) and workers."""
from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"


class StepStatus(StrEnum):
    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    skipped = "skipped"


RUN_STATUSES = tuple(RunStatus)
FINAL_STATUSES = frozenset({RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled, RunStatus.timed_out})
STEP_STATUSES = tuple(StepStatus)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Playbook(Base):
    __tablename__ = "playbooks"
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    name: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(500))
    yaml_text: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(20), default="saved")  # library | saved | guide
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    playbook_id: Mapped[int | None] = mapped_column(ForeignKey("playbooks.id"), nullable=True)
    playbook_name: Mapped[str] = mapped_column(String(200))
    playbook_snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)  # the playbook executed, as data
    workload: Mapped[str] = mapped_column(String(500))
    device: Mapped[str] = mapped_column(String(20))  # cpu | cuda
    status: Mapped[str] = mapped_column(String(20), default="queued")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    task_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    enqueued_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)  # last message published
    enqueue_count: Mapped[int] = mapped_column(Integer, default=0)  # messages published (the sweeper re-sends)
    environment: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    gates: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)  # [{metric, ok, detail}]
    gates_verdict: Mapped[str | None] = mapped_column(String(20), nullable=True)  # passed | missed | not checked
    baseline_dtype: Mapped[str] = mapped_column(String(10), default="fp32")  # the baseline's precision: fp32 | bf16 | fp16
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    search_id: Mapped[int | None] = mapped_column(ForeignKey("searches.id", ondelete="SET NULL"), nullable=True, index=True)
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 1, 2, … within its search
    trial_params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # {"steps[0].group_size": 64, …}
    steps: Mapped[list["StepResult"]] = relationship(back_populates="run", order_by="StepResult.index", cascade="all, delete-orphan")
    metrics: Mapped[list["Metric"]] = relationship(back_populates="run", cascade="all, delete-orphan")

    __table_args__ = (Index("ix_runs_team_status", "team_id", "status"), Index("ix_runs_created", "created_at"))


class SearchStatus(StrEnum):
    running = "running"
    finished = "finished"  # budget spent, space exhausted or a trial met every gate (stop_when_met)
    cancelled = "cancelled"
    failed = "failed"


class Search(Base):
    """A search over a playbook's parameters: its trials are ordinary runs (``Run.search_id``),
    dispatched to workers as slots free up. ``version`` is bumped by every dispatch, a
    compare-and-set, so two workers finishing trials at once never both submit the next ones."""

    __tablename__ = "searches"
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    playbook_name: Mapped[str] = mapped_column(String(200))
    playbook_snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)  # the base playbook, its search section included
    workload: Mapped[str] = mapped_column(String(500))
    device: Mapped[str] = mapped_column(String(20))
    baseline_dtype: Mapped[str] = mapped_column(String(10), default="fp32")
    dispatch: Mapped[str] = mapped_column(String(10), default="celery")  # celery (workers) | local (the caller runs trials)
    status: Mapped[str] = mapped_column(String(20), default="running")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # why it ended
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # best / closest miss / Pareto, at the end


class StepResult(Base):
    __tablename__ = "step_results"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    technique: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    verdict: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    notes: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # per-layer tables, curves, settings
    run: Mapped[Run] = relationship(back_populates="steps")

    __table_args__ = (UniqueConstraint("run_id", "index", name="uq_step_run_index"),)


class Metric(Base):
    """One figure: phase baseline / step / final, which step, name, value, unit, and whether it
    was measured or estimated; ``variant`` tells side-by-side peers apart (e.g. torchao)."""

    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    phase: Mapped[str] = mapped_column(String(10))  # baseline | step | final | check | diagnostic
    step_index: Mapped[int] = mapped_column(Integer, default=-1)  # -1 for baseline / final
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(20), default="")
    kind: Mapped[str] = mapped_column(String(10), default="measured")  # measured | estimated
    variant: Mapped[str] = mapped_column(String(50), default="")
    run: Mapped[Run] = relationship(back_populates="metrics")

    __table_args__ = (
        UniqueConstraint("run_id", "phase", "step_index", "name", "variant", name="uq_metric"),
        Index("ix_metrics_name", "name"),
    )


class Worker(Base):
    __tablename__ = "workers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)  # celery hostname
    host: Mapped[str] = mapped_column(String(200))
    device: Mapped[str] = mapped_column(String(20))  # cpu | cuda
    device_name: Mapped[str] = mapped_column(String(200))
    memory_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    queues: Mapped[list[Any]] = mapped_column(JSON, default=list)
    versions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ShareLink(Base):
    """A read-only link to a saved playbook and its runs. Only the SHA-256 of the token is
    stored; the token itself (``secrets.token_urlsafe(32)``) is shown once to its creator."""

    __tablename__ = "share_links"
    id: Mapped[int] = mapped_column(primary_key=True)
    playbook_id: Mapped[int] = mapped_column(ForeignKey("playbooks.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class DeadLetter(Base):
    """A task message a worker refused (malformed body, wrong shape, undecodable): acknowledged so it
    cannot crash-loop the workers, and kept here with the reason and the first bytes as text."""

    __tablename__ = "dead_letters"
    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    worker: Mapped[str] = mapped_column(String(200), default="")
    task: Mapped[str] = mapped_column(String(200), default="")
    reason: Mapped[str] = mapped_column(Text)
    excerpt: Mapped[str] = mapped_column(Text, default="")  # the body's first 500 characters, never executed


class DeviceCeiling(Base):
    """A device's measured ceilings (copy bandwidth, matmul peak), measured once per device by a worker."""

    __tablename__ = "device_ceilings"
    id: Mapped[int] = mapped_column(primary_key=True)
    device_name: Mapped[str] = mapped_column(String(200), unique=True)
    copy_gb_per_s: Mapped[float] = mapped_column(Float)
    matmul_tflop_per_s: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"bf16": .., "fp32": ..}
    measured_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class KernelBenchmark(Base):
    """One kernel timing (or interpreter correctness check) against its reference and the roofline."""

    __tablename__ = "kernel_benchmarks"
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), default=1)
    kernel: Mapped[str] = mapped_column(String(100))
    shape: Mapped[str] = mapped_column(String(200))
    dtype: Mapped[str] = mapped_column(String(20))
    device: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="queued")  # queued | running | succeeded | failed
    mode: Mapped[str] = mapped_column(String(20), default="bench")  # bench (GPU timing) | interpreter (correctness)
    row: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # the bench function's row
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
