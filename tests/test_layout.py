"""The repository's shape and deployment files: required top level, docker-compose valid,
and the import rule of STYLE.md (optimizers/ and kernels/ never import db, jobs or streamlit)."""
from __future__ import annotations

import ast
import shutil
import subprocess

import yaml

from tests.conftest import ROOT

REQUIRED = ["app.py", "pages", "playbooks", "optimizers", "kernels", "jobs", "db", "tests", "docker-compose.yml"]


def test_required_top_level():
    missing = [p for p in REQUIRED if not (ROOT / p).exists()]
    assert not missing, missing


def test_docker_compose_services():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"redis", "postgres", "web", "worker"} <= set(doc["services"])
    worker = doc["services"]["worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert doc["services"]["web"]["image"] == worker["image"]  # one image, two commands
    assert worker["restart"] == "on-failure"  # a crashed worker comes back
    cpu = doc["services"]["cpu-worker"]  # searches spread their trials over these (issue 18)
    assert cpu["deploy"]["replicas"] >= 2 and cpu["image"] == worker["image"] and "cpu" in cpu["command"]
    assert cpu["environment"]["CELERY_BROKER_URL"] == worker["environment"]["CELERY_BROKER_URL"]
    assert cpu["environment"]["DATABASE_URL"] == worker["environment"]["DATABASE_URL"]
    assert "--appendonly" in doc["services"]["redis"]["command"] and "yes" in doc["services"]["redis"]["command"]
    if shutil.which("docker-compose"):  # Debian's docker-compose validates without an engine (.ci/run installs it)
        out = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_optimizers_and_kernels_never_import_app_layers():
    bad = []
    for pkg in ("optimizers", "kernels", "playbooks"):
        for f in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                bad += [f"{f.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("db", "jobs", "streamlit", "pages")]
    assert not bad, bad


def test_every_page_guards_sign_in_before_rendering():
    """A deep link can run a page file without app.py (Streamlit's legacy multipage mode), so each
    page's first statement after its imports must be ``page_ready()`` (sign-in guard, then DB)."""
    bad = []
    for f in sorted((ROOT / "pages").glob("*.py")):
        body = [n for n in ast.parse(f.read_text()).body
                if not isinstance(n, (ast.Import, ast.ImportFrom)) and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        first = body[0] if body else None
        ok = (isinstance(first, ast.Expr) and isinstance(first.value, ast.Call)
              and getattr(first.value.func, "id", None) == "page_ready")
        if not ok:
            bad.append(f.name)
    assert not bad, f"pages whose first statement is not page_ready(): {bad}"


def _imports(path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_jobs_has_no_import_circle():
    """Submission publishes by task name, so nothing that sends a message imports the tasks."""
    mods = {f"jobs.{f.stem}": f for f in (ROOT / "jobs").glob("*.py") if f.stem != "__init__"}
    graph = {m: {i for i in _imports(f) if i in mods and i != m} for m, f in mods.items()}

    def cycle_from(start, node, path):
        for nxt in graph[node]:
            if nxt == start:
                return path + [nxt]
            if nxt not in path:
                found = cycle_from(start, nxt, path + [nxt])
                if found:
                    return found
        return None

    cycles = [c for m in graph if (c := cycle_from(m, m, [m]))]
    assert not cycles, cycles[0]


def test_kernels_never_import_optimizers_and_quant_is_the_ground_floor():
    bad = [f"{f.relative_to(ROOT)}: {i}" for f in (ROOT / "kernels").rglob("*.py") for i in _imports(f)
           if i.split(".")[0] == "optimizers"]
    bad += [f"{f.relative_to(ROOT)}: {i}" for f in (ROOT / "quant").rglob("*.py") for i in _imports(f)
            if i.split(".")[0] in ("optimizers", "kernels", "playbooks", "db", "jobs")]
    assert not bad, bad
