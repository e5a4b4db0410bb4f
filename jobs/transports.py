"""kombu transports whose channels survive an envelope that is not JSON. kombu decodes the
envelope inside the worker's event loop, where a ValueError is unrecoverable: the worker
stops. Here the broken envelope (already taken off the queue by the broker) becomes a dead
letter and the loop goes on. Chosen by ``jobs.celery_app`` for the redis and sqla schemes."""
from __future__ import annotations

import json
from queue import Empty
from typing import Any

from kombu.transport import redis as kredis
from kombu.transport import sqlalchemy as ksqla


def _dead_envelope(err: ValueError) -> None:
    from jobs.messages import EXCERPT_CHARS, record_dead_letter

    doc = err.doc if isinstance(err, json.JSONDecodeError) else ""
    record_dead_letter(task="", reason=f"envelope is not JSON: {err}"[:500], excerpt=str(doc)[:EXCERPT_CHARS])


class RedisChannel(kredis.Channel):
    def _brpop_read(self, **options: Any) -> bool:
        try:
            return super()._brpop_read(**options)
        except ValueError as err:
            _dead_envelope(err)
            return True


class RedisTransport(kredis.Transport):
    Channel = RedisChannel


class SqlaChannel(ksqla.Channel):
    def _get(self, queue: str) -> Any:
        try:
            return super()._get(queue)
        except ValueError as err:
            _dead_envelope(err)
            raise Empty() from None


class SqlaTransport(ksqla.Transport):
    Channel = SqlaChannel


def transport_for(url: str) -> str | None:
    """The guarded transport class for a broker URL, or None to keep kombu's own."""
    scheme = url.split("://", 1)[0]
    if scheme in ("redis", "rediss"):
        return "jobs.transports:RedisTransport"
    if scheme.startswith("sqla+") or scheme == "sqlalchemy":
        return "jobs.transports:SqlaTransport"
    return None
