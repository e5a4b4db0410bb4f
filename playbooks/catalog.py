"""Technique catalog: every technique of the taxonomy, as data (catalog.yaml)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

CATALOG_FILE = Path(__file__).parent / "catalog.yaml"


@lru_cache(maxsize=1)
def _entries() -> dict[str, dict]:
    if not CATALOG_FILE.exists():
        return {}
    data = yaml.safe_load(CATALOG_FILE.read_text()) or []
    return {e["id"]: e for e in data}


def has_entry(entry_id: str) -> bool:
    return entry_id in _entries()
