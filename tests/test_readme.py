"""The README's technique table and counts match the registry and the catalog (docs that match
the code): a technique added without its row, or a stale count, fails here."""
from __future__ import annotations

import re

from optimizers import registry
from playbooks import catalog
from tests.conftest import ROOT


def test_readme_lists_every_executable_technique_with_the_catalog_counts():
    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| ([a-z_]+) \| (.+) \|$", text, flags=re.M)
    listed = {name: family for name, family, _ in rows}
    assert set(listed) == set(registry.names())
    assert all(listed[n] == registry.get(n).family for n in listed)
    m = re.search(r"\((\d+) entries, `speedbook catalog`\)\. These\s+(\d+) are executable", text)
    assert m, "the README's catalog sentence is missing"
    assert (int(m.group(1)), int(m.group(2))) == (len(catalog.entries()), len(catalog.executable_ids()))
