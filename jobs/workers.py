"""Worker registration (device, memory, versions) and the maintenance thread: it keeps
the worker's ``last_seen`` fresh and reaps runs whose heartbeat went stale."""
from __future__ import annotations

import logging
import os
import platform
import threading

from db import queries
from db.session import session_scope

log = logging.getLogger(__name__)
MAINTENANCE_EVERY_S = float(os.environ.get("SPEEDBOOK_MAINTENANCE_S", "15"))


def describe_hardware() -> dict:
    import psutil
    import torch

    info = {"device": "cpu", "device_name": platform.processor() or "cpu", "memory_bytes": psutil.virtual_memory().total}
    from optimizers.measure import environment

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info = {"device": "cuda", "device_name": props.name, "memory_bytes": props.total_memory}
        env = environment("cuda")
    else:
        env = environment("cpu")
        info["device_name"] = f"{env['cpu']} ({os.cpu_count()} cores)"
    info["versions"] = {k: v for k, v in env.items() if k in ("torch", "transformers", "triton", "python", "capability")}
    return info


def register(name: str, queues: list[str]) -> None:
    hw = describe_hardware()
    with session_scope() as s:
        queries.upsert_worker(s, name=name, host=platform.node(), queues=queues, **hw)


def maintenance_once(name: str) -> list[int]:
    """Touch this worker, reap runs whose heartbeat went stale, re-send lost messages (jobs.sweeper),
    advance the running searches (jobs.search)."""
    from jobs import sweeper

    with session_scope() as s:
        queries.touch_worker(s, name)
        reaped = queries.reap_stale_runs(s, stale_after_s=float(os.environ.get("SPEEDBOOK_STALE_AFTER_S", "90")))
    sweeper.sweep()
    from jobs import search

    search.advance_active()  # a reaped trial frees its search's slot; a spent budget ends the search
    return reaped


def start_maintenance(name: str, queues: list[str]) -> threading.Thread:
    register(name, queues)

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(MAINTENANCE_EVERY_S):
            try:
                reaped = maintenance_once(name)
                if reaped:
                    log.warning("reaped stale runs %s", reaped)
            except Exception:  # keep the worker alive; the next tick retries
                log.exception("worker maintenance failed")

    t = threading.Thread(target=loop, name="speedbook-maintenance", daemon=True)
    t.start()
    return t
