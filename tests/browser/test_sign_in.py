"""Sign-in cannot be skipped: with ``[auth]`` configured, every page URL opened signed-out as the
very first request of a freshly started server shows the sign-in prompt and nothing of the page.
The raw ``streamlit run app.py`` (legacy multipage mode on: ``pages/`` sits beside ``app.py``,
and a deep link runs the page file directly) and Speedbook's own launcher (jobs.webserver) are both walked."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.browser.test_main_flow import _idle, browser  # noqa: F401 (fixture)
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PORT = 8597
URL = f"http://127.0.0.1:{PORT}"
SECRETS = f"""[auth]
redirect_uri = "{URL}/oauth2callback"
cookie_secret = "speedbook-test-cookie-secret-not-for-production"
client_id = "speedbook-test"
client_secret = "speedbook-test-secret"
server_metadata_url = "http://127.0.0.1:9/.well-known/openid-configuration"
"""
# legacy-mode paths come from the file names, v2 paths from app.py's url_path
PATHS = ["dashboard", "runs", "run?run=1", "playbooks", "new_run", "new-run", "guide", "catalog", "kernel_lab",
         "compare", ""]
PAGE_TEXT = ["Dashboard", "Runs", "Saved playbooks", "New run", "Technique catalog", "Kernel lab", "Compare",
             "Import a playbook", "Workload"]


def _serve(site, launcher: str):
    env = {**os.environ, "SPEEDBOOK_DATA": str(site / "data"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", launcher, "run", str(ROOT / "app.py"), "--server.port", str(PORT),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    proc = subprocess.Popen(cmd, cwd=site, env=env, stdout=open(site / "server.log", "a"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{URL}/_stcore/health", timeout=2).read() == b"ok":
                return proc
        except OSError:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("streamlit did not come up: " + (site / "server.log").read_text()[-2000:])


def _stop(proc) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("auth-site")
    (d / ".streamlit").mkdir()
    (d / ".streamlit" / "secrets.toml").write_text(SECRETS)
    return d


@pytest.mark.parametrize("launcher", ["streamlit", "jobs.webserver"])
@pytest.mark.parametrize("path", PATHS)
def test_page_url_signed_out_on_fresh_server_shows_only_sign_in(site, browser, launcher, path):
    proc = _serve(site, launcher)
    try:
        ctx = browser.new_context()
        page = ctx.new_page()
        page.goto(f"{URL}/{path}")
        page.get_by_role("button", name="Sign in").wait_for(timeout=30_000)
        _idle(page)
        body = page.inner_text("[data-testid='stMain']")
        assert "Sign in to see your team's playbooks and runs." in body
        leaked = [t for t in PAGE_TEXT if t in body]
        assert not leaked, f"/{path} showed {leaked} to a signed-out visitor"
        if launcher == "jobs.webserver":  # the raw launcher's legacy mode lists the pages' names (no content) first
            assert page.locator("[data-testid='stSidebarNav']").count() == 0
        ctx.close()
    finally:
        _stop(proc)


HOSTILE = "![pixel](http://127.0.0.1:9/pixel.png) [click](http://evil.example/x) <b>bold</b> www.evil.example a@evil.example"


def test_share_link_is_the_anonymous_route_and_renders_user_text_as_text(site, browser):
    """Signed out, a share link opens the shared playbook; hostile markdown in its title and in a
    run's workload and error shows as characters: no image fetched, no link, no HTML."""
    from db import queries, sharing
    from db.migrate import upgrade
    from db.session import session_scope

    url = f"sqlite:///{site / 'data' / 'speedbook.db'}"
    (site / "data").mkdir(exist_ok=True)
    upgrade(url)
    with session_scope(url) as s:
        pb = queries.save_playbook(s, name="hostile", title=HOSTILE, yaml_text="name: hostile\n")
        run = queries.create_run(s, playbook_name="hostile", snapshot={"steps": []}, workload=HOSTILE, device="cpu",
                                 playbook_id=pb.id)
        run.status, run.error = "failed", HOSTILE
        token = sharing.create_link(s, pb.id)
    proc = _serve(site, "jobs.webserver")
    try:
        ctx = browser.new_context()
        page = ctx.new_page()
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(f"{URL}/?share={token}")
        page.get_by_text("Shared playbook — read-only").wait_for(timeout=30_000)
        _idle(page)
        page.get_by_text("run ", exact=False).first.click()  # open the run's expander
        _idle(page)
        main = page.locator("[data-testid='stMain']")
        assert "[click](http" in main.inner_text()  # the characters, as typed
        assert main.locator("img[src*='pixel']").count() == 0
        hrefs = main.locator("a[href*='evil']").evaluate_all("els => els.map(e => e.getAttribute('href'))")
        assert not [h for h in hrefs if not h.startswith("#")], hrefs  # the heading's own in-page anchor is fine
        assert main.locator("b").count() == 0
        assert not [u for u in requested if "pixel" in u]
        assert "Sign in" not in main.inner_text()
        ctx.close()
    finally:
        _stop(proc)
