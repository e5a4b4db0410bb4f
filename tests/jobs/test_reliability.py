"""Reliability against real services: a poison message does not stop a worker (it becomes a
dead letter), a SIGKILLed worker or a Redis restart without persistence loses no run and
executes none twice (late acks + atomic claim + the sweeper), and a broker that accepts
connections but never answers fails a submission within seconds."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

from tests.jobs.test_worker_integration import PB, Harness, _wait, redis_broker  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")
FAST = {"SPEEDBOOK_REQUEUE_AFTER_S": "3", "SPEEDBOOK_STALE_AFTER_S": "6", "SPEEDBOOK_MAINTENANCE_S": "1"}


def _publish_raw(broker: str, body, content_type: str = "application/json", headers: dict | None = None) -> None:
    from kombu import Connection, Exchange, Queue

    hdrs = {"task": "speedbook.run_playbook", "id": uuid.uuid4().hex} if headers is None else headers
    with Connection(broker) as conn:
        conn.Producer().publish(body if isinstance(body, (bytes, str)) else json.dumps(body), exchange="",
                                routing_key="cpu", declare=[Queue("cpu", Exchange("cpu"), "cpu")], headers=hdrs, content_type=content_type,
                                content_encoding="utf-8", serializer=None)


def _broken_envelope(broker: str) -> None:
    """A queue entry that is not a JSON envelope at all, written where the transport reads."""
    if broker.startswith("redis"):
        import redis

        redis.Redis.from_url(broker).lpush("cpu", b"\x00this is not JSON{")
    else:
        import sqlalchemy as sa

        engine = sa.create_engine(broker.removeprefix("sqla+"))
        with engine.begin() as c:
            qid = c.execute(sa.text("SELECT id FROM kombu_queue WHERE name = 'cpu'")).scalar()
            c.execute(sa.text("INSERT INTO kombu_message (visible, timestamp, payload, version, queue_id) "
                              "VALUES (1, CURRENT_TIMESTAMP, 'not JSON{', 1, :q)"), {"q": qid})
        engine.dispose()


@pytest.fixture
def broker_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    return request.getfixturevalue("redis_broker")


@pytest.mark.parametrize("broker_url", ["sqlite", "redis"], indirect=True)
def test_poison_messages_become_dead_letters_and_the_worker_keeps_serving(tmp_path, broker_url):
    h = Harness(tmp_path, broker_url, **FAST)
    h.start_worker()
    try:
        _publish_raw(broker_url, 42)
        _publish_raw(broker_url, [[1], {}])
        _publish_raw(broker_url, b"not json at all")
        _publish_raw(broker_url, [["../../etc/passwd"], {}, {}])
        _publish_raw(broker_url, [[1], {}, {}], content_type="application/x-python-serialize")
        _broken_envelope(broker_url)
        _wait(lambda: h.scalar("SELECT count(*) FROM dead_letters") >= 5, 60, "dead letters", h.proc)
        run_id = h.submit(PB)  # the same worker still serves
        _wait(lambda: h.status(run_id) in TERMINAL, 240, "the run to finish", h.proc)
        assert h.status(run_id) == "succeeded"
        assert h.proc.poll() is None
        reasons = h.scalar("SELECT group_concat(reason, ' | ') FROM dead_letters")
        assert "body must be a JSON list" in reasons and "one argument" in reasons, reasons
    finally:
        h.stop_worker()


def _executed_once(h: Harness, run_ids: list[int], steps: dict[int, int] | None = None) -> None:
    """Every run terminal, with one row per playbook step (``steps``: runs with more than one)."""
    for run_id in run_ids:
        assert h.status(run_id) in TERMINAL, (run_id, h.status(run_id))
        # one baseline per execution; the unique constraint would refuse a second set, so count steps' rows too
        assert h.scalar("SELECT count(*) FROM step_results WHERE run_id = :i", i=run_id) == (steps or {}).get(run_id, 1)


@pytest.mark.parametrize("broker_url", ["sqlite", "redis"], indirect=True)
def test_sigkill_with_queued_runs_loses_nothing(tmp_path, broker_url):
    h = Harness(tmp_path, broker_url, **FAST)
    h.start_worker("first")
    try:
        # the first run is long (many steps) so it is still running when its worker is killed, with the
        # other two prefetched behind it; those two are short, so the second worker finishes them quickly
        runs = [h.submit({**PB, "steps": PB["steps"] * 12})] + [h.submit(PB) for _ in range(2)]
        _wait(lambda: h.status(runs[0]) == "running", 120, "the first run to start", h.proc)
    finally:
        h.stop_worker(signal.SIGKILL)
    h.start_worker("second")
    try:
        _wait(lambda: all(h.status(r) in TERMINAL for r in runs), 420, "every run to end", h.proc)
    finally:
        h.stop_worker()
    _executed_once(h, runs, {runs[0]: 12})
    assert [h.status(r) for r in runs[1:]] == ["succeeded", "succeeded"]
    assert h.status(runs[0]) == "failed" and "stopped responding" in h.scalar("SELECT error FROM runs WHERE id = :i", i=runs[0])


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server to start a private Redis")
def test_redis_restart_without_persistence_loses_no_queued_run(tmp_path):
    port = _free_port()
    def redis_server():
        return subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    servers = [redis_server()]
    broker = f"redis://127.0.0.1:{port}/0"
    h = None
    try:
        _wait(lambda: _redis_up(broker), 20, "the private Redis")
        h = Harness(tmp_path, broker, **FAST)
        runs = [h.submit(PB) for _ in range(3)]  # queued before any worker exists
        servers[0].terminate()
        servers[0].wait(10)
        servers.append(redis_server())  # empty: the messages are gone
        _wait(lambda: _redis_up(broker), 20, "the restarted Redis")
        h.start_worker()
        _wait(lambda: all(h.status(r) in TERMINAL for r in runs), 420, "every run to end", h.proc)
        assert [h.status(r) for r in runs] == ["succeeded"] * 3
        assert all(h.scalar("SELECT enqueue_count FROM runs WHERE id = :i", i=r) == 1 for r in runs)  # one re-send each
        _executed_once(h, runs)
    finally:
        if h is not None:
            h.stop_worker()
        for server in servers:
            server.terminate()


def test_silent_broker_fails_submission_within_seconds(tmp_path, monkeypatch):
    """A socket that accepts connections and never answers (a hung broker)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    code = f"""
import sys, time
from jobs import pipeline, submit
from db import queries
from db.migrate import upgrade
from db.session import session_scope
upgrade()
t0 = time.monotonic()
try:
    submit.submit({PB!r}, "tiny-llama", "cpu")
except Exception as err:
    print("refused", round(time.monotonic() - t0, 1), type(err).__name__)
with session_scope() as s:
    run = queries.list_runs(s)[0]
    print("status", run.status, run.error[:60] if run.error else "")
"""
    env = {"CELERY_BROKER_URL": f"redis://127.0.0.1:{srv.getsockname()[1]}/0", "SPEEDBOOK_DATA": str(tmp_path)}
    import os
    import sys

    from tests.conftest import ROOT

    try:
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                             text=True, timeout=120)
    finally:
        stop.set()
        srv.close()
        [c.close() for c in held]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert "refused" in lines, out.stdout + out.stderr[-2000:]
    assert float(lines["refused"].split()[0]) < 30  # observed ~11 s: 5 s socket timeout, bounded retries
    assert lines["status"].startswith("failed could not enqueue the run")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_up(url: str) -> bool:
    import redis

    try:
        return redis.Redis.from_url(url, socket_timeout=1).ping()
    except redis.RedisError:
        return False
