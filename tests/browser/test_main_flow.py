"""The main flow in a real browser against the real app and a real worker (embedded SQLite
and broker): the landing page's three ways in → Guide → recommendation → Save → run it → watch it
finish → the landing page lists it → dashboard shows it → Share → the link opens read-only in a
fresh context, and from there no other page is reachable → revoked link shows "link not found".
Debian's Chromium driven by Playwright (no browser download). Screenshots go to artifacts/."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
PORT = 8596
URL = f"http://127.0.0.1:{PORT}"
ARTIFACTS = ROOT / "artifacts" / "browser"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("browser-data")
    env = {**os.environ, "SPEEDBOOK_DATA": str(data), "PYTHONUNBUFFERED": "1"}
    log = open(data / "dev.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "dev", "--port", str(PORT)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{URL}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the app did not come up; see " + str(data / "dev.log"))
    yield data
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install -y chromium (.ci/run does)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def _idle(page, timeout: float = 60_000) -> None:
    """Wait until Streamlit finished the current script run."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"] [data-testid=\"stStatusWidgetRunningIcon\"]')",
                           timeout=timeout)
    page.wait_for_timeout(300)


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _sidebar(page, label: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(label, exact=True).click()
    _idle(page)


WAYS_IN = {"Start the guide": "Step 1 of 4", "New run": "Playbook source", "Dashboard": "Filters"}  # link → what it opens
# what other pages show and the shared view never does
OTHER_PAGES = ["Latest runs of your team", "📋 Runs", "📊 Dashboard", "🚀 New run", "🧭 Guide", "Technique catalog",
               "Kernel lab", "Compare runs", "Import a playbook", "Metrics against the baseline (measured)"]


def _check_landing_page(page, run_id: int | None = None) -> None:
    """Home: what Speedbook is, three ways in (each opens its page), and the team's latest runs."""
    for link, opens in WAYS_IN.items():
        page.goto(URL + "/")
        main = page.locator('[data-testid="stMain"]')
        main.get_by_text("Latest runs of your team").wait_for()
        _idle(page)
        assert "measured against the unchanged model" in main.inner_text()
        if run_id is not None:
            main.get_by_role("link", name=re.compile(rf"run {run_id} · ")).wait_for()  # its outcome first
        main.get_by_role("link", name=re.compile(rf"{link}$")).click()
        page.get_by_text(opens).first.wait_for()
        _idle(page)


def _check_share_viewer_stays_put(viewer, token: str, run_id: int) -> None:
    """Every page URL a share viewer may try, with the token, opens the shared view and nothing else;
    there is no navigation to click."""
    for path in ("", "runs", "dashboard", "home", "new-run", "guide", "playbooks", f"run?run={run_id}&", "shared"):
        viewer.goto(f"{URL}/{path}{'' if path.endswith('&') else '?'}share={token}")
        viewer.get_by_text("Shared playbook — read-only").wait_for()
        viewer.get_by_text(f"run {run_id} on tiny-llama").wait_for()
        _idle(viewer)
        body = viewer.inner_text("body")
        leaked = [t for t in OTHER_PAGES if t in body]
        assert not leaked, f"/{path}?share=… showed {leaked} to a share viewer"
        assert viewer.locator('[data-testid="stSidebarNav"]').count() == 0
        assert viewer.locator('[data-testid="stSidebar"]').count() == 0  # no team picker, no page links
        hrefs = viewer.locator("[data-testid='stMain'] a[href]").evaluate_all("els => els.map(e => e.getAttribute('href'))")
        assert not [h for h in hrefs if not h.startswith("#")], hrefs  # only the headings' own anchors


def test_guide_to_shared_link(app_server, browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    _check_landing_page(page)  # what it is, three ways in
    page.goto(URL + "/")
    page.get_by_text("Start the guide").wait_for()
    _idle(page)
    _shot(page, "00-home")
    page.get_by_text("Start the guide").click()
    page.get_by_text("Step 1 of 4").wait_for()
    _shot(page, "01-guide")
    for _ in range(3):
        page.get_by_role("button", name="Next").click()
        _idle(page)
    page.get_by_role("button", name="Recommend").click()
    page.get_by_text("Recommended playbooks").wait_for()
    _idle(page)
    _shot(page, "02-recommendations")
    page.get_by_role("button", name="Save").first.click()
    page.get_by_text(re.compile(r"Saved as playbook #\d+")).wait_for()
    page.get_by_role("button", name="Run this playbook").first.click()
    page.get_by_text("Playbook YAML").wait_for()
    _idle(page)

    # New run: choose the tiny Llama (fast) and submit
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Workload").click()
    page.get_by_role("option", name="tiny-llama").click()
    _idle(page)
    _shot(page, "03-new-run")
    page.get_by_role("button", name="Run this playbook").click()
    page.get_by_text(re.compile(r"Run \d+:")).wait_for()
    run_id = int(re.search(r"Run (\d+):", page.get_by_text(re.compile(r"Run \d+:")).first.inner_text()).group(1))
    page.get_by_text("succeeded").first.wait_for(timeout=300_000)
    _idle(page)
    _shot(page, "04-run-finished")
    assert page.get_by_text("Metrics against the baseline (measured)").count() == 1
    _check_landing_page(page, run_id)  # the landing page lists the finished run

    _sidebar(page, "Dashboard")
    page.get_by_text(re.compile(r"\d+ runs match")).wait_for()
    _shot(page, "05-dashboard")
    assert page.locator('[data-testid="stDataFrame"]').count() >= 1

    _sidebar(page, "Saved playbooks")
    page.get_by_role("button", name="Share").first.click()
    code = page.locator("code").filter(has_text="/?share=").first
    code.wait_for()
    assert code.inner_text().startswith("http://")  # the whole link, ready to copy
    token = re.search(r"share=([A-Za-z0-9_-]{43})", code.inner_text()).group(1)
    _shot(page, "06-share")

    viewer = browser.new_context().new_page()
    viewer.goto(f"{URL}/?share={token}")
    viewer.get_by_text("Shared playbook — read-only").wait_for()
    viewer.get_by_text(f"run {run_id} on tiny-llama").wait_for()
    assert viewer.get_by_role("button", name="Run this playbook").count() == 0
    _shot(viewer, "07-shared-view")
    _check_share_viewer_stays_put(viewer, token, run_id)

    page.get_by_text("YAML and share links").first.click()
    revoke = page.get_by_role("button", name="Revoke").first
    revoke.wait_for()
    _idle(page)  # a click during a rerun can be dropped by Streamlit: click once it is idle
    revoke.click()
    page.get_by_role("button", name="Yes, revoke it").first.click()  # revoking asks for confirmation
    page.get_by_text(re.compile(r"link #\d+ made .* — revoked")).first.wait_for(state="attached", timeout=60_000)
    revoked = browser.new_context().new_page()
    revoked.goto(f"{URL}/?share={token}")
    revoked.get_by_text("Link not found").wait_for()
    _shot(revoked, "08-revoked")
    ctx.close()
