"""The Celery app. Broker: ``CELERY_BROKER_URL`` (or ``REDIS_URL``) when set, else kombu's
SQLAlchemy transport on a SQLite file in the data directory, which needs no server.
JSON only (never pickle), prefetch 1, soft and hard time limits, queues ``cpu`` and ``gpu``."""
from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

from db.session import data_dir

QUEUES = ("cpu", "gpu")


def broker_url() -> str:
    url = os.environ.get("CELERY_BROKER_URL") or os.environ.get("REDIS_URL")
    return url or f"sqla+sqlite:///{data_dir() / 'broker.sqlite'}"


def queue_for(device: str) -> str:
    return "gpu" if device.startswith("cuda") else "cpu"


def make_app() -> Celery:
    app = Celery("speedbook", broker=broker_url(), include=["jobs.tasks"])
    soft = int(os.environ.get("SPEEDBOOK_TASK_SOFT_LIMIT_S", "3600"))
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # results live in the database, not in Celery
        worker_prefetch_multiplier=1,
        task_acks_late=False,  # a crashed run is failed by the reaper, never silently re-run
        task_soft_time_limit=soft,
        task_time_limit=soft + 60,
        task_queues=[Queue(q) for q in QUEUES],
        task_default_queue="cpu",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


app = make_app()
