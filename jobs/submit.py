"""Submission, apart from execution: validate a request (playbook, workload, device) before
anything is written, write the Run row and commit, then publish a task message carrying only
the run id (by task name, so this module never imports the tasks)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import update

from db import queries
from db.models import utcnow
from db.session import session_scope
from jobs.sweeper import send
from playbooks.errors import PlaybookError
from playbooks.schema import Playbook, parse_playbook

DEVICES = ("cpu", "cuda")
BASELINE_DTYPES = ("fp32", "bf16", "fp16")


def default_baseline_dtype(device: str) -> str:
    """What users compare against: fp32 on CPU (bf16 is slower there without AMX), bf16 on CUDA."""
    return "bf16" if device.startswith("cuda") else "fp32"
MAX_WORKLOAD_CHARS = 500  # runs.workload is String(500)


def validate_request(playbook: Playbook | dict[str, Any], workload: str, device: str) -> Playbook:
    """Everything checked before a row is written or a message sent."""
    from optimizers.workloads import workload_names
    from optimizers.workloads.base import WorkloadError
    from optimizers.workloads.hf import contained_path, looks_local

    pb = playbook if isinstance(playbook, Playbook) else parse_playbook(playbook)
    if device not in DEVICES:
        raise PlaybookError(f"device={device!r} is not valid; choose one of {', '.join(DEVICES)}")
    if not workload or len(workload) > MAX_WORKLOAD_CHARS:
        raise PlaybookError(f"workload must be 1 to {MAX_WORKLOAD_CHARS} characters; got {len(workload)}")
    names = workload_names()
    if workload in names:
        return pb
    if looks_local(workload):
        try:
            contained_path(workload)
        except WorkloadError as err:
            raise PlaybookError(str(err)) from None
    elif "/" not in workload:
        raise PlaybookError(
            f"workload={workload!r} is unknown; choose one of {', '.join(names)}, a local model directory or a Hugging Face id"
        )
    return pb


def create_run(pb: Playbook, workload: str, device: str, *, team_id: int = queries.DEFAULT_TEAM_ID,
               playbook_id: int | None = None, baseline_dtype: str | None = None) -> int:
    dtype = baseline_dtype or default_baseline_dtype(device)
    if dtype not in BASELINE_DTYPES:
        raise PlaybookError(f"baseline_dtype={dtype!r} is not valid; choose one of {', '.join(BASELINE_DTYPES)}")
    with session_scope() as s:
        run = queries.create_run(
            s, playbook_name=pb.name, snapshot=pb.model_dump(), workload=workload, device=device,
            team_id=team_id, playbook_id=playbook_id, baseline_dtype=dtype,
        )
        return run.id


def submit(pb: Playbook | dict[str, Any], workload: str, device: str = "cpu", **kw: Any) -> int:
    """Validate, write the Run row and commit, then enqueue a task carrying only the id. A broker
    that is down or silent fails the submission within seconds and the run ends ``failed``."""
    pb = validate_request(pb, workload, device)
    run_id = create_run(pb, workload, device, **kw)
    with session_scope() as s:  # before publishing: a crash in between leaves a run the sweeper re-sends
        s.execute(update(queries.Run).where(queries.Run.id == run_id).values(enqueued_at=utcnow(), enqueue_count=1))
    try:
        send(run_id, device)
    except Exception as err:  # broker unreachable: the run must not sit queued forever
        with session_scope() as s:
            queries.finish_run(s, run_id, "failed", f"could not enqueue the run: {type(err).__name__}: {err}",
                               expect=("queued",))
        raise
    return run_id
