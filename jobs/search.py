"""Searches: a playbook's ``search:`` space tried as ordinary runs (one per configuration),
dispatched to as many workers as are free, until the budget is spent.

There is no search process to lose. The search is a row; ``advance`` reads its trials from the
database, asks the strategy for as many new configurations as there are free slots, and writes
their runs under a compare-and-set on ``Search.version``. It is called when a search starts,
by the worker that finishes one of its trials, and by every worker's maintenance loop (which
also catches a trial whose worker died: the reaper fails it and the search goes on). Grid
configurations are enumerated here; random and TPE proposals come from Optuna, on a study
rebuilt from the stored trials each time, so the same history and seed propose the same
configurations."""
from __future__ import annotations

import datetime as dt
import logging
import math
import warnings
from typing import Any, Callable

from sqlalchemy import select, update

from db import queries
from db.models import FINAL_STATUSES, Metric, Run, Search, utcnow
from db.session import session_scope
from playbooks import search as space
from playbooks.errors import PlaybookError
from playbooks.schema import Playbook, parse_playbook

log = logging.getLogger(__name__)
FAILED_SCORE = 1e6  # a trial that failed or measured nothing: the sampler steers away from it
SEARCH_FINAL = ("finished", "cancelled", "failed")


def merged_spec(pb: Playbook, **overrides: Any) -> Playbook:
    """The playbook with its search section's budget or strategy overridden (CLI flags, page fields)."""
    if pb.search is None:
        raise PlaybookError(f"playbook {pb.name!r} has no search: section; add one naming the parameters to vary, "
                            "e.g. search: {space: {steps[0].group_size: [32, 64, 128]}}")
    update_ = {k: v for k, v in overrides.items() if v is not None}
    data = pb.model_dump()
    data["search"] = {**data["search"], **update_}
    return parse_playbook(data)


def live_slots(device: str) -> int:
    """Workers that listen on the device's queue and were seen within a minute (at least 1)."""
    from jobs.celery_app import queue_for

    with session_scope() as s:
        return max(1, sum(1 for w in queries.live_workers(s) if queue_for(device) in (w.queues or [])))


def start(pb: Playbook, workload: str, device: str = "cpu", *, team_id: int = queries.DEFAULT_TEAM_ID,
          baseline_dtype: str | None = None, scenario: str | None = None, dispatch: str = "celery",
          **overrides: Any) -> int:
    """Validate the playbook, its space and every configuration a grid would run, write the
    search row, and dispatch the first trials. Returns the search id."""
    from jobs import submit

    pb = merged_spec(pb, **overrides)
    pb = submit.validate_request(pb, workload, device, scenario)
    ds = space.dims(pb.search, pb.steps)
    if pb.search.strategy == "grid":
        for i, config in enumerate(space.grid(ds, pb.steps), 1):
            parse_playbook(space.apply_config(pb.model_dump(), config, i))  # every trial's playbook is valid
    if dispatch not in ("celery", "local"):
        raise PlaybookError(f"dispatch={dispatch!r} is not valid; choose celery or local")
    dtype = baseline_dtype or submit.default_baseline_dtype(device)
    with session_scope() as s:
        row = Search(team_id=team_id, playbook_name=pb.name, playbook_snapshot=pb.model_dump(), workload=workload,
                     device=device, baseline_dtype=dtype, dispatch=dispatch)
        s.add(row)
        s.flush()
        search_id = row.id
    advance(search_id)
    return search_id


# ---------------------------------------------------------------- reading trials

def trials(search_id: int) -> list[dict[str, Any]]:
    """Every trial with its configuration, status, gates and baseline/final figures (two queries)."""
    with session_scope() as s:
        runs = s.execute(select(Run.id, Run.trial_number, Run.trial_params, Run.status, Run.gates, Run.gates_verdict,
                                Run.worker, Run.error, Run.started_at, Run.finished_at)
                         .where(Run.search_id == search_id).order_by(Run.trial_number)).all()
        ids = [r.id for r in runs]
        figures: dict[int, dict[str, dict[str, float]]] = {i: {"baseline": {}, "final": {}} for i in ids}
        if ids:
            for run_id, phase, name, value in s.execute(
                    select(Metric.run_id, Metric.phase, Metric.name, Metric.value)
                    .where(Metric.run_id.in_(ids), Metric.phase.in_(("baseline", "final")), Metric.variant == "")):
                figures[run_id][phase][name] = value
    return [{"run_id": r.id, "trial": r.trial_number, "config": r.trial_params or {}, "status": r.status,
             "gates": r.gates or [], "gates_verdict": r.gates_verdict, "worker": r.worker, "error": r.error,
             "started_at": r.started_at, "finished_at": r.finished_at, **figures[r.id]} for r in runs]


