"""A real Celery worker process against the embedded SQLite broker and the real Redis:
a submitted run succeeds with its rows; a worker killed with SIGKILL mid-run leaves a run
the reaper fails, finished steps intact, nothing duplicated; a soft time limit times out."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import REDIS_URL, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PB = {"name": "int8-x", "title": "int8", "steps": [{"technique": "int8_dynamic", "params": {}}]}


def _env(data: Path, broker: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "SPEEDBOOK_DATA": str(data), "CELERY_BROKER_URL": broker, "SPEEDBOOK_HEARTBEAT_S": "1",
           "SPEEDBOOK_MAINTENANCE_S": "1", "PYTHONUNBUFFERED": "1", **extra}
    env.pop("DATABASE_URL", None)
    return env


def _wait(pred, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode} while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


STARTED: list[subprocess.Popen] = []  # every worker a test started; tests/jobs/conftest.py stops leftovers


class Harness:
    """A data directory, its database, a broker URL and a worker process."""

    def __init__(self, tmp: Path, broker: str, **env: str) -> None:
        self.data, self.broker = tmp, broker
        self.env = _env(tmp, broker, **env)
        self.db_url = f"sqlite:///{tmp / 'speedbook.db'}"
        from db.migrate import upgrade

        upgrade(self.db_url)
        self.proc: subprocess.Popen | None = None

    def start_worker(self, name: str = "itest") -> None:
        log = open(self.data / f"{name}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "worker", "--pool", "prefork", "--name", f"{name}@host", "--loglevel", "INFO"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        STARTED.append(self.proc)
        _wait(lambda: self.scalar("SELECT count(*) FROM workers WHERE name = :n", n=f"{name}@host"), 120, "worker registration", self.proc)

    def stop_worker(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def scalar(self, sql: str, **params):
        engine = sa.create_engine(self.db_url)
        try:
            with engine.connect() as c:
                return c.execute(sa.text(sql), params).scalar()
        finally:
            engine.dispose()

    def submit(self, playbook: dict) -> int:
        """Write the Run row, commit, then send a JSON message with only the id."""
        from db import queries
        from db.session import session_scope
        from jobs.submit import validate_request

        pb = validate_request(playbook, "tiny-llama", "cpu")
        with session_scope(self.db_url) as s:
            run_id = queries.create_run(s, playbook_name=pb.name, snapshot=pb.model_dump(), workload="tiny-llama", device="cpu").id
        from celery import Celery

        sender = Celery("submit", broker=self.broker)
        sender.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True)
        sender.send_task("speedbook.run_playbook", args=[run_id], queue="cpu")
        return run_id

    def status(self, run_id: int) -> str:
        return self.scalar("SELECT status FROM runs WHERE id = :i", i=run_id)


@pytest.fixture
def redis_broker():
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    yield REDIS_URL
    r.flushdb()


@pytest.mark.parametrize("broker_kind", ["sqlite", "redis"])
def test_worker_runs_a_submitted_playbook(tmp_path, broker_kind, request):
    broker = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}" if broker_kind == "sqlite" else request.getfixturevalue("redis_broker")
    h = Harness(tmp_path, broker)
    h.start_worker()
    try:
        run_id = h.submit(PB)
        _wait(lambda: h.status(run_id) in ("succeeded", "failed"), 240, "the run to finish", h.proc)
        assert h.status(run_id) == "succeeded", h.scalar("SELECT error FROM runs WHERE id = :i", i=run_id)
        assert h.scalar("SELECT count(*) FROM metrics WHERE run_id = :i AND phase = 'baseline'", i=run_id) >= 6
        assert h.scalar("SELECT value FROM metrics WHERE run_id = :i AND phase = 'step' AND name = 'stored_bytes'", i=run_id) > 0
        assert h.scalar("SELECT worker FROM runs WHERE id = :i", i=run_id) == "itest@host"
        assert "cpu" in h.scalar("SELECT queues FROM workers")
    finally:
        h.stop_worker()


def test_sigkilled_worker_run_is_reaped_with_finished_steps_kept(tmp_path):
    # many steps make the run long enough to kill the worker after its first step, before its last
    h = Harness(tmp_path, f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}")
    h.start_worker()
    steps = [{"technique": "magnitude_pruning", "params": {"amount": 0.1}}] * 8  # composable with itself
    run_id = h.submit({**PB, "steps": steps})
    try:
        _wait(lambda: h.scalar("SELECT count(*) FROM step_results WHERE run_id = :i AND status = 'succeeded'", i=run_id) >= 1,
              240, "the first step to finish", h.proc)
    finally:
        h.stop_worker(signal.SIGKILL)  # the whole process group, as a crashed machine
    assert h.status(run_id) == "running"
    steps_done = h.scalar("SELECT count(*) FROM step_results WHERE run_id = :i AND status = 'succeeded'", i=run_id)
    metrics_before = h.scalar("SELECT count(*) FROM metrics WHERE run_id = :i", i=run_id)

    from db import queries
    from db.session import session_scope

    time.sleep(3)
    with session_scope(h.db_url) as s:
        assert queries.reap_stale_runs(s, stale_after_s=2) == [run_id]
    assert h.status(run_id) == "failed"
    error = h.scalar("SELECT error FROM runs WHERE id = :i", i=run_id)
    assert 1 <= steps_done < len(steps)
    assert "stopped responding" in error and f"{steps_done} of {len(steps)} steps" in error
    assert h.scalar("SELECT count(*) FROM step_results WHERE run_id = :i AND status = 'succeeded'", i=run_id) == steps_done
    assert h.scalar("SELECT count(*) FROM metrics WHERE run_id = :i", i=run_id) == metrics_before
    assert h.scalar("SELECT count(*) FROM step_results WHERE run_id = :i", i=run_id) == len(steps)  # nothing duplicated


def test_soft_time_limit_times_the_run_out(tmp_path):
    h = Harness(tmp_path, f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}", SPEEDBOOK_TASK_SOFT_LIMIT_S="4",
                SPEEDBOOK_REPEATS="500")
    h.start_worker()
    try:
        run_id = h.submit(PB)
        _wait(lambda: h.status(run_id) not in ("queued", "running"), 180, "the time limit", h.proc)
        assert h.status(run_id) == "timed_out"
        assert "time limit" in h.scalar("SELECT error FROM runs WHERE id = :i", i=run_id)
    finally:
        h.stop_worker()
