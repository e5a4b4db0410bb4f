"""Thin, named, time-limited tasks that take ids and call plain modules."""
from __future__ import annotations

import socket

from celery import signals

from jobs import kernel_lab, pipeline, workers
from jobs.celery_app import app


@app.task(name="speedbook.run_playbook")
def run_playbook(run_id: int) -> str:
    return pipeline.execute_run(int(run_id), worker=run_playbook.request.hostname or socket.gethostname())


@app.task(name="speedbook.kernel_bench")
def kernel_bench(bench_id: int) -> str:
    return kernel_lab.execute(int(bench_id), worker=kernel_bench.request.hostname or socket.gethostname())


@signals.worker_ready.connect
def _on_ready(sender=None, **_kw) -> None:
    queues = sorted(q.name for q in sender.task_consumer.queues) if sender and sender.task_consumer else []
    workers.start_maintenance(sender.hostname if sender else socket.gethostname(), queues)
