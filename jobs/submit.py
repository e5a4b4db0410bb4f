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


def validate_request(playbook: Playbook | dict[str, Any], workload: str, device: str,
                     scenario: str | None = None) -> Playbook:
    """Everything checked before a row is written or a message sent; returns the playbook with
    the scenario it will be judged in (asked for, or from its ``when.goal`` and the workload)."""
    pb = _validate_target(playbook, workload, device)
    return with_scenario(pb, workload, scenario)


def with_scenario(pb: Playbook, workload: str, requested: str | None = None) -> Playbook:
    """Resolve the scenario and refuse up front what it cannot judge: a scenario not built yet,
    a runtime or recipe step it does not apply, a gate on a metric it does not measure."""
    from optimizers import registry
    from optimizers.scenarios import default_scenario, scenario
    from optimizers.workloads import workload_task

    try:
        name = requested or pb.scenario or default_scenario(pb.when.get("goal"), workload_task(workload),
                                                            [s.technique for s in pb.steps])
        sc = scenario(name)
    except ValueError as err:
        raise PlaybookError(str(err)) from None
    why = ("asked for" if requested or pb.scenario else
           f"from when.goal={pb.when.get('goal')}" if pb.when.get("goal") else "from its serving steps")
    if not sc.built:
        raise PlaybookError(f"playbook {pb.name!r} is judged in the {name} scenario ({why}), and {sc.not_built}"
                            + (" (speedbook run --scenario inference)" if name == "serving" else ""))
    for i, step in enumerate(pb.steps):
        if step.technique in registry.names():
            kind = registry.get(step.technique).kind
            if kind != "transform" and step.technique not in sc.settings and step.technique not in sc.not_applied:
                raise PlaybookError(f"steps[{i}] ({step.technique}) is a {kind} setting the {name} scenario does not "
                                    f"apply; it applies {', '.join(sorted(sc.settings)) or 'none'}")
    if pb.trace is not None and name != "serving":
        raise PlaybookError(f"trace: describes the serving scenario's requests, and this playbook is judged in the "
                            f"{name} scenario ({why}); drop trace: or run with scenario serving")
    if pb.training is not None and name != "training":
        raise PlaybookError(f"training: sets the training scenario's budget, and this playbook is judged in the "
                            f"{name} scenario ({why}); drop training: or run with scenario training")
    for i, gate in enumerate(pb.expect):
        if gate.metric not in sc.metrics:
            raise PlaybookError(f"expect[{i}].metric={gate.metric!r} is not measured in the {name} scenario; "
                                f"choose one of {', '.join(sc.metrics)}")
    for i, obj in enumerate(pb.search.objectives if pb.search else []):
        if obj.metric not in sc.metrics:
            raise PlaybookError(f"search.objectives[{i}].metric={obj.metric!r} is not measured in the {name} scenario; "
                                f"choose one of {', '.join(sc.metrics)}")
    return pb.model_copy(update={"scenario": name})


def _validate_target(playbook: Playbook | dict[str, Any], workload: str, device: str) -> Playbook:
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


def submit(pb: Playbook | dict[str, Any], workload: str, device: str = "cpu", *, scenario: str | None = None,
           **kw: Any) -> int:
    """Validate, write the Run row and commit, then enqueue a task carrying only the id. A broker
    that is down or silent fails the submission within seconds and the run ends ``failed``."""
    pb = validate_request(pb, workload, device, scenario)
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
