"""Workloads by name. Each module here exposes ``WORKLOADS = {name: loader(device)}``;
``load_workload`` finds the loader, so adding a workload is adding a module."""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Callable

from optimizers.workloads.base import Workload, WorkloadError


@lru_cache(maxsize=1)
def _modules() -> list:
    return [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)
            if not info.name.startswith("_") and info.name not in ("base", "hf")]


@lru_cache(maxsize=1)
def _loaders() -> dict[str, Callable[[str], Workload]]:
    out: dict[str, Callable[[str], Workload]] = {}
    for mod in _modules():
        out.update(getattr(mod, "WORKLOADS", {}))
    return out


def workload_task(name: str) -> str | None:
    """The task (causal_lm | encoder | vision) of a workload without loading its weights: a
    built-in's module declares it; a local model directory's config.json tells; else None."""
    for mod in _modules():
        if name in getattr(mod, "WORKLOADS", {}):
            return mod.TASK
    from pathlib import Path

    from optimizers.workloads.hf import looks_local

    if looks_local(name) and (Path(name).expanduser() / "config.json").is_file():
        from transformers import AutoConfig

        from optimizers.workloads.hf import infer_task

        try:
            return infer_task(AutoConfig.from_pretrained(str(Path(name).expanduser()), local_files_only=True))
        except (OSError, ValueError):
            return None
    return None


def workload_names() -> list[str]:
    return sorted(_loaders())


def load_workload(name: str, device: str = "cpu") -> Workload:
    """Load a built-in workload by name (e.g. ``ref-lm``), else a local dir / HF id if a loader accepts it."""
    import transformers

    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bars in logs and CLI output
    loaders = _loaders()
    if name in loaders:
        wl = loaders[name](device)
    elif "/" in name or name.startswith((".", "~")):
        from optimizers.workloads.hf import load_hf

        wl = load_hf(name, device)
    else:
        raise WorkloadError(f"unknown workload {name!r}; built-in workloads: {', '.join(sorted(loaders))}")
    from optimizers.measure import parameter_count

    wl.meta["param_count"] = parameter_count(wl.model)  # before any step packs or prunes the weights
    return wl


__all__ = ["Workload", "WorkloadError", "load_workload", "workload_names"]
