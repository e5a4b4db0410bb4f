"""How much CPU the Streamlit server uses while one browser tab sits idle on a page (issue 16: with
the file watcher on, 22–25 s of CPU per 30 s). Starts ``speedbook web`` on a scratch data folder,
opens the page in headless Chromium, waits for it to settle, then reads the server's CPU time
(user + system, /proc) over an idle window.

    python scripts/measure_idle_tab.py [--page runs] [--seconds 30]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PORT = 8765


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its children that have been waited for, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--page", default="", help="page path after the host, e.g. runs (default: the landing page)")
    ap.add_argument("--seconds", type=float, default=30.0, help="idle window to measure")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "SPEEDBOOK_DATA": data}
        server = subprocess.Popen([sys.executable, "-m", "jobs.cli", "web", "--port", str(PORT)], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(120):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{PORT}/_stcore/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.5)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium")
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{PORT}/{args.page}")
                page.wait_for_timeout(8000)  # the first script run and its fragments settle
                heading = page.locator("h1").first.inner_text() if page.locator("h1").count() else "(no heading)"
                pids = [int(x) for x in subprocess.run(["pgrep", "-f", "jobs.webserver run"], capture_output=True,
                                                       text=True).stdout.split()]  # the Streamlit server itself
                before = sum(cpu_seconds(pid) for pid in pids)
                t0 = time.monotonic()
                page.wait_for_timeout(args.seconds * 1000)
                used = sum(cpu_seconds(pid) for pid in pids) - before
                wall = time.monotonic() - t0
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"idle tab on /{args.page} ({heading!r}): the Streamlit server used {used:.2f} s of CPU in {wall:.1f} s "
          f"({used / wall:.1%} of one core); since it started, {before:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
