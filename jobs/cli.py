"""The ``speedbook`` command line: the same pipeline as the web app, headless.
With ``--json`` each command prints exactly one JSON document on stdout."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


def _fail(msg: str, as_json: bool) -> int:
    if as_json:
        _print_json({"error": msg})
    else:
        print(f"error: {msg}", file=sys.stderr)
    return 2


def resolve_playbook(ref: str):
    """A YAML path, the name of a playbook in the library, or the name of an executable technique
    (a one-step playbook running it at its defaults: ``speedbook run gptq --workload smollm2-135m``)."""
    from optimizers import registry
    from playbooks.schema import library, load_playbook, parse_playbook

    p = Path(ref)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return load_playbook(p)
    lib = library()
    if ref in lib:
        return lib[ref]
    if ref in registry.names():
        return parse_playbook({"name": ref.replace("_", "-"), "title": f"{ref} at its defaults",
                               "steps": [{"technique": ref}]})
    from playbooks.errors import PlaybookError

    raise PlaybookError(f"playbook {ref!r} is neither a YAML file, a library playbook ({', '.join(lib)}) "
                        f"nor a technique ({', '.join(registry.names())})")


# ---------------------------------------------------------------- run

def cmd_run(args: argparse.Namespace) -> int:
    from db import queries
    from db.migrate import upgrade
    from db.session import session_scope
    from jobs import pipeline, submit

    try:
        pb = submit.validate_request(resolve_playbook(args.playbook), args.workload, args.device, args.scenario)
    except ValueError as err:
        return _fail(str(err), args.json)
    upgrade()
    try:
        run_id = submit.create_run(pb, args.workload, args.device, baseline_dtype=args.baseline_dtype)
    except ValueError as err:
        return _fail(str(err), args.json)
    if not args.json:
        print(f"run {run_id}: {pb.name} on {args.workload} ({args.device}) …", file=sys.stderr)
    pipeline.execute_run(run_id, worker=f"cli:{os.uname().nodename}")
    with session_scope() as s:
        summary = queries.run_summary(queries.get_run(s, run_id))
    summary["artifacts"] = pipeline.artifacts(run_id)
    if args.json:
        _print_json(summary)
    else:
        print(format_summary(summary))
    if summary["status"] != "succeeded":
        return 1
    return 3 if summary["gates_verdict"] == "missed" else 0  # executed, but missed a goal: scripts must see it


def format_summary(summary: dict[str, Any]) -> str:
    from optimizers.metrics import spec

    lines = [f"run {summary['run_id']}  {summary['status']}  gates {summary.get('gates_verdict', 'not checked').upper()}  "
             f"playbook={summary['playbook']}  workload={summary['workload']}  device={summary['device']}"]
    if summary["status"] == "succeeded" and not summary.get("executed", True):
        lines.append("nothing executed here: every step is advice-only or cannot run on this target")
    if summary.get("error"):
        lines.append(f"error: {summary['error']}")
    base = summary["baseline"]
    cols = [s for s in summary["steps"]]
    lines.append(f"{'metric':<24}{'baseline':>14}" + "".join(f"{c['technique'][:16]:>18}" for c in cols))
    for name in base:
        row = f"{name:<24}{base[name]:>14.5g}"
        for c in cols:
            v = c["metrics"].get(name)
            if v is None:
                row += f"{c['status']:>18}"
            elif base[name] and name not in ("kl_divergence", "top1_agreement", "output_rel_error"):
                row += f"{v:>10.5g} ×{v / base[name]:<6.3f}"
            else:
                row += f"{v:>18.5g}"
        lines.append(row + f"  {spec(name).unit}")
    fid = {k for c in cols for k in c["metrics"] if k not in base}
    for name in sorted(fid):
        lines.append(f"{name:<24}{'—':>14}" + "".join(f"{c['metrics'].get(name, float('nan')):>18.5g}" for c in cols))
    for path in summary.get("artifacts", []):
        lines.append(f"artifact: {path}")
    for g in summary.get("gates", []):
        lines.append(f"expect {'—   ' if g['ok'] is None else ('ok  ' if g['ok'] else 'MISS')} {g['detail']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- tune

def cmd_tune(args: argparse.Namespace) -> int:
    """A search over the playbook's ``search:`` space: trials go to the workers (or run here with
    --local), progress on stderr, the answer (best, or closest miss, and the Pareto front) at the end."""
    import time

    from db.migrate import upgrade
    from db.session import session_scope
    from jobs import search

    upgrade()
    try:
        pb = resolve_playbook(args.playbook)
        if not args.local:
            from db import queries
            from jobs.celery_app import queue_for

            with session_scope() as s:
                if not any(queue_for(args.device) in (w.queues or []) for w in queries.live_workers(s)):
                    return _fail(f"no live {args.device} worker has been seen in the last minute: start one "
                                 "(`speedbook worker`, or `make run`), or pass --local to run the trials here", args.json)
        search_id = search.start(pb, args.workload, args.device, scenario=args.scenario,
                                 dispatch="local" if args.local else "celery", strategy=args.strategy,
                                 max_trials=args.trials, max_minutes=args.minutes, seed=args.seed,
                                 parallel=args.parallel, stop_when_met=True if args.stop_when_met else None)
    except ValueError as err:
        return _fail(str(err), args.json)

    def progress(t: dict[str, Any]) -> None:
        if not args.json:
            cfg = ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in t["config"].items())
            print(f"trial {t['trial']:>3}  run {t['run_id']:<5} {t['status']:<10} gates {t['gates_verdict'] or '—':<12} {cfg}",
                  file=sys.stderr, flush=True)

    if not args.json:
        print(f"search {search_id}: {pb.name} on {args.workload} ({args.device}) …", file=sys.stderr)
    try:
        if args.local:
            from jobs import pipeline

            doc = search.run_local(search_id, pipeline.execute_run, on_trial=progress)
        else:
            seen: set[int] = set()
            while True:
                doc = search.result(search_id)
                for t in doc["trials"]:
                    if t["run_id"] not in seen and t["status"] in ("succeeded", "failed", "cancelled", "timed_out"):
                        seen.add(t["run_id"])
                        progress(t)
                if doc["status"] in search.SEARCH_FINAL:
                    break
                search.advance(search_id)  # the workers advance it too; this catches a quiet moment
                time.sleep(2.0)
    except KeyboardInterrupt:
        search.cancel(search_id)
        return _fail(f"search {search_id} cancelled", args.json)
    if args.json:
        _print_json(search.jsonable(doc))
    else:
        print(format_search(doc))
    return 0 if doc["best"] else 3  # no configuration met every gate: the closest miss is printed


def format_search(doc: dict[str, Any]) -> str:
    lines = [f"search {doc['search_id']}  {doc['status']}  ({doc['reason']})  {len(doc['trials'])} trials  "
             f"strategy={doc['strategy']}"]
    names = [o["metric"] for o in doc["objectives"]]
    lines.append(f"{'trial':>5} {'run':>5} {'status':<10} {'gates':<8}" + "".join(f"{n[:18]:>20}" for n in names) + "  config")
    for t in doc["trials"]:
        vals = "".join(f"{'—':>20}" if t["objectives"] is None else f"{'×%.3g' % abs(v):>20}" for v in (t["objectives"] or names))
        mark = " *" if doc["best"] and doc["best"]["run_id"] == t["run_id"] else (" P" if t["run_id"] in doc["pareto"] else "")
        cfg = ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in t["config"].items())
        lines.append(f"{t['trial']:>5} {t['run_id']:>5} {t['status']:<10} {('met' if t['meets_gates'] else 'missed'):<8}{vals}  {cfg}{mark}")
    lines.append("(objectives as ratios to each trial's own baseline; * best, P on the Pareto front)")
    pick = doc["best"] or doc["closest_miss"]
    if pick is None:
        lines.append("no trial finished: nothing to recommend")
    else:
        what = "best configuration meeting every gate" if doc["best"] else "no trial met every gate; closest miss"
        lines.append(f"{what}: trial {pick['trial']} (run {pick['run_id']}): "
                     + ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in pick["config"].items()))
        for g in pick["gates"]:
            off = "not measured" if g["shortfall"] is None else ("met" if g["shortfall"] == 0 else f"off by {g['shortfall']:.1%}")
            lines.append(f"  {g['metric']}: {off}")
    return "\n".join(lines)


# ---------------------------------------------------------------- services

def cmd_worker(args: argparse.Namespace) -> int:
    import torch

    if not torch.cuda.is_available():
        # a CPU worker can run Triton kernels only in the interpreter, and Triton fixes that
        # mode when it is first imported (torchao and peft import it), so decide it up front
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from db.migrate import upgrade
    from jobs.celery_app import app

    upgrade()
    queues = args.queues or ("gpu,cpu" if torch.cuda.is_available() else "cpu")
    worker = app.Worker(queues=queues.split(","), pool_cls=args.pool, concurrency=1, loglevel=args.loglevel,
                        hostname=args.name, without_gossip=True, without_mingle=True)
    worker.start()
    return worker.exitcode or 0  # non-zero on an unrecoverable error, so supervisors restart the worker


def streamlit_cmd(port: int, address: str = "127.0.0.1") -> list[str]:
    """Streamlit without its file watcher: watching the whole tree (the .venv too) cost most of a
    core per open tab, on the cores the worker times runs on (issue 16)."""
    return [sys.executable, "-m", "jobs.webserver", "run", str(ROOT / "app.py"), "--server.address", address,
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--server.runOnSave", "false",
            "--client.toolbarMode", "minimal"]  # no Deploy button, no developer menu: a tool, not a Streamlit demo


def cmd_web(args: argparse.Namespace) -> int:
    from db.migrate import upgrade

    upgrade()
    return subprocess.call(streamlit_cmd(args.port, args.address))


def worker_envs(workers: int, cores: int, env: dict[str, str] | None = None) -> list[dict[str, str]]:
    """One environment per local worker: the cores shared out (``SPEEDBOOK_THREADS``, at least 1
    each) so parallel trials never oversubscribe them; a ``SPEEDBOOK_THREADS`` already set wins."""
    if workers < 1:
        raise ValueError(f"--workers={workers} must be at least 1")
    env = dict(os.environ if env is None else env)
    threads = env.get("SPEEDBOOK_THREADS") or str(max(1, cores // workers))
    return [{**env, "SPEEDBOOK_THREADS": threads} for _ in range(workers)]


def cmd_dev(args: argparse.Namespace) -> int:
    """`make run`: migrate, then the workers and the web app; Ctrl-C stops them all."""
    from db.migrate import upgrade
    from db.session import database_url
    from jobs.celery_app import broker_url

    upgrade()
    try:
        envs = worker_envs(args.workers, len(os.sched_getaffinity(0)))
    except ValueError as err:
        return _fail(str(err), False)
    print(f"database: {database_url()}\nbroker:   {broker_url()}\nweb:      http://{args.address}:{args.port}\n"
          f"workers:  {args.workers} × {envs[0]['SPEEDBOOK_THREADS']} thread(s) (--workers / SPEEDBOOK_WORKERS; "
          "a search runs one trial per worker)", flush=True)
    procs = [subprocess.Popen([sys.executable, "-m", "jobs.cli", "worker"], env=e, start_new_session=True) for e in envs]
    procs.append(subprocess.Popen(streamlit_cmd(args.port, args.address), start_new_session=True))

    stopping = []

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)  # explicit: a background shell may have ignored SIGINT
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping and all(p.poll() is None for p in procs):
        try:
            procs[-1].wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
    print("stopped the workers and the web app", flush=True)
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from db.migrate import upgrade

    upgrade()
    print("database migrated to head")
    return 0


def cmd_reap(args: argparse.Namespace) -> int:
    from db import queries
    from db.session import session_scope

    with session_scope() as s:
        reaped = queries.reap_stale_runs(s, stale_after_s=args.stale_after)
    print(json.dumps({"reaped": reaped}))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from db import queries
    from db.session import session_scope

    with session_scope() as s:
        try:
            print(queries.cancel_run(s, args.run_id))
        except KeyError as err:
            return _fail(str(err), False)
    return 0


# ---------------------------------------------------------------- knowledge

def cmd_recommend(args: argparse.Namespace) -> int:
    from playbooks.guide import recommend_json

    try:
        doc = recommend_json(args.constraints, limit=args.limit)
    except (ValueError, FileNotFoundError) as err:
        return _fail(str(err), args.json)
    if args.json:
        _print_json(doc)
        return 0
    for i, rec in enumerate(doc["recommendations"], 1):
        print(f"{i}. {rec['title']} ({rec['playbook']})  score {rec['score']:.2f}")
        for st in rec["steps"]:
            print(f"     - {st['technique']:<28} {st['verdict']}")
        for reason in rec["reasons"]:
            print(f"     why: {reason}")
        for warning in rec["warnings"]:
            print(f"     warning: {warning}")
    if not doc["recommendations"]:
        print("no playbook in the library matches these constraints")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from playbooks.estimate import estimate

    try:
        doc = estimate(args.model, args.hardware, count=args.count, context=args.context)
    except (ValueError, KeyError, FileNotFoundError) as err:
        return _fail(str(err).strip("'\""), args.json)
    if args.json:
        _print_json(doc)
        return 0
    print(f"{args.model} on {args.count} × {args.hardware} (estimated)")
    for key, value in doc.items():
        if isinstance(value, dict):
            print(f"  {key}:")
            for k, v in value.items():
                print(f"    {k:<24} {v:,.6g}" if isinstance(v, (int, float)) else f"    {k:<24} {v}")
        else:
            print(f"  {key:<26} {value:,.6g}" if isinstance(value, (int, float)) else f"  {key:<26} {value}")
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    from playbooks import catalog

    doc = catalog.catalog_json()
    if args.json:
        _print_json(doc)
        return 0
    for e in doc["entries"]:
        status = e["status"] + (f" → {e['technique']}" if e.get("technique") else "")
        print(f"{e['id']:<32} {e['family']:<16} {status}")
    return 0


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="speedbook", description="Deep-model optimization playbooks, run and measured.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a playbook in-process and store it in the database")
    r.add_argument("playbook", help="playbook YAML file, library playbook name, or a technique name (run at its defaults)")
    r.add_argument("--workload", required=True, help="built-in workload (e.g. ref-lm), local dir or HF id")
    r.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    r.add_argument("--scenario", default=None, choices=["inference", "serving", "training"],
                   help="the protocol the run is judged in (default: from the playbook's when.goal and the workload)")
    r.add_argument("--baseline-dtype", default=None, choices=["fp32", "bf16", "fp16"],
                   help="precision of the baseline every step is compared with (default fp32 on CPU, bf16 on CUDA)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("tune", help="search a playbook's search: space; trials run on the workers (or --local)")
    t.add_argument("playbook", help="playbook YAML file or library playbook name with a search: section")
    t.add_argument("--workload", required=True)
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    t.add_argument("--scenario", default=None, choices=["inference", "serving", "training"])
    t.add_argument("--strategy", default=None, choices=["grid", "random", "tpe"], help="default: the playbook's")
    t.add_argument("--trials", type=int, default=None, help="max trials (default: the playbook's max_trials)")
    t.add_argument("--minutes", type=float, default=None, help="no new trial after this many minutes")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--parallel", type=int, default=None, help="trials at once (default: the live workers)")
    t.add_argument("--stop-when-met", action="store_true", help="stop once a trial meets every gate")
    t.add_argument("--local", action="store_true", help="run the trials in this process, one after another")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_tune)

    w = sub.add_parser("worker", help="start a Celery worker")
    w.add_argument("--queues", default=None, help="comma-separated; default gpu,cpu with CUDA else cpu")
    w.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"], help="prefork enforces time limits")
    w.add_argument("--loglevel", default="INFO")
    w.add_argument("--name", default=f"speedbook@{os.uname().nodename}-{os.getpid()}")
    w.set_defaults(func=cmd_worker)

    for name, fn, help_ in (("web", cmd_web, "start the web app"), ("dev", cmd_dev, "web app + one worker (make run)")):
        x = sub.add_parser(name, help=help_)
        x.add_argument("--port", type=int, default=int(os.environ.get("SPEEDBOOK_PORT", "8501")))
        x.add_argument("--address", default="127.0.0.1")
        if name == "dev":
            x.add_argument("--workers", type=int, default=int(os.environ.get("SPEEDBOOK_WORKERS", "2")),
                           help="local workers, the cores shared out between them (default 2: a search runs two "
                                "trials at once; 1 gives one run every core)")
        x.set_defaults(func=fn)

    d = sub.add_parser("db", help="apply database migrations")
    d.add_argument("action", choices=["upgrade"])
    d.set_defaults(func=cmd_db)

    rp = sub.add_parser("reap", help="fail runs whose worker stopped heartbeating")
    rp.add_argument("--stale-after", type=float, default=90.0)
    rp.set_defaults(func=cmd_reap)

    rc = sub.add_parser("recommend", help="ranked playbooks for a constraints file (YAML or JSON)")
    rc.add_argument("--constraints", required=True, help="constraints file, see examples/")
    rc.add_argument("--limit", type=int, default=None)
    rc.add_argument("--json", action="store_true")
    rc.set_defaults(func=cmd_recommend)

    es = sub.add_parser("estimate", help="memory and speed bounds for a model on hardware")
    es.add_argument("--model", required=True, help="model-table name or a config.json path")
    es.add_argument("--hardware", required=True, help="hardware-table name, e.g. H100 or CPU")
    es.add_argument("--count", type=int, default=1)
    es.add_argument("--context", type=int, default=None, help="context length for KV-cache figures")
    es.add_argument("--json", action="store_true")
    es.set_defaults(func=cmd_estimate)

    ca = sub.add_parser("catalog", help="every technique of the taxonomy and whether it runs here")
    ca.add_argument("--json", action="store_true")
    ca.set_defaults(func=cmd_catalog)

    c = sub.add_parser("cancel", help="cancel a queued or running run")
    c.add_argument("run_id", type=int)
    c.set_defaults(func=cmd_cancel)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
