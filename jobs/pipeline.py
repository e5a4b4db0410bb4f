"""The plain pipeline the Celery task and the CLI call (execution only; submission is
``jobs.submit``): load workload → baseline measurement → for each step apply, measure, write
that step's rows and commit → final → status. Heartbeats while running; a crash keeps every
finished step's rows."""
from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from dataclasses import dataclass, replace

from sqlalchemy import select

from db import queries
from db.recorder import RunRecorder
from db.session import session_scope
from jobs.settings import time_limits
from playbooks.errors import PlaybookError
from playbooks.schema import Playbook, gates_verdict

log = logging.getLogger(__name__)
HEARTBEAT_S = float(os.environ.get("SPEEDBOOK_HEARTBEAT_S", "5"))
TIMED_OUT = "the run exceeded its time limit (SPEEDBOOK_TASK_SOFT_LIMIT_S)"


class Cancelled(Exception):
    pass


def artifact_dir(run_id: int) -> Path:
    """Files a run leaves behind (e.g. an exported checkpoint): <data dir>/artifacts/run-<id>."""
    from db.session import data_dir

    return data_dir() / "artifacts" / f"run-{run_id}"


def artifacts(run_id: int) -> list[str]:
    """The folders a run's steps wrote (e.g. ``compressed-tensors``), as paths."""
    d = artifact_dir(run_id)
    return sorted(str(p) for p in d.iterdir()) if d.is_dir() else []


def artifact_zip(path: str) -> bytes:
    """One artifact folder as a zip, for download. Only a folder inside the artifacts area, and
    no symlink anywhere in it (a link could pull in any file the server can read)."""
    import io
    import zipfile

    from db.session import data_dir

    area = (data_dir() / "artifacts").resolve()
    root = Path(path)
    if root.is_symlink() or area not in root.resolve().parents:
        raise PlaybookError(f"{path!r} is not an artifact folder of a run")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(root.rglob("*")):
            if f.is_symlink() or root.resolve() not in f.resolve().parents:
                raise PlaybookError(f"artifact {f.name!r} is a link; artifacts are plain files only")
            if f.is_file():
                zf.write(f, f.relative_to(root.parent))
    return buf.getvalue()


# ---------------------------------------------------------------- execution

