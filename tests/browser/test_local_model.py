"""A local model directory from the browser: New run takes a directory under the model folders
(here a copy of the ref-lm-draft checkpoint: config.json, safetensors, tokenizer), refuses one
with only pickled weights before anything is queued, and runs int8-dynamic on the good one."""
from __future__ import annotations

import shutil

import pytest

from optimizers.workloads.ref_lm import ASSETS
from tests.browser.test_main_flow import URL, _idle, _shot, app_server, browser  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_local_model_directory_runs_and_a_pickle_is_refused(app_server, browser, tmp_path):
    good = tmp_path / "my-llama"
    shutil.copytree(ASSETS / "ref-lm-draft", good)
    bad = tmp_path / "pickled"
    bad.mkdir()
    shutil.copy(good / "config.json", bad / "config.json")
    (bad / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    page.goto(URL + "/new-run")
    _idle(page)
    pick = page.get_by_role("combobox", name="Playbook")
    pick.click()
    pick.fill("int8-dynamic")  # the list is long: type to filter it
    page.get_by_role("option").filter(has_text="(int8-dynamic)").first.click()
    _idle(page)
    box = page.get_by_placeholder("e.g. data/models/my-llama")
    box.fill(str(bad))
    box.press("Enter")
    _idle(page)
    page.get_by_text("This model directory cannot be used").wait_for()
    page.get_by_text("safetensors only").first.wait_for()
    assert page.get_by_role("button", name="Run this playbook").is_disabled()
    box.fill(str(good))
    box.press("Enter")
    _idle(page)
    page.get_by_text("Using the local model").wait_for()
    scenario = page.get_by_role("combobox", name="Scenario")
    scenario.click()
    page.get_by_role("option", name="inference", exact=True).click()
    _idle(page)
    page.get_by_role("button", name="Run this playbook").click()
    _idle(page)
    page.get_by_text("gates").first.wait_for()
    page.get_by_text(str(good)).first.wait_for()  # the Run page names the local model as the workload
    page.get_by_text("succeeded").first.wait_for(timeout=300_000)
    _shot(page, "30-local-model-run")
    ctx.close()
