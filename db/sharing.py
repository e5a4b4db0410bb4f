"""Shared playbook links: ``secrets.token_urlsafe(32)`` tokens, only their SHA-256 stored.
Unknown, revoked and malformed tokens are indistinguishable to the caller (all → None)."""
from __future__ import annotations

import hashlib
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Playbook, ShareLink, utcnow

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # token_urlsafe(32) → 43 characters


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_link(s: Session, playbook_id: int) -> str:
    """A new token for a saved playbook; returned once, never stored in clear."""
    if s.get(Playbook, playbook_id) is None:
        raise KeyError(f"playbook {playbook_id} not found")
    token = secrets.token_urlsafe(32)
    s.add(ShareLink(playbook_id=playbook_id, token_hash=hash_token(token)))
    s.flush()
    return token


def resolve(s: Session, token: str | None) -> Playbook | None:
    """The playbook a live token opens, else None (unknown, revoked or malformed alike)."""
    if not token or not _TOKEN_RE.match(token):
        return None
    link = s.scalars(select(ShareLink).where(ShareLink.token_hash == hash_token(token), ShareLink.revoked_at.is_(None))).first()
    return s.get(Playbook, link.playbook_id) if link else None


def revoke(s: Session, link_id: int) -> None:
    link = s.get(ShareLink, link_id)
    if link is None:
        raise KeyError(f"share link {link_id} not found")
    if link.revoked_at is None:
        link.revoked_at = utcnow()


def links_for(s: Session, playbook_id: int) -> list[ShareLink]:
    return list(s.scalars(select(ShareLink).where(ShareLink.playbook_id == playbook_id).order_by(ShareLink.id)).all())
