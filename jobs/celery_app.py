"""The Celery app. Broker: ``CELERY_BROKER_URL`` (or ``REDIS_URL``) when set, else kombu's
SQLAlchemy transport on a SQLite file in the data directory, which needs no server.
JSON only (never pickle), prefetch 1, soft and hard time limits, queues ``cpu`` and ``gpu``."""
from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

from db.session import data_dir
from jobs.settings import time_limits
from jobs.transports import transport_for

QUEUES = ("cpu", "gpu")
# publishing gives up within seconds on a dead or silent broker, so a submission fails fast
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
SOCKET_TIMEOUT_S = 5


def broker_url() -> str:
    url = os.environ.get("CELERY_BROKER_URL") or os.environ.get("REDIS_URL")
    return url or f"sqla+sqlite:///{data_dir() / 'broker.sqlite'}"


def queue_for(device: str) -> str:
    return "gpu" if device.startswith("cuda") else "cpu"


def make_app() -> Celery:
    url = broker_url()
    guarded = transport_for(url)
    if guarded and url.startswith("sqla+"):
        url = url[len("sqla+"):]  # kombu would pick its own transport from the prefix; ours is set below
    app = Celery("speedbook", broker=url, include=["jobs.tasks"])
    soft, hard = time_limits()
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # results live in the database, not in Celery
        worker_prefetch_multiplier=1,
        # acknowledged after the run, so a killed worker's message comes back; the atomic claim
        # turns a redelivered message into a no-op, so no run executes twice
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        broker_transport_options={
            "visibility_timeout": int(hard) + 600,  # Redis: never hand a running run's message to another worker
            "socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": SOCKET_TIMEOUT_S,
        } if url.startswith(("redis", "rediss")) else {},
        broker_connection_timeout=SOCKET_TIMEOUT_S,
        broker_connection_max_retries=int(os.environ.get("SPEEDBOOK_BROKER_RETRIES", "100")),
        redis_socket_timeout=SOCKET_TIMEOUT_S,
        task_soft_time_limit=soft,
        task_time_limit=hard,
        task_queues=[Queue(q) for q in QUEUES],
        task_default_queue="cpu",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    if guarded:  # read and write URLs win over Celery's own reading of CELERY_BROKER_URL
        app.conf.update(broker_transport=guarded, broker_read_url=url, broker_write_url=url)
    return app


app = make_app()
