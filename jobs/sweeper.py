"""The sweeper: no queued run waits for a message that is gone. A broker can lose a task
message (Redis restarted without persistence, the embedded SQLite broker's delivered message
when its worker was killed); the run row then sits ``queued`` forever. Each sweep looks at the
queued runs whose last message is older than ``SPEEDBOOK_REQUEUE_AFTER_S``, asks the broker
whether that message is still waiting, and re-sends it (at most ``SPEEDBOOK_MAX_SENDS`` sends
in all) or fails the run with the reason. Re-sending is safe: claiming a run is a
compare-and-set, so a duplicate message never executes a run twice."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator

from sqlalchemy import or_, select, update

from db import queries
from db.models import Run, utcnow
from db.session import session_scope

log = logging.getLogger(__name__)
RUN_TASK = "speedbook.run_playbook"  # by name: the sender never imports the tasks


def requeue_after_s() -> float:
    return float(os.environ.get("SPEEDBOOK_REQUEUE_AFTER_S", "60"))


def max_sends() -> int:
    return int(os.environ.get("SPEEDBOOK_MAX_SENDS", "3"))


def waiting_task_ids(app: Any, queue: str) -> set[str] | None:
    """Ids of the task messages waiting in ``queue``, read from the broker; None when this
    transport cannot be inspected (then nothing is re-sent)."""
    with _connection(app) as conn:
        channel = conn.default_channel
        if hasattr(channel, "client") and hasattr(channel.client, "lrange"):  # redis
            raw = channel.client.lrange(queue, 0, -1)
        elif hasattr(channel, "message_cls"):  # kombu's sqlalchemy transport
            raw = _sqla_payloads(channel, queue)
        else:
            return None
    ids = set()
    for item in raw:
        try:
            ids.add(json.loads(item)["headers"]["id"])
        except (ValueError, KeyError, TypeError):
            continue  # a broken envelope is the dead-letter path's business
    return ids


@contextmanager
def _connection(app: Any) -> Iterator[Any]:
    """A broker connection that gives up after one retry (a page or a worker loop must not hang)."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        yield conn


def _sqla_payloads(channel: Any, queue: str) -> list[str]:
    session = channel.session
    try:
        q = session.query(channel.queue_cls).filter(channel.queue_cls.name == queue).first()
        if q is None:
            return []
        rows = session.query(channel.message_cls.payload).filter(
            channel.message_cls.queue_id == q.id, channel.message_cls.visible != False  # noqa: E712
        ).all()
        return [r[0] for r in rows]
    finally:
        session.commit()


def purge_delivered(app: Any, older_than_s: float) -> int:
    """The embedded SQLite broker keeps every delivered message (``visible = false``) forever;
    drop those older than the hard time limit plus margin (their runs have ended or been reaped)."""
    if not str(app.conf.broker_transport or "").endswith("SqlaTransport"):
        return 0
    with _connection(app) as conn:
        channel = conn.default_channel
        session, cls = channel.session, channel.message_cls
        try:
            cutoff = utcnow() - dt.timedelta(seconds=older_than_s)
            return session.query(cls).filter(cls.visible == False, cls.sent_at < cutoff).delete()  # noqa: E712
        finally:
            session.commit()


def sweep(app: Any | None = None, now: dt.datetime | None = None) -> dict[str, list[int]]:
    """One pass: {"resent": [...], "failed": [...]}."""
    from jobs.celery_app import queue_for

    if app is None:
        from jobs.celery_app import app
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=requeue_after_s())
    with session_scope() as s:
        stale = s.execute(
            select(Run.id, Run.device, Run.task_id, Run.enqueue_count).where(
                Run.status == "queued",
                or_(Run.enqueued_at < cutoff, Run.enqueued_at.is_(None) & (Run.created_at < cutoff)),
            )
        ).all()
    out: dict[str, list[int]] = {"resent": [], "failed": []}
    waiting: dict[str, set[str] | None] = {}
    for run_id, device, task_id, sends in stale:
        queue = queue_for(device)
        if queue not in waiting:
            waiting[queue] = waiting_task_ids(app, queue)
        if waiting[queue] is None or task_id in waiting[queue]:
            continue  # still waiting its turn (or this broker cannot tell)
        if sends >= max_sends():
            with session_scope() as s:
                if queries.finish_run(s, run_id, "failed", f"its task message was lost {sends} times by the broker "
                                      "(restarted without persistence?); submit it again", expect=("queued",)):
                    out["failed"].append(run_id)
        elif _claim_resend(run_id, sends, now):
            send(run_id, device)
            out["resent"].append(run_id)
    from jobs.settings import time_limits

    purge_delivered(app, time_limits()[1] + 600)
    if out["resent"] or out["failed"]:
        log.warning("sweeper: re-sent %s, failed %s", out["resent"], out["failed"])
    return out


def _claim_resend(run_id: int, sends: int, now: dt.datetime) -> bool:
    """Compare-and-set on the send count, so two sweepers never both re-send one run."""
    with session_scope() as s:
        res = s.execute(update(Run).where(Run.id == run_id, Run.status == "queued", Run.enqueue_count == sends)
                        .values(enqueue_count=sends + 1, enqueued_at=now))
        return res.rowcount == 1


def send(run_id: int, device: str) -> str:
    """Publish one task message for the run (bounded retries: a dead broker fails in seconds)."""
    from jobs.celery_app import PUBLISH_RETRY, app, queue_for

    res = app.send_task(RUN_TASK, args=[run_id], queue=queue_for(device), retry=True, retry_policy=PUBLISH_RETRY)
    with session_scope() as s:
        s.execute(update(Run).where(Run.id == run_id).values(task_id=res.id))
    return res.id
