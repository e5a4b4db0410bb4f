"""AppTest for the dashboard, compare, saved playbooks and share-link views, with empty
states and hostile names (user text must show as text)."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest

from db import queries, sharing
from db.session import session_scope
from jobs import pipeline, submit
from tests.conftest import ROOT

XSS_NAME = "<img src=x onerror=alert(1)>"
PB_YAML = "name: xss-test\ntitle: '<script>alert(1)</script>'\nsteps:\n  - technique: int8_dynamic\n"


def _run(title: str = "t") -> int:
    pb = submit.validate_request({"name": "dash-test", "title": title, "steps": [{"technique": "int8_dynamic"}]}, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    pipeline.execute_run(run_id)
    return run_id


def _texts(at: AppTest) -> str:
    parts = [e.value for kind in ("title", "markdown", "caption", "text", "code", "error", "info") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def test_dashboard_empty_state_for_new_team(page):
    with session_scope() as s:
        queries.ensure_team(s, "empty-team")
    at = page("dashboard.py", query={"team": "empty-team"})
    assert not at.exception
    assert "No runs match" in at.info[0].value


def test_dashboard_with_runs_has_table_and_charts(page):
    a, b = _run(), _run()
    at = page("dashboard.py")
    assert not at.exception
    assert {a, b} <= set(at.dataframe[0].value["id"])
    assert len(at.get("plotly_chart")) >= 3  # Pareto, memory bars, waterfall


def test_compare_two_runs(page):
    a, b = _run(), _run()
    at = page("compare.py", query={"runs": f"{a},{b}"})
    assert not at.exception
    df = at.dataframe[0].value
    assert f"run {a}" in df.columns and f"Δ run {b}" in df.columns
    assert "(identical playbooks)" in at.code[0].value
    assert any(f"run {a}" in m.value and "gates" in m.value for m in at.markdown)  # the outcome leads
    assert not at.warning  # same workload, device and scenario: nothing to warn about


def test_saved_playbooks_share_and_revoke(page):
    with session_scope() as s:
        pid = queries.save_playbook(s, name="xss-test", title=XSS_NAME, yaml_text=PB_YAML).id
    at = page("playbooks.py")
    assert not at.exception
    assert "\\<img" in _texts(at)  # escaped in markdown: shows the characters, renders no tag
    share = next(b for b in at.button if b.key == f"share{pid}")
    share.click().run()
    token = at.session_state[f"token{pid}"]
    assert f"/?share={token}" in _texts(at)
    with session_scope() as s:
        assert sharing.resolve(s, token).id == pid
        lid = sharing.links_for(s, pid)[0].id
    next(b for b in at.button if b.key == f"revoke{lid}").click().run()  # asks first
    assert any("cannot be undone" in w.value for w in at.warning)
    next(b for b in at.button if b.key == f"no{lid}").click().run()
    with session_scope() as s:
        assert sharing.resolve(s, token).id == pid  # kept
    next(b for b in at.button if b.key == f"revoke{lid}").click().run()
    next(b for b in at.button if b.key == f"yes{lid}").click().run()
    assert not at.exception
    with session_scope() as s:
        assert sharing.resolve(s, token) is None


def _shared(token: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["share"] = token
    return at.run()


def test_share_link_opens_read_only_and_revoked_is_not_found(migrated_sqlite):
    with session_scope() as s:
        pid = queries.save_playbook(s, name="xss-test", title=XSS_NAME, yaml_text=PB_YAML).id
        token = sharing.create_link(s, pid)
    at = _shared(token)
    assert not at.exception
    assert "read-only" in _texts(at) and PB_YAML.strip() in at.code[0].value
    assert not at.button  # nothing to change on a shared view
    with session_scope() as s:
        sharing.revoke(s, sharing.links_for(s, pid)[0].id)
    revoked, unknown, malformed = _shared(token), _shared("A" * 43), _shared("<script>")
    for view in (revoked, unknown, malformed):
        assert not view.exception
        assert [e.value for e in view.error] == ["Link not found. It may have been revoked, or it was mistyped."]


def test_hostile_run_name_is_text(page):
    pb = submit.validate_request({"name": "hostile", "title": XSS_NAME, "steps": [{"technique": "int8_dynamic"}]}, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    at = page("run.py", query={"run": str(run_id)})
    assert not at.exception
    assert f"Run {run_id}: hostile" in at.title[0].value
