"""`make soak` (not in CI): the job system under abuse. Submits N runs over W real Celery workers
against a private Redis (no persistence: the worst case) while killing a worker with SIGKILL
every K seconds (a fresh one replaces it) and restarting Redis once, then prints how every run
ended: submitted / succeeded / failed (by reason) / lost (never terminal) / executed twice
(claimed by more than one worker, read from the workers' logs). Exits 1 if any run was lost or
executed twice. Runs measure with one repeat: this checks the plumbing, not the figures."""
from __future__ import annotations

import argparse
import collections
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# compare_torchao off: the soak checks the plumbing, and the torchao peer would triple each run's time
PLAYBOOK = {"name": "soak", "title": "soak",
            "steps": [{"technique": "int8_dynamic", "params": {"compare_torchao": False}}]}
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--kill-every", type=float, default=30.0, help="seconds between SIGKILLs of a random worker")
    ap.add_argument("--workload", default="tiny-llama")
    ap.add_argument("--deadline", type=float, default=7200.0, help="give up waiting after this many seconds")
    args = ap.parse_args()

    data = Path(tempfile.mkdtemp(prefix="speedbook-soak-"))
    port = _free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    env = {**os.environ, "SPEEDBOOK_DATA": str(data), "CELERY_BROKER_URL": broker, "PYTHONUNBUFFERED": "1",
           "SPEEDBOOK_REPEATS": "1", "SPEEDBOOK_WARMUP": "0", "SPEEDBOOK_MIN_TIME_S": "0", "SPEEDBOOK_HEARTBEAT_S": "2",
           "SPEEDBOOK_MAINTENANCE_S": "3", "SPEEDBOOK_STALE_AFTER_S": "20", "SPEEDBOOK_REQUEUE_AFTER_S": "15",
           "SPEEDBOOK_MAX_SENDS": "5", "TRITON_INTERPRET": "1"}
    env.pop("DATABASE_URL", None)
    os.environ.update({k: env[k] for k in ("SPEEDBOOK_DATA", "CELERY_BROKER_URL")})

    def redis_server() -> subprocess.Popen:
        p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        return p

    redis = redis_server()
    from db.migrate import upgrade

    upgrade()
    serial = iter(range(10_000))

    def worker() -> subprocess.Popen:
        n = next(serial)
        log = open(data / f"worker-{n}.log", "w")
        return subprocess.Popen([sys.executable, "-m", "jobs.cli", "worker", "--name", f"soak{n}@host", "--loglevel", "INFO"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    workers = [worker() for _ in range(args.workers)]
    from jobs import pipeline, submit

    t0 = time.monotonic()
    ids, refused = [], 0
    for _ in range(args.runs):
        try:
            ids.append(submit.submit(PLAYBOOK, args.workload, "cpu"))
        except Exception as err:  # noqa: BLE001 - counted, the run row says why
            refused += 1
            print(f"submission refused: {type(err).__name__}: {err}", file=sys.stderr)
    print(f"submitted {len(ids)} runs in {time.monotonic() - t0:.1f} s ({refused} refused at submission)", flush=True)

    from db import queries
    from db.session import session_scope

    def statuses() -> dict[int, tuple[str, str]]:
        with session_scope() as s:
            return {r.id: (r.status, r.error or "") for r in queries.list_runs(s, limit=args.runs + 10)}

    kills, redis_restarted, last_kill = 0, False, time.monotonic()
    while time.monotonic() - t0 < args.deadline:
        st = statuses()
        done = sum(1 for i in ids if st.get(i, ("",))[0] in TERMINAL)
        if done == len(ids):
            break
        now = time.monotonic()
        if now - last_kill > args.kill_every:
            victim = random.randrange(len(workers))
            os.killpg(workers[victim].pid, signal.SIGKILL)
            workers[victim] = worker()
            kills, last_kill = kills + 1, now
            print(f"[{now - t0:6.0f} s] killed a worker ({kills}); {done}/{len(ids)} runs ended", flush=True)
        if not redis_restarted and done >= len(ids) // 3:
            redis.terminate()
            redis.wait(10)
            redis = redis_server()
            redis_restarted = True
            print(f"[{now - t0:6.0f} s] restarted Redis without persistence (queued messages gone)", flush=True)
        time.sleep(2)
    for w in workers:
        try:
            os.killpg(w.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for w in workers:
        try:
            w.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(w.pid, signal.SIGKILL)
    redis.terminate()

    st = statuses()
    claims = collections.Counter()
    for f in data.glob("worker-*.log"):
        claims.update(int(m) for m in re.findall(r"run (\d+) claimed by", f.read_text(errors="replace")))
    ended = collections.Counter(st[i][0] for i in ids)
    reasons = collections.Counter(re.sub(r"\d+", "N", st[i][1])[:90] for i in ids if st[i][0] == "failed")
    lost = [i for i in ids if st[i][0] not in TERMINAL]
    twice = [i for i, n in claims.items() if n > 1]
    print(f"\nsoak: {len(ids)} runs, {args.workers} workers, {kills} SIGKILLs, Redis restarted once: {redis_restarted}, "
          f"{time.monotonic() - t0:.0f} s, data in {data}")
    print(f"submitted {len(ids)} / succeeded {ended['succeeded']} / failed {ended['failed']} / "
          f"timed_out {ended['timed_out']} / lost {len(lost)} / executed twice {len(twice)}")
    for reason, n in reasons.most_common():
        print(f"  failed {n:4d}: {reason}")
    return 1 if lost or twice else 0


if __name__ == "__main__":
    sys.exit(main())
