"""The Search page: the new-search form lists the searchable playbooks with their space and
refuses to start without a live worker; a search's page shows its answer, the Pareto chart
and the trials, saves the answer as a playbook, and keeps other teams' searches out."""
from __future__ import annotations

import pytest

from db import queries
from db.models import Search
from db.session import session_scope
from playbooks import search as sp
from playbooks.schema import library


def seed_search(team_id: int = 1, ppl=(1.01, 1.2, 1.02)) -> tuple[int, list[int]]:
    """A finished search with three trials: group sizes 32/64/128, each against its own baseline."""
    pb = library()["int4-weight-only"]
    configs = [{"steps[0].technique": "int4_weight_only", "steps[0].group_size": g} for g in (32, 64, 128)]
    with session_scope() as s:
        row = Search(team_id=team_id, playbook_name=pb.name, playbook_snapshot=pb.model_dump(), workload="ref-lm",
                     device="cpu", status="finished", reason="ran its 3 trials")
        s.add(row)
        s.flush()
        ids = []
        for i, (config, p, b) in enumerate(zip(configs, ppl, (0.46, 0.43, 0.41)), 1):
            snap = sp.apply_config(pb.model_dump(), config, i)
            run = queries.create_run(s, playbook_name=pb.name, snapshot=snap, workload="ref-lm", device="cpu",
                                     team_id=team_id, search_id=row.id, trial_number=i, trial_params=config)
            run.status = "succeeded"
            queries.write_metrics(s, run.id, "baseline", {"perplexity": 10.0, "stored_bytes": 1e6})
            queries.write_metrics(s, run.id, "final", {"perplexity": 10.0 * p, "stored_bytes": 1e6 * b})
            ids.append(run.id)
        return row.id, ids


def test_new_search_form_lists_searchable_playbooks_and_needs_a_worker(page):
    at = page("search.py")
    assert not at.exception
    assert any("int4-weight-only" in o or "4-bit" in o for o in at.selectbox[0].options)
    shown = at.dataframe[0].value
    assert "steps[0].group_size" in set(shown["parameter"])
    assert any("No live worker" in w.value for w in at.warning)
    assert at.button[0].disabled  # no worker: nothing would ever run the trials


def test_a_search_shows_its_answer_chart_and_trials_and_saves_the_answer(page):
    sid, ids = seed_search()
    at = page("search.py", query={"search": str(sid)})
    assert not at.exception
    best = [s.value for s in at.success]
    # 128 has the fewest bytes and meets both gates (perplexity ×1.02 ≤ 1.05, bytes ×0.41 ≤ 0.5)
    assert any("trial 3" in v and "group_size=128" in v for v in best), best
    assert len(at.get("plotly_chart")) == 1
    trials = at.dataframe[0].value
    assert list(trials["status"]) == ["succeeded"] * 3 and list(trials["gates"]) == ["met", "missed", "met"]
    save = next(b for b in at.button if "Save this configuration" in b.label)
    at = save.click().run()
    assert any("Saved as playbook" in s.value for s in at.success)
    with session_scope() as s:
        names = [p.name for p in queries.saved_playbooks(s, 1)]
    assert f"int4-weight-only-tuned-{sid}-3" in names


def test_when_nothing_meets_the_gates_the_closest_miss_is_the_answer(page):
    sid, _ = seed_search(ppl=(1.3, 1.2, 1.5))
    at = page("search.py", query={"search": str(sid)})
    text = " ".join(w.value for w in at.warning)
    assert "Closest miss: trial 2" in text and "perplexity off by" in text


@pytest.mark.parametrize("query, message", [({"search": "abc"}, "must be a number"),
                                            ({"search": "99999"}, "does not exist")])
def test_bad_search_ids_get_a_message(page, query, message):
    at = page("search.py", query=query)
    assert not at.exception and any(message in e.value for e in at.error)


def test_another_teams_search_is_not_shown(page):
    with session_scope() as s:
        other = queries.ensure_team(s, "other-search-team").id
    sid, _ = seed_search(team_id=other)
    at = page("search.py", query={"search": str(sid)})
    assert any("another team" in e.value for e in at.error) and not at.get("plotly_chart")


def test_parameters_of_any_playbook_can_be_marked_and_a_bad_value_names_the_field(page):
    at = page("search.py")
    at.radio[0].set_value("Mark parameters of any playbook").run()
    at.selectbox[0].set_value("int8-dynamic").run()
    assert any("Mark at least one parameter" in i.value for i in at.info)
    box = next(t for t in at.text_input if t.label.startswith("include_lm_head"))
    box.set_value("true, false").run()
    assert not at.exception
    assert "steps[0].include_lm_head" in set(at.dataframe[0].value["parameter"])
    box = next(t for t in at.text_input if t.label.startswith("include_lm_head"))
    box.set_value("maybe, 3").run()
    shown = [e.value.replace("\\", "") for e in at.error]  # the page escapes Markdown in messages
    assert any("search.space.steps[0].include_lm_head: 'maybe' is not valid for int8_dynamic" in e for e in shown), shown


def test_a_trials_run_page_links_back_to_its_search(page):
    sid, ids = seed_search()
    at = page("run.py", query={"run": str(ids[1])})
    assert not at.exception
    links = [l.proto.label for l in at.get("page_link")]
    assert f"trial 2 of search {sid}: all its trials and the answer" in links
