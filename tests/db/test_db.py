"""The database layer on SQLite and the real PostgreSQL: migrations, runs, metrics,
uniqueness, the reaper and cancel."""
from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from db import queries
from db.models import Metric, Run
from db.session import session_scope

SNAPSHOT = {"name": "p", "title": "P", "steps": [{"technique": "int8_dynamic", "params": {}}, {"technique": "gqa", "params": {}}]}


def _new_run(url: str) -> int:
    with session_scope(url) as s:
        return queries.create_run(s, playbook_name="p", snapshot=SNAPSHOT, workload="tiny-llama", device="cpu").id


def test_migrations_create_every_table(any_db_url):
    tables = set(sa.inspect(sa.create_engine(any_db_url)).get_table_names())
    assert {"teams", "playbooks", "runs", "step_results", "metrics", "workers", "alembic_version"} <= tables


def test_sqlite_uses_wal(migrated_sqlite):
    from db.session import get_engine

    with get_engine(migrated_sqlite).connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_run_lifecycle_and_summary(any_db_url):
    run_id = _new_run(any_db_url)
    with session_scope(any_db_url) as s:
        assert queries.claim_run(s, run_id, "w1")
        assert not queries.claim_run(s, run_id, "w2")  # a second worker never takes it
        queries.write_metrics(s, run_id, "baseline", {"perplexity": 10.0, "stored_bytes": 100.0})
        queries.write_metrics(s, run_id, "step", {"perplexity": 10.5}, step_index=0)
        queries.finish_run(s, run_id, "succeeded")
    with session_scope(any_db_url) as s:
        summary = queries.run_summary(queries.get_run(s, run_id))
    assert summary["status"] == "succeeded"
    assert summary["baseline"] == {"perplexity": 10.0, "stored_bytes": 100.0}
    assert summary["steps"][0]["metrics"] == {"perplexity": 10.5}
    assert [st["technique"] for st in summary["steps"]] == ["int8_dynamic", "gqa"]


def test_metric_rows_are_unique(any_db_url):
    run_id = _new_run(any_db_url)
    with pytest.raises(IntegrityError):
        with session_scope(any_db_url) as s:
            queries.write_metrics(s, run_id, "step", {"perplexity": 1.0}, step_index=0)
            queries.write_metrics(s, run_id, "step", {"perplexity": 2.0}, step_index=0)
    with session_scope(any_db_url) as s:
        assert s.scalar(sa.select(sa.func.count(Metric.id))) == 0  # rolled back whole


def test_reaper_fails_stale_runs_and_keeps_finished_steps(any_db_url):
    run_id = _new_run(any_db_url)
    with session_scope(any_db_url) as s:
        queries.claim_run(s, run_id, "w1")
        run = s.get(Run, run_id)
        run.steps[0].status = "succeeded"
        run.steps[1].status = "running"
        queries.write_metrics(s, run_id, "step", {"perplexity": 3.0}, step_index=0)
    later = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(seconds=300)
    with session_scope(any_db_url) as s:
        assert queries.reap_stale_runs(s, stale_after_s=90, now=later) == [run_id]
    with session_scope(any_db_url) as s:
        run = queries.get_run(s, run_id)
        assert run.status == "failed" and "no heartbeat" in run.error and "1 of 2 steps" in run.error
        assert [st.status for st in run.steps] == ["succeeded", "failed"]
        assert len(run.metrics) == 1
        assert queries.reap_stale_runs(s, stale_after_s=90, now=later) == []  # nothing twice


def test_fresh_heartbeat_is_not_reaped(any_db_url):
    run_id = _new_run(any_db_url)
    with session_scope(any_db_url) as s:
        queries.claim_run(s, run_id, "w1")
        assert queries.reap_stale_runs(s, stale_after_s=90) == []


def test_cancel_queued_and_running(any_db_url):
    a, b = _new_run(any_db_url), _new_run(any_db_url)
    with session_scope(any_db_url) as s:
        assert queries.cancel_run(s, a) == "cancelled"
        queries.claim_run(s, b, "w")
        assert queries.cancel_run(s, b) == "cancel requested"
    with session_scope(any_db_url) as s:
        assert s.get(Run, a).status == "cancelled"
        assert not queries.claim_run(s, a, "w")  # a cancelled run is never started
        assert queries.heartbeat(s, b) is True
        with pytest.raises(KeyError):
            queries.cancel_run(s, 10_000)


def test_workers_register_and_age(any_db_url):
    with session_scope(any_db_url) as s:
        queries.upsert_worker(s, name="w@h", host="h", device="cpu", device_name="EPYC", memory_bytes=24 << 30,
                              queues=["cpu"], versions={"torch": "2.13.0"})
        queries.upsert_worker(s, name="w@h", host="h", device="cpu", device_name="EPYC", memory_bytes=24 << 30,
                              queues=["cpu"], versions={"torch": "2.13.0"})
    with session_scope(any_db_url) as s:
        live = queries.live_workers(s)
        assert [w.name for w in live] == ["w@h"] and live[0].memory_bytes == 24 << 30


def test_has_active_runs_per_team_and_run(any_db_url):
    run_id = _new_run(any_db_url)  # queued: active
    with session_scope(any_db_url) as s:
        assert queries.has_active_runs(s, run_id=run_id) and queries.has_active_runs(s, queries.DEFAULT_TEAM_ID)
        assert not queries.has_active_runs(s, team_id=10_000)
        queries.claim_run(s, run_id, "w1")
        assert queries.has_active_runs(s, run_id=run_id)  # running
        queries.finish_run(s, run_id, "succeeded")
    with session_scope(any_db_url) as s:
        assert not queries.has_active_runs(s, run_id=run_id)
