"""Share links (hashed tokens, revoke, indistinguishable failures) and the dashboard's SQL
(filters, sorting, pagination, the baseline/final pivot) on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from db import queries, sharing
from db.dashboard import RunFilter, filter_choices, runs_page, step_deltas
from db.models import ShareLink
from db.session import session_scope


def _playbook(url: str) -> int:
    with session_scope(url) as s:
        return queries.save_playbook(s, name="p", title="P", yaml_text="name: p\n").id


def test_share_token_is_hashed_and_revocable(any_db_url):
    pid = _playbook(any_db_url)
    with session_scope(any_db_url) as s:
        token = sharing.create_link(s, pid)
    assert len(token) == 43
    with session_scope(any_db_url) as s:
        stored = s.scalars(sa.select(ShareLink.token_hash)).all()
        assert stored == [sharing.hash_token(token)] and token not in stored
        assert sharing.resolve(s, token).id == pid
        link_id = sharing.links_for(s, pid)[0].id
        sharing.revoke(s, link_id)
    with session_scope(any_db_url) as s:
        assert sharing.resolve(s, token) is None


@pytest.mark.parametrize("token", [None, "", "short", "x" * 43, "<script>alert(1)</script>", "a" * 44, "' OR 1=1 --" + "a" * 32])
def test_unknown_and_malformed_tokens_resolve_to_nothing(any_db_url, token):
    _playbook(any_db_url)
    with session_scope(any_db_url) as s:
        assert sharing.resolve(s, token) is None


def _seed_runs(url: str) -> list[int]:
    ids = []
    with session_scope(url) as s:
        for i, (wl, tech, status) in enumerate([("ref-lm", "int8_dynamic", "succeeded"), ("minilm", "int8_dynamic", "succeeded"),
                                                ("ref-lm", "gptq", "failed"), ("digits-cnn", "qat", "succeeded")]):
            snap = {"name": f"pb{i}", "title": "t", "steps": [{"technique": tech, "params": {}}]}
            run = queries.create_run(s, playbook_name=f"pb{i}", snapshot=snap, workload=wl, device="cpu")
            run.status = status
            queries.write_metrics(s, run.id, "baseline", {"latency_ms": 10.0, "stored_bytes": 1000.0, "perplexity": 20.0})
            queries.write_metrics(s, run.id, "step", {"latency_ms": 10.0 / (i + 1), "stored_bytes": 500.0}, step_index=0)
            queries.write_metrics(s, run.id, "final", {"latency_ms": 10.0 / (i + 1), "stored_bytes": 500.0, "perplexity": 20.0 + i})
            ids.append(run.id)
    return ids


def test_dashboard_filters_sort_and_pivot(any_db_url):
    ids = _seed_runs(any_db_url)
    with session_scope(any_db_url) as s:
        rows, total = runs_page(s, RunFilter(workloads=["ref-lm"]))
        assert total == 2 and {r["id"] for r in rows} == {ids[0], ids[2]}
        rows, total = runs_page(s, RunFilter(techniques=["int8_dynamic"]), sort="final_latency_ms", descending=False)
        assert [r["id"] for r in rows] == [ids[1], ids[0]]  # 5 ms before 10 ms
        assert rows[0]["baseline_stored_bytes"] == 1000.0 and rows[0]["final_stored_bytes"] == 500.0
        rows, total = runs_page(s, RunFilter(statuses=["succeeded"]), limit=2, offset=2)
        assert total == 3 and len(rows) == 1
        tomorrow = dt.date.today() + dt.timedelta(days=2)
        assert runs_page(s, RunFilter(since=tomorrow))[1] == 0
        choices = filter_choices(s)
        assert choices["techniques"] == ["gptq", "int8_dynamic", "qat"]
        assert step_deltas(s, ids[1], "latency_ms") == [{"label": "baseline", "value": 10.0}, {"label": "1. int8_dynamic", "value": 5.0}]
        with pytest.raises(ValueError, match="not sortable"):
            runs_page(s, RunFilter(), sort="id; DROP TABLE runs")


@pytest.mark.parametrize("descending", [True, False])
def test_dashboard_sorts_runs_without_the_figure_last(any_db_url, descending):
    """A run that never measured the sorted figure (queued, failed early) comes after every run that
    did, in both directions; the page's figures are those of its own runs (pivoted per page)."""
    ids = _seed_runs(any_db_url)
    with session_scope(any_db_url) as s:
        bare = queries.create_run(s, playbook_name="bare", snapshot={"steps": []}, workload="ref-lm", device="cpu").id
    with session_scope(any_db_url) as s:
        rows, total = runs_page(s, RunFilter(), sort="final_latency_ms", descending=descending, limit=10)
        assert total == 5 and rows[-1]["id"] == bare and rows[-1]["final_latency_ms"] is None
        assert [r["id"] for r in rows[:-1]] == (ids if descending else ids[::-1])  # 10, 5, 3.3, 2.5 ms
        page, _ = runs_page(s, RunFilter(), sort="final_latency_ms", descending=descending, limit=2, offset=1)
        assert [r["id"] for r in page] == [r["id"] for r in rows[1:3]]
        assert all(r["baseline_stored_bytes"] == 1000.0 for r in page)