def judged(pb: Playbook, trial: dict[str, Any]) -> dict[str, Any]:
    """A trial with its objective values (ratios to its baseline, lower better), each gate's
    shortfall, whether it meets every gate, and its score for the sampler."""
    objectives = space.objectives_of(pb)
    done = trial["status"] == "succeeded"
    values = space.objective_values(objectives, trial["baseline"], trial["final"]) if done else None
    offs = [space.gate_shortfall(g, trial["baseline"].get(g.metric), trial["final"].get(g.metric)) if done else None
            for g in pb.expect]
    meets = done and values is not None and all(o == 0.0 for o in offs)
    sc = space.score(values, offs) if done else FAILED_SCORE
    return {**trial, "objectives": values, "shortfalls": offs, "meets_gates": meets, "score": sc}


def result(search_id: int) -> dict[str, Any]:
    """The search's answer, never empty once a trial has finished: the best configuration that
    meets every gate, or else the closest miss with how far each gate is off; the Pareto front
    over the objectives; every trial."""
    with session_scope() as s:
        row = s.get(Search, search_id)
        if row is None:
            raise KeyError(f"search {search_id} not found")
        pb = Playbook.model_validate(row.playbook_snapshot)
        head = {"search_id": row.id, "playbook": row.playbook_name, "workload": row.workload, "device": row.device,
                "status": row.status, "reason": row.reason, "strategy": pb.search.strategy,
                "max_trials": pb.search.max_trials, "created_at": row.created_at, "finished_at": row.finished_at}
    rows = [judged(pb, t) for t in trials(search_id)]
    objectives = space.objectives_of(pb)
    measured = {t["run_id"]: t["objectives"] for t in rows if t["objectives"] is not None}
    front = space.pareto_front(measured)
    meeting = [t for t in rows if t["meets_gates"]]
    best = min(meeting, key=lambda t: t["score"]) if meeting else None
    closest = None
    if best is None:
        finished = {t["run_id"]: t["shortfalls"] for t in rows if t["status"] == "succeeded"}
        cid = space.closest_miss(finished)
        closest = next((t for t in rows if t["run_id"] == cid), None)
    gates = [g.model_dump(exclude_none=True) for g in pb.expect]
    return {**head, "objectives": [{"metric": o.metric, "direction": "minimize" if o.sign() > 0 else "maximize"}
                                   for o in objectives],
            "gates": gates, "trials": rows, "pareto": front,
            "best": _brief(best, pb), "closest_miss": _brief(closest, pb),
            "answer": ("best" if best else "closest miss" if closest else "no trial finished yet")}


def _brief(t: dict[str, Any] | None, pb: Playbook) -> dict[str, Any] | None:
    if t is None:
        return None
    return {"run_id": t["run_id"], "trial": t["trial"], "config": t["config"],
            "gates": [{"metric": g.metric, "shortfall": off} for g, off in zip(pb.expect, t["shortfalls"])],
            "final": {o.metric: t["final"].get(o.metric) for o in space.objectives_of(pb)},
            "baseline": {o.metric: t["baseline"].get(o.metric) for o in space.objectives_of(pb)}}


# ---------------------------------------------------------------- proposing

