"""AppTest helpers: run a page file with the test database migrated."""
from __future__ import annotations

import pytest

from tests.conftest import ROOT


@pytest.fixture
def page(migrated_sqlite):
    from streamlit.testing.v1 import AppTest

    def _open(name: str, query: dict[str, str] | None = None, session: dict | None = None) -> AppTest:
        """Open ``pages/<name>`` inside the app's navigation (so switch_page works)."""
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        at.switch_page(f"pages/{name}")
        for k, v in (query or {}).items():
            at.query_params[k] = v
        for k, v in (session or {}).items():
            at.session_state[k] = v
        return at.run()

    return _open
