"""`speedbook run … --json` prints one JSON document in DESIGN.md's shape; bad input → exit 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _cli(*args: str, data) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPEEDBOOK_DATA": str(data)}
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_run_json_shape(tmp_path):
    out = _cli("run", "int8-dynamic", "--workload", "tiny-llama", "--scenario", "inference", "--json", data=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert {"run_id", "status", "workload", "device", "baseline", "steps", "final"} <= set(doc)
    assert doc["status"] == "succeeded" and doc["workload"] == "tiny-llama" and doc["device"] == "cpu"
    step = doc["steps"][0]
    assert step["technique"] == "int8_dynamic" and step["status"] == "succeeded"
    for name in ("stored_bytes", "latency_ms", "kl_divergence", "top1_agreement", "perplexity"):
        assert name in step["metrics"], name
    assert doc["final"]["stored_bytes"] < doc["baseline"]["stored_bytes"]


def test_run_bad_input_is_one_clear_json_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntitle: Bad\nsteps:\n  - technique: int8_dynamic\n    params: {bits: 2}\n")
    out = _cli("run", str(bad), "--workload", "tiny-llama", "--json", data=tmp_path)
    assert out.returncode == 2
    assert "params.bits" in json.loads(out.stdout)["error"]
    assert not (tmp_path / "speedbook.db").exists()  # nothing written
    out = _cli("run", "int8-dynamic", "--workload", "nope", data=tmp_path)
    assert out.returncode == 2 and "workload='nope' is unknown" in out.stderr


def test_dev_starts_web_and_worker_and_ctrl_c_stops_both(tmp_path):
    """`make run`'s command: the web app answers, two workers register, SIGINT stops everything."""
    import signal
    import sqlite3
    import time
    import urllib.request

    env = {**os.environ, "SPEEDBOOK_DATA": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "dev", "--port", "8597"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, healthy, workers = time.monotonic() + 150, False, []
        while time.monotonic() < deadline and not (healthy and len(workers) == 2):
            time.sleep(1)
            try:
                healthy = urllib.request.urlopen("http://127.0.0.1:8597/_stcore/health", timeout=2).read() == b"ok"
            except OSError:
                pass
            if (tmp_path / "speedbook.db").exists():
                try:  # the file exists a moment before its migrations have created the tables
                    workers = sqlite3.connect(tmp_path / "speedbook.db").execute("SELECT name FROM workers").fetchall()
                except sqlite3.OperationalError:
                    workers = []
        assert healthy and len(workers) == 2  # two local workers by default: a search runs two trials at once
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert "stopped the workers and the web app" in out
        cores = len(os.sched_getaffinity(0))
        assert f"workers:  2 × {max(1, cores // 2)} thread(s)" in out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(1)
    leftovers = subprocess.run(["pgrep", "-f", "server.port 8597"], capture_output=True, text=True).stdout.strip()
    assert not leftovers, f"web app still running: {leftovers}"


def test_recommend_estimate_catalog_json(tmp_path):
    rec = _cli("recommend", "--constraints", "examples/long-context-serving.yaml", "--json", data=tmp_path)
    assert rec.returncode == 0, rec.stderr[-1000:]
    first = json.loads(rec.stdout)["recommendations"][0]
    assert first["playbook"] == "long-context-serving"
    assert {"playbook", "title", "score", "steps", "reasons", "warnings", "estimates"} <= set(first)
    techniques = {s["technique"] for s in first["steps"]}
    assert {"gqa", "paged_kv_cache", "continuous_batching"} <= techniques and techniques & {"smoothquant", "fp8"}
    assert any(t.startswith("flash_attention") for t in techniques)

    est = json.loads(_cli("estimate", "--model", "Llama-3.1-8B", "--hardware", "H100", "--json", data=tmp_path).stdout)
    assert est["params"] == 8_030_261_248 and est["kv_cache_bytes_per_token"] == 131_072  # published config
    assert {"weight_bytes", "training_bytes", "decode_tokens_per_s_bound"} <= set(est)

    cat = json.loads(_cli("catalog", "--json", data=tmp_path).stdout)
    assert any(e["status"] == "executable" and e["technique"] == "int8_dynamic" for e in cat["entries"])

    bad = _cli("estimate", "--model", "Llama-9", "--hardware", "H100", "--json", data=tmp_path)
    assert bad.returncode == 2 and "unknown model 'Llama-9'" in json.loads(bad.stdout)["error"]
    bad = tmp_path / "c.yaml"
    bad.write_text("goal: serve\nmodel: Llama-3.1-8B\nhardware: {gpu: H100, count: 0}\n")
    out = _cli("recommend", "--constraints", str(bad), "--json", data=tmp_path)
    assert out.returncode == 2 and "hardware.count" in json.loads(out.stdout)["error"]


def test_a_technique_name_is_a_one_step_playbook_at_its_defaults():
    from jobs.cli import resolve_playbook
    from playbooks.errors import PlaybookError

    pb = resolve_playbook("gptq")
    assert [s.technique for s in pb.steps] == ["gptq"] and pb.steps[0].params == {} and "defaults" in pb.title
    assert resolve_playbook("int8-dynamic").name == "int8-dynamic"  # the library playbook wins over a technique
    with pytest.raises(PlaybookError, match="neither a YAML file, a library playbook .* nor a technique .*gptq"):
        resolve_playbook("gptqq")


def test_streamlit_starts_without_its_file_watcher():
    """Watching the tree (.venv included) cost most of a core per open tab on the worker's cores."""
    from jobs.cli import streamlit_cmd

    cmd = streamlit_cmd(8501)
    assert cmd[cmd.index("--server.fileWatcherType") + 1] == "none"
    assert cmd[cmd.index("--server.runOnSave") + 1] == "false"
    assert cmd[cmd.index("--client.toolbarMode") + 1] == "minimal"  # the Deploy button and menu hidden


def test_tune_refuses_without_a_worker_or_a_search_section_naming_the_fix(tmp_path):
    out = _cli("tune", "int4-weight-only", "--workload", "tiny-llama", "--json", data=tmp_path)
    assert out.returncode == 2 and "no live cpu worker" in json.loads(out.stdout)["error"] and "--local" in out.stdout
    out = _cli("tune", "int8-dynamic", "--workload", "tiny-llama", "--local", data=tmp_path)
    assert out.returncode == 2 and "has no search: section" in out.stderr


def test_tune_local_prints_trials_and_the_answer(tmp_path):
    pb = tmp_path / "prune.yaml"
    pb.write_text("name: prune\ntitle: Prune\nscenario: inference\nsteps:\n  - technique: magnitude_pruning\n"
                  "expect:\n  - {metric: perplexity, max_ratio: 1.5}\n"
                  "search:\n  space:\n    steps[0].amount: [0.2, 0.4]\n  strategy: grid\n")
    out = _cli("tune", str(pb), "--workload", "tiny-llama", "--local", data=tmp_path)
    assert out.returncode in (0, 3), out.stderr[-2000:]
    assert "trial   1" in out.stderr and "trial   2" in out.stderr  # progress as each trial ends
    assert "search 1  finished  (tried every configuration of its space (2))" in out.stdout
    assert ("best configuration meeting every gate: trial" in out.stdout) == (out.returncode == 0)
    assert "amount=0.2" in out.stdout and "amount=0.4" in out.stdout


def test_local_workers_share_the_cores_out():
    from jobs.cli import worker_envs

    assert [e["SPEEDBOOK_THREADS"] for e in worker_envs(2, 2, {})] == ["1", "1"]
    assert [e["SPEEDBOOK_THREADS"] for e in worker_envs(3, 16, {})] == ["5"] * 3
    assert [e["SPEEDBOOK_THREADS"] for e in worker_envs(4, 2, {})] == ["1"] * 4  # never 0
    assert worker_envs(2, 8, {"SPEEDBOOK_THREADS": "3"})[1]["SPEEDBOOK_THREADS"] == "3"  # the user's setting wins
    with pytest.raises(ValueError, match="--workers=0 must be at least 1"):
        worker_envs(0, 2, {})
