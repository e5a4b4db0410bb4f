"""Task messages are checked before Celery's own handler sees them. Celery trusts a message's
shape (a JSON ``[args, kwargs, embed]`` list): a body like ``42`` or ``[[1], {}]`` raises inside
its strategy, which the consumer treats as unrecoverable, and the restored message then kills
every worker that receives it. Here a malformed message is acknowledged (dropped from the
queue) and kept as a dead letter with its reason, and the worker goes on serving."""
from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)
EXCERPT_CHARS = 500


def message_problem(message: Any) -> str | None:
    """Why this message cannot be a Speedbook task call (``None`` when it can): JSON, a
    ``[args, kwargs, embed]`` body, and exactly one id argument made of ASCII digits."""
    headers = message.headers
    if not isinstance(headers, dict) or not isinstance(headers.get("task"), str) or not headers.get("id"):
        return "headers must name the task and its id"
    if message.content_type != "application/json":
        return f"content type {message.content_type!r} is not accepted (JSON only)"
    try:
        body = message.decode()
    except Exception as err:  # noqa: BLE001 - any decode failure is the message's fault
        return f"body does not decode as JSON: {type(err).__name__}"
    if not (isinstance(body, (list, tuple)) and len(body) == 3):
        return f"body must be a JSON list [args, kwargs, embed]; got {type(body).__name__}"
    args, kwargs, embed = body
    if not (isinstance(args, list) and isinstance(kwargs, dict) and isinstance(embed, dict)):
        return "body must be [list, object, object]"
    if kwargs or len(args) != 1 or not _is_id(args[0]):
        return "a Speedbook task takes exactly one argument: a run or benchmark id (ASCII digits)"
    return None


def _is_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 < value < 2**63
    return isinstance(value, str) and value.isascii() and value.isdigit() and 0 < len(value) < 19


def _excerpt(message: Any) -> str:
    body = message.body
    text = body.decode("utf-8", errors="replace") if isinstance(body, (bytes, bytearray)) else str(body)
    return text[:EXCERPT_CHARS]


def dead_letter(message: Any, reason: str, worker: str) -> None:
    """Acknowledge the message so no worker sees it again, and record it; never raises."""
    try:
        message.ack()
    except Exception:  # noqa: BLE001 - already acknowledged, or the connection dropped
        log.exception("could not acknowledge a rejected message")
    headers = message.headers if isinstance(message.headers, dict) else {}
    record_dead_letter(task=str(headers.get("task", "")), reason=reason, excerpt=_excerpt(message), worker=worker)


def record_dead_letter(*, task: str, reason: str, excerpt: str, worker: str = "") -> None:
    """Keep a refused message for the Runs page; never raises (a database hiccup must not stop the worker)."""
    import socket

    try:
        from db import queries
        from db.session import session_scope

        with session_scope() as s:
            queries.add_dead_letter(s, worker=(worker or socket.gethostname())[:200], task=task[:200], reason=reason,
                                    excerpt=excerpt)
    except Exception:  # noqa: BLE001
        log.exception("could not record a dead letter (%s)", reason)
    log.warning("rejected a task message: %s", reason)


def guarded(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Callable[..., Any]:
    """The Task ``Strategy``: Celery's default one behind the shape check above."""
    from celery.worker.strategy import default

    inner = default(task, app, consumer, **kwargs)
    hostname = consumer.hostname

    def handle(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any) -> Any:
        problem = message_problem(message)
        if problem is None:
            try:
                return inner(message, body, ack, reject, callbacks, **kw)
            except Exception as err:  # noqa: BLE001 - anything Celery's handler raises would stop the worker
                problem = f"Celery could not handle the message: {type(err).__name__}: {err}"[:500]
        dead_letter(message, problem, hostname)

    return handle
