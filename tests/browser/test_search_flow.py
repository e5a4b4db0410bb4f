"""A search from the browser against `speedbook dev` (two workers, embedded SQLite): the Search
page starts int4-weight-only on tiny-llama with two trials, both trials arrive (one per worker),
the Pareto chart and the answer appear, and the answer saves as a playbook."""
from __future__ import annotations

import pytest

from tests.browser.test_main_flow import URL, _idle, _shot, app_server, browser  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_search_from_the_browser(app_server, browser):
    import sqlite3

    ctx = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    page.goto(URL + "/search")
    _idle(page, timeout=180_000)  # a fresh server under the whole suite's load: its first page can be slow
    try:
        page.get_by_text("Searchable parameters").wait_for(timeout=180_000)  # the playbook's space, as a table
    except Exception:
        _shot(page, "20-search-not-ready")  # what the page showed instead, for the CI log's reader
        raise
    workload = page.get_by_label("Workload")
    workload.click()
    page.get_by_role("option", name="tiny-llama", exact=True).click()
    _idle(page)
    trials = page.get_by_label("Max trials")
    trials.fill("2")
    trials.press("Enter")
    _idle(page)
    page.get_by_text("2 live worker(s)").wait_for(timeout=120_000)
    page.get_by_role("button", name="Start the search").click()
    _idle(page)
    page.get_by_text("2 of at most 2 trials finished").wait_for(timeout=300_000)
    _idle(page)
    page.locator(".js-plotly-plot").first.wait_for()
    answer = page.get_by_text("Best configuration meeting every gate").or_(page.get_by_text("Closest miss"))
    answer.first.wait_for()
    _shot(page, "20-search")
    db = sqlite3.connect(app_server / "speedbook.db")
    workers = {w for (w,) in db.execute("SELECT worker FROM runs WHERE search_id IS NOT NULL")}
    assert len(workers) == 2, workers  # the two trials went out at once, one to each worker
    page.get_by_role("button", name="Save this configuration as a playbook").click()
    page.get_by_text("Saved as playbook").wait_for()
    assert db.execute("SELECT count(*) FROM playbooks WHERE name LIKE 'int4-weight-only-tuned-%'").fetchone()[0] == 1
    ctx.close()