def propose(pb: Playbook, history: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` configurations no trial has tried (finished, failed or still running)."""
    spec = pb.search
    ds = space.dims(spec, pb.steps)
    tried = {_key(t["config"]) for t in history}
    if spec.strategy == "grid":
        out = []
        for config in space.grid(ds, pb.steps):
            if _key(config) not in tried:
                out.append(config)
                tried.add(_key(config))
            if len(out) == n:
                break
        return out
    return _optuna_propose(pb, ds, history, n, tried)


def _key(config: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in config.items()))


def _distribution(d: space.Dim):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if d.choices is not None:
        return CategoricalDistribution(d.choices)
    r = d.range
    if r.integer:
        return IntDistribution(int(r.low), int(r.high), step=int(r.step or 1), log=r.log)
    return FloatDistribution(r.low, r.high, step=r.step, log=r.log)


def _sampler(spec: space.SearchSpec):
    import optuna

    if spec.strategy == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # few random start-up trials: a small space is the point (the default 10 would make a
        # 12-point grid a random search); group + multivariate handle conditional parameters
        return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=max(2, min(10, spec.max_trials // 4)),
                                          multivariate=True, group=True, constant_liar=True,
                                          warn_independent_sampling=False)


def _optuna_propose(pb: Playbook, ds: list[space.Dim], history: list[dict[str, Any]], n: int,
                    tried: set[tuple]) -> list[dict[str, Any]]:
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dist = {d.key: _distribution(d) for d in ds}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(direction="minimize", sampler=_sampler(pb.search))
        for t in history:
            params = {k: v for k, v in t["config"].items() if k in dist}
            dists = {k: dist[k] for k in params}
            if t["status"] in ("queued", "running"):
                study.add_trial(create_trial(params=params, distributions=dists, state=TrialState.RUNNING))
            else:
                study.add_trial(create_trial(params=params, distributions=dists, value=t.get("score", FAILED_SCORE)))
        out: list[dict[str, Any]] = []
        finite = space.grid_size(ds, pb.steps)
        for _ in range(n):
            for _attempt in range(64):  # a sampler may propose a tried configuration: tell it, ask again
                trial = study.ask()
                config = _suggest(trial, ds, pb)
                if _key(config) not in tried:
                    break
                known = next((t for t in history if _key(t["config"]) == _key(config)), None)
                if known is not None and known["status"] not in ("queued", "running"):
                    study.tell(trial, known.get("score", FAILED_SCORE))
                else:
                    study.tell(trial, state=TrialState.FAIL)
            else:
                config = None
                if finite is not None:  # the sampler keeps circling: take the next untried grid point
                    config = next((c for c in space.grid(ds, pb.steps) if _key(c) not in tried), None)
            if config is None:
                break
            tried.add(_key(config))
            out.append(config)
    return out


def _suggest(trial: Any, ds: list[space.Dim], pb: Playbook) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for d in ds:
        if d.param != "technique":
            tech = config.get(f"steps[{d.step}].technique", pb.steps[d.step].technique)
            if not space.takes(tech, d.param):
                continue
        dist = _distribution(d)
        if d.choices is not None:
            config[d.key] = trial.suggest_categorical(d.key, d.choices)
        elif d.range.integer:
            config[d.key] = trial.suggest_int(d.key, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            config[d.key] = trial.suggest_float(d.key, dist.low, dist.high, step=dist.step, log=dist.log)
    return config


# ---------------------------------------------------------------- advancing

def advance(search_id: int, send: Callable[[int, str], Any] | None = None) -> list[int]:
    """One step of the search: cancel, finish, or submit trials for the free slots. Returns the
    ids of the runs it created. Safe to call from many processes at once."""
    with session_scope() as s:
        row = s.get(Search, search_id)
        if row is None or row.status in SEARCH_FINAL:
            return []
        pb = Playbook.model_validate(row.playbook_snapshot)
        version, device, dispatch = row.version, row.device, row.dispatch
        team_id, workload, dtype, cancel = row.team_id, row.workload, row.baseline_dtype, row.cancel_requested
        elapsed_min = (utcnow() - row.created_at).total_seconds() / 60
    history = [judged(pb, t) for t in trials(search_id)]
    active = [t for t in history if t["status"] not in FINAL_STATUSES]
    spec = pb.search
    if cancel:
        with session_scope() as s:
            for t in active:
                queries.cancel_run(s, t["run_id"])
        if not any(t["status"] == "running" for t in active):
            _finish(search_id, "cancelled", "cancelled by request")
        return []
    reason = None
    if len(history) >= spec.max_trials:
        reason = f"ran its {spec.max_trials} trials"
    elif elapsed_min >= spec.max_minutes:
        reason = f"its {spec.max_minutes:g}-minute budget is spent"
    elif spec.stop_when_met and any(t["meets_gates"] for t in history):
        reason = "a trial met every gate (stop_when_met)"
    slots = (spec.parallel or (1 if dispatch == "local" else live_slots(device))) - len(active)
    configs = [] if reason or slots <= 0 else propose(pb, history, min(slots, spec.max_trials - len(history)))
    if not reason and not configs and not active and slots > 0:
        reason = f"tried every configuration of its space ({len(history)})"
    if reason:
        if not active:
            _finish(search_id, "finished", reason)
        return []
    if not configs:
        return []
    created: list[int] = []
    with session_scope() as s:
        won = s.execute(update(Search).where(Search.id == search_id, Search.version == version,
                                             Search.status == "running")
                        .values(version=version + 1)).rowcount == 1
        if not won:  # another process dispatched meanwhile: its view is as good as ours
            s.rollback()
            return []
        for i, config in enumerate(configs, len(history) + 1):
            trial_pb = parse_playbook(space.apply_config(pb.model_dump(), config, i))
            run = queries.create_run(s, playbook_name=pb.name, snapshot=trial_pb.model_dump(), workload=workload,
                                     device=device, team_id=team_id, baseline_dtype=dtype, search_id=search_id,
                                     trial_number=i, trial_params=config)
            created.append(run.id)
    if dispatch == "celery":
        _publish(created, device, send)
    return created


def _publish(run_ids: list[int], device: str, send: Callable[[int, str], Any] | None) -> None:
    from jobs.sweeper import send as default_send

    send = send or default_send
    for run_id in run_ids:
        with session_scope() as s:
            s.execute(update(Run).where(Run.id == run_id).values(enqueued_at=utcnow(), enqueue_count=1))
        try:
            send(run_id, device)
        except Exception as err:  # broker down: the trial fails, the search goes on (or ends) with it
            with session_scope() as s:
                queries.finish_run(s, run_id, "failed", f"could not enqueue the trial: {type(err).__name__}: {err}",
                                   expect=("queued",))


def _finish(search_id: int, status: str, reason: str) -> None:
    doc = result(search_id)
    summary = {k: doc[k] for k in ("answer", "best", "closest_miss", "pareto")}
    with session_scope() as s:
        s.execute(update(Search).where(Search.id == search_id, Search.status == "running")
                  .values(status=status, reason=reason, finished_at=utcnow(), result=jsonable(summary)))


def jsonable(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {str(k): jsonable(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [jsonable(v) for v in doc]
    if isinstance(doc, float) and not math.isfinite(doc):
        return None
    if isinstance(doc, dt.datetime):
        return doc.isoformat()
    return doc


def after_run(run_id: int) -> None:
    """Called by the worker that ended a run: a trial's end frees a slot of its search."""
    with session_scope() as s:
        row = s.execute(select(Run.search_id, Search.dispatch).join(Search, Search.id == Run.search_id)
                        .where(Run.id == run_id)).first()
    if row is not None and row.dispatch == "celery":
        advance(row.search_id)


def advance_active() -> list[int]:
    """The maintenance loop's pass over the running searches dispatched to workers."""
    with session_scope() as s:
        ids = list(s.scalars(select(Search.id).where(Search.status == "running", Search.dispatch == "celery")))
    created = []
    for search_id in ids:
        try:
            created += advance(search_id)
        except Exception:  # one broken search must not stop the others
            log.exception("search %s could not advance", search_id)
    return created


def cancel(search_id: int) -> str:
    with session_scope() as s:
        res = s.execute(update(Search).where(Search.id == search_id, Search.status == "running")
                        .values(cancel_requested=True))
        if res.rowcount != 1:
            status = s.scalar(select(Search.status).where(Search.id == search_id))
            if status is None:
                raise KeyError(f"search {search_id} not found")
            return f"already {status}"
    advance(search_id)
    return "cancel requested"


def run_local(search_id: int, execute: Callable[[int, str], Any],
              on_trial: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """A search whose trials this process runs one after another with ``execute(run_id, worker)``
    (pipeline.execute_run: ``speedbook tune --local``); trials a crashed earlier caller left
    queued are run too."""
    import os
    import time

    while True:
        advance(search_id)
        with session_scope() as s:
            status = s.scalar(select(Search.status).where(Search.id == search_id))
            queued = list(s.scalars(select(Run.id).where(Run.search_id == search_id, Run.status == "queued")
                                    .order_by(Run.trial_number)))
        if not queued:
            if status in SEARCH_FINAL:
                break
            time.sleep(1.0)  # a trial still running in another process
            continue
        for run_id in queued:
            execute(run_id, f"tune:{os.uname().nodename}")
            if on_trial:
                on_trial(next(t for t in result(search_id)["trials"] if t["run_id"] == run_id))
    return result(search_id)


def save_trial_as_playbook(search_id: int, run_id: int, *, team_id: int = queries.DEFAULT_TEAM_ID) -> int:
    """A trial's configuration as a saved playbook (its steps and gates, no search section)."""
    with session_scope() as s:
        run = s.get(Run, run_id)
        if run is None or run.search_id != search_id:
            raise KeyError(f"run {run_id} is not a trial of search {search_id}")
        data = dict(run.playbook_snapshot)
        data["name"] = f"{run.playbook_name}-tuned-{search_id}-{run.trial_number}"[:100]
        pb = parse_playbook({k: v for k, v in data.items() if k != "scenario"} | {"scenario": data.get("scenario")})
        saved = queries.save_playbook(s, name=pb.name, title=pb.title, yaml_text=pb.to_yaml(), team_id=team_id,
                                      notes=f"from search {search_id}, trial {run.trial_number} (run {run_id})")
        return saved.id
