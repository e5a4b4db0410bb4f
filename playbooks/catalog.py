"""Technique catalog: every technique the taxonomy names, as data (``catalog/*.yaml``, one
file per family) — key idea, papers, the evidence tables' typical wins and trade-offs,
hardware needs, nearest alternatives, and whether Speedbook can run it (``executable``,
naming the registered technique) or only advise on it (``advice-only``, with the reason).
Pure data: importing this module never imports torch."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from playbooks.constraints import Data, Priority, Runtime, Tolerance
from playbooks.specs import Precision

CATALOG_DIR = Path(__file__).parent / "catalog"
FAMILIES: tuple[str, ...] = (
    "pruning", "quantization", "weight_sharing", "low_rank", "distillation", "data", "attention",
    "architecture", "training", "parallelism", "serving", "compilers", "fast_convolution",
)
Family = Literal[
    "pruning", "quantization", "weight_sharing", "low_rank", "distillation", "data", "attention",
    "architecture", "training", "parallelism", "serving", "compilers", "fast_convolution",
]
PLANNED = "planned: technique module not yet registered"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HardwareNeeds(_Strict):
    """What a technique needs to run (and to pay off); checked against the hardware table."""

    devices: list[Literal["cpu", "cuda"]] = Field(["cpu", "cuda"], description="where it runs")
    min_cc: float | None = Field(None, description="minimum CUDA compute capability, e.g. 8.9 for FP8")
    min_gpus: int = Field(1, ge=1, description="GPUs it needs (≥ 2: multi-GPU only)")
    runtimes: list[Runtime] = Field(default_factory=list, description="serving engines that provide it; empty = any")
    runs_on: list[Literal["cpu", "cuda"]] | None = Field(
        None, description="where Speedbook's own implementation runs, when wider than `devices` (e.g. a "
                          "pure-PyTorch NF4 reference runs on CPU though bitsandbytes kernels need CUDA)")
    note: str = ""


class Effects(_Strict):
    """What applying the technique changes, in the estimator's terms."""

    weights: Precision | None = Field(None, description="precision the block matrices end up in")
    convs: bool | None = Field(None, description="the weights precision reaches convolutions too (default: only "
                                                 "nn.Linear layers, as the Linear quantizers here do)")
    kv_cache: Literal["bf16", "fp8", "int8"] | None = None
    optimizer: Literal["adam", "adam8bit"] | None = None
    checkpointing: bool | None = None
    zero_stage: int | None = Field(None, ge=0, le=3)
    adapters: Literal["lora", "qlora"] | None = None
    sparsity_2_4: bool | None = None


