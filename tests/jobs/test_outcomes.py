"""Honest outcomes: a run that executed but missed a gate says so first (stored verdict, Run page,
exit code 3 from `speedbook run`); a run in which no step executed is "nothing executed here"."""
from __future__ import annotations

import json

import pytest

from db import queries
from db.session import session_scope
from jobs import pipeline, submit
from playbooks.schema import gates_verdict
from tests.jobs.test_cli import _cli
from tests.pages.conftest import page  # noqa: F401 (fixture)


@pytest.mark.parametrize("oks, verdict", [
    ([], "not checked"), ([True], "passed"), ([True, True], "passed"), ([True, None], "not checked"),
    ([None], "not checked"), ([True, False], "missed"), ([None, False], "missed"),
])
def test_gates_verdict(oks, verdict):
    assert gates_verdict([{"ok": ok} for ok in oks]) == verdict


def _run(playbook: dict) -> dict:
    pb = submit.validate_request(playbook, "tiny-llama", "cpu")
    run_id = submit.create_run(pb, "tiny-llama", "cpu")
    pipeline.execute_run(run_id)
    with session_scope() as s:
        return queries.run_summary(queries.get_run(s, run_id))


def test_missed_gate_is_stored_and_shown_first(migrated_sqlite, page):
    summary = _run({"name": "strict", "title": "strict", "steps": [{"technique": "int8_dynamic"}],
                    "expect": [{"metric": "stored_bytes", "max_ratio": 0.01}, {"metric": "accuracy", "min": 0.5}]})
    assert summary["status"] == "succeeded" and summary["gates_verdict"] == "missed"
    at = page("run.py", {"run": str(summary["run_id"])})
    assert not at.exception
    assert "Gates missed" in at.error[0].value  # the first alert on the page


def test_nothing_executed_is_not_a_plain_success(migrated_sqlite, page):
    summary = _run({"name": "advice", "title": "advice only", "steps": [{"technique": "born_again"}]})
    assert summary["status"] == "succeeded" and summary["executed"] is False
    at = page("run.py", {"run": str(summary["run_id"])})
    assert "Nothing executed here" in at.warning[0].value and "born\\_again" in at.warning[0].value  # escaped name


def test_cli_exits_3_when_a_gate_missed(tmp_path):
    pb = tmp_path / "strict.yaml"
    pb.write_text("name: strict\ntitle: Strict\nsteps:\n  - technique: int8_dynamic\n"
                  "expect:\n  - {metric: stored_bytes, max_ratio: 0.01}\n")
    out = _cli("run", str(pb), "--workload", "tiny-llama", "--json", data=tmp_path)
    assert out.returncode == 3, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert doc["status"] == "succeeded" and doc["gates_verdict"] == "missed"
