"""Guarded status transitions: every change is a compare-and-set (queued → running → terminal),
claim and cancel never both win, no terminal status is overwritten, and a time limit anywhere —
also in pools without Celery's signal-based limit — ends a run ``timed_out``."""
from __future__ import annotations

import threading
import time

import pytest

from db import queries
from db.session import session_scope
from jobs import pipeline, submit
from tests.jobs.test_pipeline import PB


def _new_run(url: str | None = None) -> int:
    with session_scope(url) as s:
        return queries.create_run(s, playbook_name="p", snapshot=PB, workload="tiny-llama", device="cpu").id


def _status(run_id: int, url: str | None = None) -> str:
    with session_scope(url) as s:
        return queries.get_run(s, run_id).status


def test_claim_and_cancel_never_both_win(any_db_url):
    for _ in range(12):
        run_id = _new_run(any_db_url)
        out: dict[str, object] = {}
        barrier = threading.Barrier(2)

        def claim() -> None:
            barrier.wait()
            with session_scope(any_db_url) as s:
                out["claimed"] = queries.claim_run(s, run_id, "w")

        def cancel() -> None:
            barrier.wait()
            with session_scope(any_db_url) as s:
                out["cancel"] = queries.cancel_run(s, run_id)

        threads = [threading.Thread(target=claim), threading.Thread(target=cancel)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        status = _status(run_id, any_db_url)
        if out["claimed"]:
            assert out["cancel"] == "cancel requested" and status == "running"
        else:
            assert out["cancel"] == "cancelled" and status == "cancelled"


def test_terminal_status_is_never_overwritten(any_db_url):
    run_id = _new_run(any_db_url)
    with session_scope(any_db_url) as s:
        assert queries.claim_run(s, run_id, "w")
    with session_scope(any_db_url) as s:  # the reaper fails a paused worker's run…
        assert queries.finish_run(s, run_id, "failed", "no heartbeat")
    with session_scope(any_db_url) as s:  # …which later wakes up and tries to report success
        assert not queries.finish_run(s, run_id, "succeeded")
        assert queries.heartbeat(s, run_id) is True  # the worker is told to stop
        assert queries.cancel_run(s, run_id) == "already failed"
    assert _status(run_id, any_db_url) == "failed"


def test_reaped_run_that_resumes_keeps_failed(migrated_sqlite, monkeypatch):
    """A worker paused past the reaper's limit stops at its next heartbeat check and reports the
    stored status, not its own success."""
    from optimizers.techniques import int8_dynamic

    run_id = submit.create_run(submit.validate_request(PB, "tiny-llama", "cpu"), "tiny-llama", "cpu")
    real = int8_dynamic.Int8Dynamic.apply

    def reaped_meanwhile(self, wl, cfg):
        with session_scope() as s:
            queries.finish_run(s, run_id, "failed", "worker stopped responding")
        return real(self, wl, cfg)

    monkeypatch.setattr(int8_dynamic.Int8Dynamic, "apply", reaped_meanwhile)
    assert pipeline.execute_run(run_id) == "failed"
    with session_scope() as s:
        run = queries.get_run(s, run_id)
        assert run.status == "failed" and run.error == "worker stopped responding"
        assert not any(m.phase == "final" for m in run.metrics)


@pytest.mark.parametrize("in_thread", [False, True], ids=["solo", "threads"])
def test_time_limit_inside_a_step_ends_timed_out(migrated_sqlite, monkeypatch, in_thread):
    """No Celery signal here (like the solo and threads pools): the pipeline's own watchdog raises
    the soft limit inside the step, and the run ends timed_out, not failed."""
    from optimizers.techniques import int8_dynamic

    def slow_apply(self, wl, cfg):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # Python code: the watchdog's exception lands here
            time.sleep(0.01)
        raise AssertionError("the watchdog did not stop the step")

    monkeypatch.setattr(int8_dynamic.Int8Dynamic, "apply", slow_apply)
    run_id = submit.create_run(submit.validate_request(PB, "tiny-llama", "cpu"), "tiny-llama", "cpu")
    monkeypatch.setenv("SPEEDBOOK_TASK_SOFT_LIMIT_S", "8")  # the baseline of tiny-llama takes < 3 s here
    out: dict[str, str] = {}
    if in_thread:
        t = threading.Thread(target=lambda: out.update(status=pipeline.execute_run(run_id)))
        t.start()
        t.join(120)
    else:
        out["status"] = pipeline.execute_run(run_id)
    assert out["status"] == "timed_out"
    with session_scope() as s:
        run = queries.get_run(s, run_id)
        assert run.status == "timed_out" and "time limit" in run.error
        assert run.steps[0].status == "failed"