class CatalogEntry(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$", description="one name everywhere; equals the technique name when executable")
    name: str
    aliases: list[str] = Field(default_factory=list)
    family: Family
    goal: Literal["train", "infer", "both"]
    key_idea: str
    papers: list[str] = Field(min_length=1, description="canonical papers")
    follow_ups: list[str] = Field(default_factory=list)
    typical_wins: str
    tradeoffs: str
    source: str = Field(description="taxonomy sections that name it (Part I–IV)")
    hardware: HardwareNeeds = Field(default_factory=HardwareNeeds)
    accuracy: Tolerance = Field(description="the least accuracy tolerance it fits: lossless = outputs unchanged")
    helps: list[Priority] = Field(default_factory=list, description="priorities it serves")
    needs_data: Data = "none"
    alternatives: list[str] = Field(default_factory=list, description="catalog ids, nearest first")
    effects: Effects = Field(default_factory=Effects)
    model_feature: Literal["gqa", "mqa", "moe", "tied"] | None = Field(
        None, description="already present in a model that has this feature")
    model_kinds: list[Literal["llm", "encoder", "vit", "cnn"]] = Field(
        default_factory=list, description="the model kinds it applies to (empty: any); e.g. a KV cache needs an LLM")
    status: Literal["executable", "advice_only"]
    technique: str | None = Field(None, description="registered technique name (planned one while advice-only)")
    reason: str | None = Field(None, description="why it is advice-only")

    @model_validator(mode="after")
    def _status(self) -> "CatalogEntry":
        if self.status == "executable" and not self.technique:
            raise ValueError(f"{self.id}: an executable entry names its registered `technique`")
        if self.status == "advice_only" and not self.reason:
            raise ValueError(f"{self.id}: an advice-only entry gives a `reason`")
        return self

    @property
    def lossless(self) -> bool:
        return self.accuracy == "lossless"

    @property
    def names(self) -> list[str]:
        return [self.id, self.name, *self.aliases]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def _norm(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        return yaml.load(path.read_text(), Loader=_Loader) or []
    except yaml.YAMLError as err:
        raise ValueError(f"{path.name}: malformed YAML: {err}") from None


@lru_cache(maxsize=1)
def _load() -> tuple[dict[str, CatalogEntry], dict[str, str]]:
    """Entries by id (family order, then file order) and an index of normalized names → id."""
    by_id: dict[str, CatalogEntry] = {}
    for family in FAMILIES:
        path = CATALOG_DIR / f"{family}.yaml"
        for raw in _read(path):
            try:
                entry = CatalogEntry.model_validate({"family": family, **raw})
            except ValueError as err:
                raise ValueError(f"{path.name}: entry {raw.get('id')!r}: {err}") from None
            if entry.id in by_id:
                raise ValueError(f"catalog id {entry.id!r} appears twice ({path.name})")
            by_id[entry.id] = entry
    index: dict[str, str] = {}
    for entry in by_id.values():
        for name in entry.names:
            index.setdefault(_norm(name), entry.id)
    return by_id, index


def entries() -> list[CatalogEntry]:
    return list(_load()[0].values())


def ids() -> list[str]:
    return list(_load()[0])


def has_entry(entry_id: str) -> bool:
    return entry_id in _load()[0]


def get_entry(entry_id: str) -> CatalogEntry:
    """The entry with this id (or, failing that, this name or alias)."""
    entry = _load()[0].get(entry_id) or find(entry_id)
    if entry is None:
        close = [e.id for e in search(entry_id)][:5]
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `speedbook catalog`"
        raise KeyError(f"no catalog entry {entry_id!r}{hint}")
    return entry


def find(name: str) -> CatalogEntry | None:
    """Look up by id, name or alias, ignoring case and punctuation ("LLM.int8" → llm_int8)."""
    entry_id = _load()[1].get(_norm(name))
    return None if entry_id is None else _load()[0][entry_id]


def _score(entry: CatalogEntry, words: list[str]) -> int:
    """2 per word found in a name, 1 per word found only in the idea, papers or trade-offs."""
    names = " ".join(entry.names).lower()
    body = " ".join([entry.key_idea, *entry.papers, *entry.follow_ups, entry.typical_wins, entry.tradeoffs]).lower()
    score = 0
    for w in words:
        if w in names:
            score += 2
        elif w in body:
            score += 1
        else:
            return 0
    return score


def search(text: str = "", family: str | None = None, goal: str | None = None,
           status: str | None = None) -> list[CatalogEntry]:
    """Entries matching every word of ``text`` (names rank first), filtered by family,
    goal (``train`` also matches ``both``) and status."""
    words = text.lower().split()
    hits = []
    for pos, entry in enumerate(entries()):
        if family and entry.family != family:
            continue
        if goal and entry.goal not in (goal, "both"):
            continue
        if status and entry.status != status:
            continue
        score = _score(entry, words) if words else 1
        if score:
            hits.append((-score, pos, entry))
    return [e for _, _, e in sorted(hits, key=lambda t: t[:2])]


def families() -> list[str]:
    return [f for f in FAMILIES if any(e.family == f for e in entries())]


def executable_ids() -> list[str]:
    return [e.id for e in entries() if e.status == "executable"]


def evidence_table() -> list[dict[str, str]]:
    """One row per entry in the taxonomy's evidence-table columns (for the Catalog page)."""
    return [
        {
            "technique": e.name, "id": e.id, "family": e.family, "goal": e.goal, "key_idea": e.key_idea,
            "papers": "; ".join(e.papers), "follow_ups": "; ".join(e.follow_ups),
            "typical_wins": e.typical_wins, "tradeoffs": e.tradeoffs, "status": e.status,
        }
        for e in entries()
    ]


def catalog_json() -> dict[str, Any]:
    """``speedbook catalog --json``: {"families": [...], "entries": [entry, ...]}."""
    return {"families": families(), "entries": [e.to_dict() for e in entries()]}
