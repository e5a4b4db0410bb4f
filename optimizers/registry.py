"""Registry of executable techniques: one module per technique in
``optimizers/techniques/``, discovered by name, keyed by the technique's name."""
from __future__ import annotations

import importlib
import pkgutil

from optimizers.base import Technique

_REGISTRY: dict[str, type[Technique]] = {}
_loaded = False


CATALOG_FACTS = ("family", "devices", "lossless")  # one source of truth: the technique's catalog entry


def register(cls: type[Technique]) -> type[Technique]:
    """Class decorator: the module name, ``cls.name`` and the registry key must agree, and the
    technique's family, devices and losslessness are read from its catalog entry (one place
    for each fact; a class that declares them itself is refused)."""
    from playbooks import catalog

    module_name = cls.__module__.rsplit(".", 1)[-1]
    if cls.name != module_name:
        raise ValueError(f"technique {cls.__name__}.name={cls.name!r} must equal its module name {module_name!r}")
    declared = [a for a in CATALOG_FACTS if a in cls.__dict__]
    if declared:
        raise ValueError(f"technique {cls.name!r} declares {declared}; these come from its catalog entry "
                         f"(playbooks/catalog/*.yaml)")
    if not catalog.has_entry(cls.name):
        raise ValueError(f"technique {cls.name!r} has no catalog entry; add one to playbooks/catalog/<family>.yaml")
    entry = catalog.get_entry(cls.name)
    cls.family = entry.family
    cls.devices = frozenset(entry.hardware.runs_on or entry.hardware.devices)
    cls.lossless = entry.lossless
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"technique {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    import optimizers.techniques as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"optimizers.techniques.{info.name}")
    _loaded = True


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> Technique:
    """The technique instance for ``name``; a clear error lists the valid names."""
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown technique {name!r}; registered techniques: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()


def all_techniques() -> dict[str, type[Technique]]:
    _load_all()
    return dict(_REGISTRY)
