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

from tests.browser.test_main_flow import CHROMIUM, FLAGS, _idle
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


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


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