def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` in another thread at its next Python bytecode (what Celery's soft limit
    does by signal in the prefork pool; the solo and threads pools have no such limit)."""
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))


class _Heartbeat:
    """Touches the run's heartbeat every few seconds, notices cancel requests and a run that is no
    longer running (reaped), and is the watchdog of the time limit in every pool: past the soft
    limit it raises SoftTimeLimitExceeded in the executing thread; past the hard limit it ends the
    run ``timed_out`` itself (compare-and-set, so a late finish cannot overwrite it)."""

    def __init__(self, run_id: int) -> None:
        self.run_id, self.cancelled = run_id, threading.Event()
        self._stop = threading.Event()
        self._owner = threading.get_ident()
        self._started = time.monotonic()
        soft, hard = time_limits()
        self._soft, self._hard = soft, (soft + hard) / 2  # before the prefork pool's hard kill
        self._raised = False
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id}", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(min(HEARTBEAT_S, max(self._soft / 4, 0.05))):
            try:
                self._tick()
            except Exception:
                log.exception("heartbeat failed for run %s", self.run_id)

    def _tick(self) -> None:
        from celery.exceptions import SoftTimeLimitExceeded

        elapsed = time.monotonic() - self._started
        if elapsed > self._soft and not self._raised:
            self._raised = True
            _raise_in_thread(self._owner, SoftTimeLimitExceeded)
        if elapsed > self._hard:
            with session_scope() as s:
                queries.finish_run(s, self.run_id, "timed_out", TIMED_OUT)
        with session_scope() as s:
            if queries.heartbeat(s, self.run_id):
                self.cancelled.set()

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_S + 1)

    def check(self) -> None:
        with session_scope() as s:
            if queries.heartbeat(s, self.run_id):
                self.cancelled.set()
        if self.cancelled.is_set():
            raise Cancelled()


def _estimates(workload) -> dict[str, float]:
    """The estimator's figures for this model, recorded next to the measured ones."""
    cfg = workload.meta.get("config")
    if not cfg:
        return {}
    try:
        from playbooks.estimate import estimate_for_config
    except ImportError:
        return {}
    est = estimate_for_config(cfg)
    wb = est.get("weight_bytes", {})
    return {f"estimated_weight_bytes_{k}": float(v) for k, v in wb.items() if isinstance(v, (int, float))}


@dataclass(frozen=True)
class _State:
    """What the fold carries from one step to the next: the current workload, the runtime /
    recipe settings accumulated so far, and the latest measurement (the final one at the end)."""

    workload: Any
    settings: dict[str, Any]
    measurement: Any


def describe_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as the Run page shows them: a model (a draft) by its class and size, never its repr."""
    import torch

    def one(v: Any) -> Any:
        if isinstance(v, torch.nn.Module):
            return f"{type(v).__name__} ({sum(p.numel() for p in v.parameters()):,} parameters)"
        if isinstance(v, dict):
            return {k: one(x) for k, x in v.items()}
        return v

    return {k: one(v) for k, v in settings.items()}


def _run_step(rec: RunRecorder, index: int, step, state: _State, baseline, hb: _Heartbeat, scenario) -> _State:
    """Apply one step and measure it under the scenario with the settings so far; the next state."""
    from optimizers import registry
    from optimizers.base import Target
    from optimizers.scenarios.settings import merge_settings

    rec.step_started(index)
    if step.technique not in registry.names():
        rec.step_skipped(index, {"status": "advice_only", "reason": _advice_reason(step.technique)})
        return state
    if step.technique in scenario.spec.not_applied:
        rec.step_skipped(index, {"status": "refused", "reason": scenario.spec.not_applied[step.technique]})
        return state
    tech = registry.get(step.technique)
    cfg = tech.config(step.params)
    verdict = tech.check(Target.of(state.workload), cfg)
    if not verdict.runnable:
        rec.step_skipped(index, verdict.to_dict())
        return state
    from optimizers.training.transform import progress

    with progress(_Progress(rec, index, hb)):  # a step that trains reports its steps and stops on cancel
        record = tech.apply(state.workload, cfg)
    hb.check()
    settings = merge_settings(state.settings, record.settings)  # settings accumulate; transforms replace the workload
    if record.check_metrics is not None:  # a correctness-check step: its own figures, nothing re-measured
        peer_metrics = _peer_metrics(record, settings, baseline, hb, scenario)
        rec.step_done(index, verdict.to_dict(), record, settings=describe_settings(record.settings), metrics=None,
                      peers=peer_metrics)
        return replace(state, workload=record.workload, settings=settings)
    m = scenario.measure(record.workload, reference=baseline, runtime=settings, **scenario.hooks(rec, index, hb))
    record.notes.extend(m.notes)
    record.details.update(m.details)
    peer_metrics = _peer_metrics(record, settings, baseline, hb, scenario)
    rec.step_done(index, verdict.to_dict(), record, settings=describe_settings(record.settings), metrics=m.metrics,
                  peers=peer_metrics)
    return _State(record.workload, settings, m)


def _peer_metrics(record, settings: dict[str, Any], baseline, hb: _Heartbeat, scenario) -> dict[str, dict[str, float]]:
    """A step's peers measured in the same run against the same baseline: a model by the scenario's
    own measurement; another runtime by its own protocol for this scenario (llama.cpp's decode loop
    in inference, vLLM's engine on the serving trace). An optional peer's failure is a note, never
    the step's."""
    import torch

    from optimizers.measure import SpeedSettings

    out = {}
    for variant, peer in record.peers.items():
        hb.check()
        try:
            if isinstance(peer, torch.nn.Module):
                out[variant] = scenario.measure(record.workload.with_model(peer), reference=baseline,
                                                runtime=settings).metrics
            elif scenario.spec.name == "serving" and hasattr(peer, "serving_metrics"):
                out[variant] = peer.serving_metrics(record.workload, scenario.trace, baseline.served)
            elif scenario.spec.name == "inference" and hasattr(peer, "metrics"):
                out[variant] = peer.metrics(record.workload, baseline, SpeedSettings.from_env())
            else:
                record.notes.append(f"peer {variant} has no protocol for the {scenario.spec.name} scenario: "
                                    f"not measured here")
        except Exception as err:  # noqa: BLE001 - an optional peer must not fail the step
            log.warning("peer %s failed: %s", variant, err)
            record.notes.append(f"peer {variant} could not be measured: {type(err).__name__}: {err}")
    return out


@dataclass(frozen=True)
class _Scenario:
    """The run's scenario: its declaration and its measurement function."""

    spec: Any
    measure: Any
    trace: Any = None

    @classmethod
    def of(cls, pb: Playbook) -> "_Scenario":
        from optimizers.scenarios import measurer, scenario

        name = pb.scenario or "inference"
        return cls(scenario(name), measurer(name, pb.trace, pb.training), pb.trace)

    def hooks(self, rec: RunRecorder, index: int | None, hb: _Heartbeat) -> dict[str, Any]:
        """Extra arguments of a long measurement: the training scenario reports each step (shown on
        the Run page) and stops between steps when the run is cancelled."""
        if self.spec.name != "training":
            return {}
        return {"progress": _Progress(rec, index, hb)}


class _Progress:
    """``fn(step, steps, loss)`` after every training step: a cancel check, and at most every
    ``interval_s`` the step, loss and ETA written where the Run page reads them."""

    def __init__(self, rec: RunRecorder, index: int | None, hb: _Heartbeat, interval_s: float = 2.0) -> None:
        self.rec, self.index, self.hb, self.interval_s = rec, index, hb, interval_s
        self._t0, self._last = time.monotonic(), 0.0

    def __call__(self, step: int, steps: int, loss: float) -> None:
        self.hb.check()
        now = time.monotonic()
        if now - self._last < self.interval_s and step < steps:
            return
        self._last = now
        eta = (now - self._t0) / step * (steps - step)
        self.rec.progress(self.index, {"step": step, "steps": steps, "loss": round(loss, 5), "eta_s": round(eta, 1)})


def preflight(pb: Playbook, workload) -> None:
    """Every step's ``check`` against the target it will meet, before the baseline is measured:
    a step that cannot compose with the ones before it (a quantizer after every nn.Linear was
    replaced, a group size that divides no layer, a draft that does not exist) stops the run
    here, naming the step and the fix; a step that merely cannot run here is skipped later."""
    from optimizers import registry
    from optimizers.base import Target

    start = Target.of(workload)
    target, replaced_by = start, None
    for i, step in enumerate(pb.steps):
        if step.technique not in registry.names():
            continue
        tech = registry.get(step.technique)
        cfg = tech.config(step.params)
        verdict = tech.check(target, cfg)
        if verdict.status == "refused":
            composes = tech.check(start, cfg).runnable  # fine alone: it cannot follow the steps before it
            if composes or verdict.blame == "config":
                after = (f"; steps[{replaced_by[0]}] ({replaced_by[1]}) replaced every nn.Linear before it"
                         if composes and replaced_by is not None else "")
                raise PlaybookError(f"refused before start: steps[{i}] ({step.technique}): {verdict.reason}{after}")
        if verdict.runnable:
            if tech.replaces_linear:
                replaced_by = (i, step.technique)
            target = target.after(tech, cfg)


def run_settings(pb: Playbook) -> dict[str, Any]:
    """Settings the whole run needs from its baseline on, so every ratio compares like with like
    (none of the built-in techniques needs one today: every decode loop is the lean one)."""
    from optimizers import registry

    out: dict[str, Any] = {}
    for step in pb.steps:
        if step.technique in registry.names():
            out |= registry.get(step.technique).run_settings
    return out


def _advice_reason(entry_id: str) -> str:
    from playbooks import catalog

    entry = catalog.get_entry(entry_id)
    return entry.reason or f"{entry.name} is advice-only in the catalog"


def execute_run(run_id: int, worker: str = "local") -> str:
    """Run a claimed run to its end; returns the final status. Never raises for a run's own failure."""
    with session_scope() as s:
        if not queries.claim_run(s, run_id, worker):
            run = s.get(queries.Run, run_id)
            log.info("run %s not claimed (already %s): a duplicate message is a no-op", run_id, run.status if run else "missing")
            return run.status if run else "missing"
        log.info("run %s claimed by %s", run_id, worker)
        run = queries.get_run(s, run_id)
        snapshot, workload_name, device, dtype = run.playbook_snapshot, run.workload, run.device, run.baseline_dtype
    status, error = "failed", None
    try:
        with _Heartbeat(run_id) as hb:
            status = _execute(run_id, Playbook.model_validate(snapshot), workload_name, device, dtype, hb)
    except Cancelled:
        status, error = "cancelled", "cancelled by request"
    except BaseException as err:
        if _timed_out(err):
            status, error = "timed_out", TIMED_OUT
        elif isinstance(err, Exception):
            status, error = "failed", _short_error(err)
            log.error("run %s failed:\n%s", run_id, traceback.format_exc())
        else:  # KeyboardInterrupt, SystemExit: end the run, then let the process go
            with session_scope() as s:
                queries.finish_run(s, run_id, "failed", f"the worker stopped: {type(err).__name__}")
            raise
    with session_scope() as s:
        if not queries.finish_run(s, run_id, status, error):  # reaped, cancelled or timed out meanwhile
            status = s.scalar(select(queries.Run.status).where(queries.Run.id == run_id)) or status
    _free_search_slot(run_id)
    return status


def _free_search_slot(run_id: int) -> None:
    """A search's trial ended: its search may dispatch the next one (jobs/search.py)."""
    from jobs import search

    try:
        search.after_run(run_id)
    except Exception:  # the run is recorded; the maintenance loop advances the search later
        log.exception("run %s: its search could not advance", run_id)


def _timed_out(err: BaseException) -> bool:
    """A soft time limit anywhere in the chain (a step wraps its error) ends the run timed_out."""
    from celery.exceptions import SoftTimeLimitExceeded

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, SoftTimeLimitExceeded):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def _short_error(err: BaseException) -> str:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {msg}"[:2000]


def _execute(run_id: int, pb: Playbook, workload_name: str, device: str, dtype: str, hb: _Heartbeat) -> str:
    """The run as a plain fold over its steps; every row is written by one recorder."""
    from optimizers.measure import measure, pin_threads
    from optimizers.workloads import load_workload

    pin_threads()  # one thread count for the baseline and every step (recorded in the environment)
    rec = RunRecorder(run_id)
    current = load_workload(workload_name, device)
    if dtype != "fp32":  # the baseline itself in 16 bits: what real deployments compare against
        from optimizers.techniques.half_precision import DTYPES

        current = current.with_model(current.model.to(DTYPES[dtype]))
    current.meta["artifact_dir"] = str(artifact_dir(run_id))  # where steps may write files (exports)
    preflight(pb, current)
    scenario = _Scenario.of(pb)
    base_settings = run_settings(pb)
    if scenario.spec.name == "inference":  # the serving engines warm themselves up before their timed trace
        measure(current, memory=False, runtime=base_settings)  # discarded: first-use costs must not inflate the baseline
    hb.check()
    baseline = scenario.measure(current, runtime=base_settings, **scenario.hooks(rec, None, hb))
    rec.baseline(baseline.metrics, _estimates(current),
                 {**baseline.environment, "scenario": scenario.spec.name,
                  **({"baseline_notes": baseline.notes} if baseline.notes else {}),
                  **({"baseline_details": baseline.details} if baseline.details else {})})
    state = _State(current, base_settings, baseline)
    for i, step in enumerate(pb.steps):
        hb.check()
        try:
            state = _run_step(rec, i, step, state, baseline, hb, scenario)
        except Cancelled:
            raise
        except Exception as err:
            rec.step_failed(i, _short_error(err))
            raise RuntimeError(f"step {i + 1} ({step.technique}) failed: {_short_error(err)}") from err
    final = state.measurement
    gates = []
    for gate in pb.expect:
        ok, detail = gate.check(baseline.metrics.get(gate.metric), final.metrics.get(gate.metric))
        gates.append({"metric": gate.metric, "ok": ok, "detail": detail})
    rec.final(final.metrics, gates, gates_verdict(gates))
    return "succeeded"
