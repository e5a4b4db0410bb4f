"""Thin, named, time-limited tasks that take ids and call plain modules."""
from __future__ import annotations

import socket

from celery import Task, signals

from jobs import kernel_lab, pipeline, workers
from jobs.celery_app import app


class GuardedTask(Task):
    """Malformed messages become dead letters instead of stopping the worker (jobs.messages)."""

    Strategy = "jobs.messages:guarded"


@app.task(name="speedbook.run_playbook", base=GuardedTask)
def run_playbook(run_id: int) -> str:
    return pipeline.execute_run(int(run_id), worker=run_playbook.request.hostname or socket.gethostname())


@app.task(name="speedbook.kernel_bench", base=GuardedTask)
def kernel_bench(bench_id: int) -> str:
    return kernel_lab.execute(int(bench_id), worker=kernel_bench.request.hostname or socket.gethostname())


@signals.worker_ready.connect
def _on_ready(sender=None, **_kw) -> None:
    queues = sorted(q.name for q in sender.task_consumer.queues) if sender and sender.task_consumer else []
    workers.start_maintenance(sender.hostname if sender else socket.gethostname(), queues)
