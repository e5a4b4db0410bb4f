"""Decision guide: constraints → ranked playbooks with reasons, per-step verdicts, hardware
warnings and before/after estimates. The rules are data: each library playbook's ``when``
block says which constraint values it serves (``WEIGHTS`` says how much each counts); each
catalog entry says what hardware it needs, how much accuracy it may cost and its nearest
alternatives. This module only matches them (taxonomy: "When to Use" guides + playbooks)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import yaml

from playbooks import catalog
from playbooks import estimate as est
from playbooks.estimate import human_bytes
from playbooks import specs
from playbooks.catalog import CatalogEntry, Effects
from playbooks.constraints import Constraints, load_constraints, tolerance_allows
from playbooks.errors import PlaybookError
from playbooks.schema import LIBRARY_DIR, Playbook, Step
from playbooks.specs import HardwareSpec, ModelSpec

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# How much a `when` key counts when the constraints match it (and costs when they do not).
# `goal` is a hard filter: a playbook for another goal is never recommended.
WEIGHTS: dict[str, float] = {
    "model_kind": 3, "moe": 3, "memory_fit": 3, "context_length": 3, "priority": 3,
    "hardware": 2, "concurrency": 2, "gpus": 2, "accuracy_tolerance": 2,
    "params_b": 1, "data": 1, "runtime": 1, "gpu_memory_gb": 1, "compute_capability": 1,
}
HARD_KEYS = ("goal",)
WHEN_KEYS = (*HARD_KEYS, *WEIGHTS)
MISMATCH_FACTOR = 1.5  # a violated condition costs more than a met one earns
CONTRADICTION_WEIGHT = 3  # a playbook whose condition of this weight the constraints contradict ranks below every other
SPECIFICITY = 4.0  # added to the score's denominator: matching more criteria beats matching few
DROPPED_STEP_COST = 1.5  # a step the constraints rule out (hardware, tolerance) with no alternative
REPLACED_STEP_COST = 0.25  # a step swapped for its nearest catalog alternative
TRAIN_USABLE_FRACTION = 0.95  # training keeps only the CUDA context aside (no KV-cache pool)
BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "fp8": 8, "int8": 8, "int4": 4, "nf4": 4, "nvfp4": 4}


def sparse_24_ratio(precision: str) -> float:
    """2:4 storage (NVIDIA Ampere sparse tensor cores): half the values plus a 2-bit index per
    kept value → 0.5 + 1 / bits of the dense bytes (0.5625 for 16-bit, 0.625 for int8)."""
    return 0.5 + 1 / BITS[precision]


# --- facts: what the constraints say, in the vocabulary of `when` blocks --------------------


@dataclass(frozen=True)
class Facts:
    constraints: Constraints
    spec: ModelSpec
    hw: HardwareSpec
    count: int  # devices (GPUs, or 1 for the CPU)
    context: int
    values: dict[str, Any]


def hardware_tags(hw: HardwareSpec, gpus: int) -> frozenset[str]:
    """Tags a `when.hardware` list may name: cpu | gpu, the architecture, the GPU name, single-/multi-gpu."""
    if not hw.is_gpu:
        return frozenset({"cpu"})
    return frozenset({"gpu", hw.arch, hw.name.lower(), "multi-gpu" if gpus > 1 else "single-gpu"})


def _serve_fit(spec: ModelSpec, hw: HardwareSpec, count: int, context: int, concurrency: int) -> str:
    """Highest weight precision at which the weights plus the KV cache of ``concurrency``
    sequences of ``context`` tokens fit in 90% of memory."""
    budget = est.usable_bytes(hw, count)
    kv = est.sequence_kv_bytes(spec, context) * concurrency
    for precision in ("bf16", "int8", "int4"):
        if est.weight_bytes(spec, precision) + kv <= budget:
            return precision
    return "none"


def _train_levels(goal: str, count: int, seq: int) -> list[tuple[str, est.TrainingSetup]]:
    base = est.TrainingSetup(gpus=count, seq_len=seq)
    levels = [("full", base), ("full_ckpt", base.model_copy(update={"checkpointing": True}))]
    if count > 1:
        levels.append(("sharded", base.model_copy(update={"checkpointing": True, "zero_stage": 3})))
    if goal == "finetune":
        levels.append(("lora", base.model_copy(update={"method": "lora", "checkpointing": True})))
        levels.append(("qlora", base.model_copy(update={"method": "qlora", "checkpointing": True})))
    return levels


def _train_fit(goal: str, spec: ModelSpec, hw: HardwareSpec, count: int, context: int) -> str:
    """First training setup (full → +checkpointing → ZeRO-3 → LoRA → QLoRA) that fits one GPU."""
    budget = hw.memory_bytes * TRAIN_USABLE_FRACTION
    for level, setup in _train_levels(goal, count, context):
        if est.training_memory(spec, setup)["total"] <= budget:
            return level
    return "none"


def memory_fit(c: Constraints, spec: ModelSpec, hw: HardwareSpec, context: int) -> str:
    """Serving: bf16 | int8 | int4 | none. Training: full | full_ckpt | sharded | lora | qlora | none."""
    if c.goal in ("serve", "edge"):
        return _serve_fit(spec, hw, c.device_count, context, c.concurrency)
    return _train_fit(c.goal, spec, hw, c.device_count, context)


def facts(c: Constraints) -> Facts:
    spec, hw = c.model_spec(), c.hardware_spec()
    context = est.default_context(spec, c.context_length)
    values = {
        "goal": c.goal, "priority": c.priority, "accuracy_tolerance": c.accuracy_tolerance, "data": c.data,
        "runtime": None if c.runtime == "any" else c.runtime,
        "model_kind": spec.kind, "moe": spec.is_moe,
        "hardware": hardware_tags(hw, c.gpu_count), "gpus": c.gpu_count,
        "gpu_memory_gb": hw.memory_gib if hw.is_gpu else None, "compute_capability": hw.capability_value,
        "params_b": est.param_count(spec) / 1e9, "context_length": c.context_length,
        "concurrency": c.concurrency, "memory_fit": memory_fit(c, spec, hw, context),
    }
    return Facts(c, spec, hw, c.device_count, context, values)


# --- matching `when` blocks ------------------------------------------------------------------


def matches(spec: Any, fact: Any) -> bool:
    """A `when` value: a list (any of), a {min, max} range, or a single value."""
    if isinstance(spec, dict):
        lo, hi = spec.get("min"), spec.get("max")
        return (lo is None or fact >= lo) and (hi is None or fact <= hi)
    if isinstance(spec, list):
        return bool(fact & set(spec)) if isinstance(fact, frozenset) else fact in spec
    return fact == spec


def describe(spec: Any) -> str:
    if isinstance(spec, dict):
        lo, hi = spec.get("min"), spec.get("max")
        if lo is not None and hi is not None:
            return f"{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"
        return f"≥ {lo:g}" if lo is not None else f"≤ {hi:g}"
    if isinstance(spec, list):
        return " / ".join(str(v) for v in spec)
    return str(spec).lower()


def _show(key: str, fact: Any, spec: Any) -> str:
    if isinstance(fact, frozenset):  # hardware tags: the ones the playbook named, else all
        named = fact & set(spec) if isinstance(spec, list) else frozenset()
        return ", ".join(sorted(named or fact))
    if key == "compute_capability":
        return f"{fact:.1f}"
    if isinstance(fact, float):
        return f"{fact:.3g}"
    return str(fact).lower() if isinstance(fact, bool) else str(fact)


@dataclass
class Match:
    points: float = 0.0
    weight: float = 0.0
    matched: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    contradicted: list[str] = field(default_factory=list)  # missed keys that weigh ≥ CONTRADICTION_WEIGHT


def match_when(when: dict[str, Any], f: Facts) -> Match | None:
    """Score a `when` block against the facts; None when a hard key (goal) rules it out."""
    m = Match()
    for key in HARD_KEYS:
        if key in when and not matches(when[key], f.values[key]):
            return None
    for key, spec in when.items():
        fact = f.values.get(key)
        if key in HARD_KEYS or fact is None:
            continue
        w = WEIGHTS[key]
        m.weight += w
        if matches(spec, fact):
            m.points += w
            m.matched.append(f"{key} {_show(key, fact, spec)} (serves {describe(spec)})")
        else:
            m.points -= w * MISMATCH_FACTOR
            m.missed.append(f"meant for {key} {describe(spec)}; yours is {_show(key, fact, spec)}")
            if w >= CONTRADICTION_WEIGHT:
                m.contradicted.append(key)
    return m


# --- steps: hardware, tolerance, alternatives, verdicts --------------------------------------


def hardware_problem(entry: CatalogEntry, hw: HardwareSpec, gpus: int) -> str | None:
    """Why ``entry`` cannot run on ``gpus`` × ``hw`` (None when it can)."""
    needs = entry.hardware
    if not hw.is_gpu and "cpu" not in needs.devices:
        return "needs a CUDA GPU"
    if hw.is_gpu and "cuda" not in needs.devices:
        return "runs on CPU only"
    if hw.is_gpu and needs.min_cc is not None and hw.capability_value < needs.min_cc:
        return f"needs compute capability ≥ {needs.min_cc:g}; {hw.name} is {hw.compute_capability}"
    if needs.min_gpus > 1 and gpus < needs.min_gpus:
        return f"needs ≥ {needs.min_gpus} GPUs; you have {gpus}"
    return None


def gpu_requirement(entry: CatalogEntry) -> str:
    """Which GPUs would run it, named from the hardware table."""
    needs = entry.hardware
    ok = [h.name for h in specs.hardware_table() if h.is_gpu and (needs.min_cc is None or h.capability_value >= needs.min_cc)]
    parts = ["CUDA"] + ([f"compute capability ≥ {needs.min_cc:g}"] if needs.min_cc else [])
    if needs.min_gpus > 1:
        parts.append(f"≥ {needs.min_gpus} GPUs")
    return f"{', '.join(parts)} (e.g. {', '.join(ok[:6])})"


def _candidates(entry: CatalogEntry) -> Iterable[CatalogEntry]:
    """The entry, then its alternatives breadth-first (nearest first), each once."""
    seen, queue = set(), [entry.id]
    while queue:
        eid = queue.pop(0)
        if eid in seen or not catalog.has_entry(eid):
            continue
        seen.add(eid)
        e = catalog.get_entry(eid)
        yield e
        queue.extend(e.alternatives)


def _blocker(e: CatalogEntry, f: Facts) -> str | None:
    if _present_in_model(e, f.spec):
        return None  # already part of the model: nothing to apply, nothing can change
    if e.model_kinds and f.spec.kind not in e.model_kinds:
        kinds = {"llm": "LLM", "cnn": "CNN", "vit": "ViT", "encoder": "encoder"}
        return f"applies to {' / '.join(kinds[k] for k in e.model_kinds)} models only; this model is a {kinds[f.spec.kind]}"
    problem = hardware_problem(e, f.hw, f.constraints.gpu_count)
    if problem:
        return problem
    if not tolerance_allows(f.constraints.accuracy_tolerance, e.accuracy):
        return f"may change outputs (accuracy: {e.accuracy}) and accuracy_tolerance is {f.constraints.accuracy_tolerance}"
    return None


def _present_in_model(e: CatalogEntry, spec: ModelSpec) -> str | None:
    feature = e.model_feature
    if feature == "gqa" and spec.has_gqa:
        return f"already in the model ({spec.n_kv_heads} K/V heads for {spec.heads} query heads)" if spec.mla is None \
            else "already in the model (multi-head latent attention caches a shared latent)"
    if feature == "mqa" and spec.has_mqa:
        return "already in the model (one K/V head)"
    if feature == "moe" and spec.is_moe:
        return f"already in the model ({spec.moe.experts} experts, top-{spec.moe.active})"
    if feature == "tied" and spec.tie_embeddings:
        return "already in the model (tied embeddings)"
    return None


def verdict(e: CatalogEntry, f: Facts, available: list[tuple[HardwareSpec, int]]) -> str:
    """'runs here' | 'needs GPU …' | 'advice-only: …' for one resolved step."""
    present = _present_in_model(e, f.spec)
    if present:
        return f"advice-only: {present}"
    if e.status != "executable":
        return f"advice-only: {e.reason}"
    devices = e.hardware.runs_on or e.hardware.devices
    if any(("cuda" if hw.is_gpu else "cpu") in devices for hw, _ in available):
        return "runs here"
    if "cuda" not in devices:
        return "needs CPU: this implementation runs on CPU workers only"
    return f"needs GPU: {gpu_requirement(e)}"


@dataclass(frozen=True)
class StepAdvice:
    technique: str
    params: dict[str, Any]
    verdict: str
    entry: CatalogEntry | None = None
    replaces: str | None = None

    @property
    def status(self) -> str:
        """This step's verdict in the one vocabulary (``optimizers.base.VERDICTS``) the pipeline,
        the DB and the UI share; ``verdict`` is the sentence shown beside it."""
        for prefix, status in (("advice-only", "advice_only"), ("needs GPU", "needs_gpu"), ("needs CPU", "refused")):
            if self.verdict.startswith(prefix):
                return status
        return "runs"

    def to_dict(self) -> dict[str, Any]:
        return {"technique": self.technique, "params": dict(self.params), "verdict": self.verdict, "status": self.status}


def resolve_step(step: Step, f: Facts, available: list[tuple[HardwareSpec, int]]) -> tuple[StepAdvice | None, list[str]]:
    """The step itself when the constraints allow it, else its nearest allowed alternative,
    else nothing — with a warning saying which and why."""
    if not catalog.has_entry(step.technique):
        return StepAdvice(step.technique, step.params, "runs here"), [f"{step.technique}: not in the catalog; no checks made"]
    entry = catalog.get_entry(step.technique)
    why = _blocker(entry, f)
    if why is None:
        return StepAdvice(entry.id, step.params, verdict(entry, f, available), entry), []
    for alt in list(_candidates(entry))[1:]:
        if _blocker(alt, f) is None:
            msg = f"{entry.name} {why} → using {alt.name} instead (nearest alternative in the catalog)"
            return StepAdvice(alt.id, dict(step.alternatives.get(alt.id, {})), verdict(alt, f, available), alt,
                              replaces=entry.id), [msg]
    return None, [f"{entry.name} {why}; no alternative in the catalog fits → step dropped"]


def _runtime_warnings(entries: list[CatalogEntry], f: Facts) -> list[str]:
    rt = f.values["runtime"]
    out = []
    for e in entries:
        if rt and e.hardware.runtimes and rt not in e.hardware.runtimes:
            out.append(f"{e.name} is provided by {' / '.join(e.hardware.runtimes)}, not the {rt} runtime you chose")
    return out


def _data_warnings(entries: list[CatalogEntry], f: Facts) -> list[str]:
    have = f.constraints.data
    out = []
    for e in entries:
        if e.needs_data == "calibration" and have == "none":
            out.append(f"{e.name} needs calibration data (a few hundred representative samples); you said data: none")
        if e.needs_data == "training" and have != "training" and e.status == "executable":
            out.append(f"{e.name} needs training data; you said data: {have}")
    return out


# --- estimates before / after ----------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """What the estimator needs to know about the model after some steps."""

    weights: str
    conv_weights: str | None = None  # a CNN's convolutions (None: as the baseline, fp32 / bf16)
    kv_cache: str = "bf16"
    optimizer: str = "adam"
    checkpointing: bool = False
    zero_stage: int = 0
    adapters: str | None = None
    sparsity_2_4: bool = False


def baseline_state(f: Facts) -> State:
    dtype = f.spec.dtype
    weights = "bf16" if dtype in ("bf16", "fp16") else dtype
    return State(weights=weights, conv_weights=weights)


def apply_effects(s: State, effects: Effects, spec: ModelSpec) -> State:
    updates = {k: v for k, v in effects.model_dump().items() if v is not None}
    convs = updates.pop("convs", False)
    w = updates.get("weights")
    if w and est.matrix_bytes(128, 128, w) >= est.matrix_bytes(128, 128, s.weights):
        updates.pop("weights")  # never "quantize" to a bigger format (fp8 checkpoint + int8 step)
    if w and convs and est.matrix_bytes(128, 128, w) < est.matrix_bytes(128, 128, s.conv_weights or s.weights):
        updates["conv_weights"] = w
    return replace(s, **updates)


def _weight_bytes(f: Facts, s: State, active: bool = False) -> int:
    total = est.active_weight_bytes(f.spec, s.weights) if active else \
        est.weight_bytes(f.spec, s.weights, conv_precision=s.conv_weights)
    if s.sparsity_2_4:
        total -= int(est.linear_weight_bytes(f.spec, s.weights, active=active) * (1 - sparse_24_ratio(s.weights)))
    return total


def _serve_metrics(f: Facts, s: State) -> dict[str, Any]:
    wb = _weight_bytes(f, s)
    kv_tok = est.kv_cache_bytes_per_token(f.spec, s.kv_cache)
    kv = est.sequence_kv_bytes(f.spec, f.context, s.kv_cache) * f.constraints.concurrency
    decode = None
    if f.spec.kind == "llm":
        per_token = _weight_bytes(f, s, active=True) + est.sequence_kv_bytes(f.spec, f.context, s.kv_cache)
        decode = f.hw.bandwidth_bytes_per_s * f.count / per_token
    free = est.usable_bytes(f.hw, f.count) - wb
    return {
        "estimated_weight_bytes": wb,
        "estimated_kv_cache_bytes_per_token": kv_tok,
        "estimated_kv_cache_bytes": kv,
        "estimated_memory_bytes": wb + kv,
        "estimated_fits": wb + kv <= est.usable_bytes(f.hw, f.count),
        "estimated_kv_cache_tokens_fit": max(free, 0) // kv_tok if kv_tok else None,
        "estimated_decode_tokens_per_s_bound": decode,
    }


def _train_metrics(f: Facts, s: State) -> dict[str, Any]:
    method = {"qlora": "qlora", "lora": "lora"}.get(s.adapters or "", "full")
    setup = est.TrainingSetup(
        method=method, optimizer=s.optimizer, checkpointing=s.checkpointing,
        zero_stage=s.zero_stage if f.count > 1 else 0, gpus=f.count, seq_len=f.context,
    )
    mem = est.training_memory(f.spec, setup)
    weights = "nf4" if method == "qlora" else s.weights
    return {
        "estimated_weight_bytes": est.weight_bytes(f.spec, weights),
        "estimated_training_bytes": mem["total"],
        "estimated_training_bytes_breakdown": mem,
        "estimated_fits": mem["total"] <= f.hw.memory_bytes * TRAIN_USABLE_FRACTION,
    }


def metrics(f: Facts, s: State) -> dict[str, Any]:
    training = f.constraints.goal in ("pretrain", "finetune")
    return _train_metrics(f, s) if training else _serve_metrics(f, s)


def estimates(f: Facts, steps: list[StepAdvice]) -> dict[str, Any]:
    """Before, after, and after each step, from the estimator (labelled estimated)."""
    state = baseline_state(f)
    before = metrics(f, state)
    per_step = []
    for step in steps:
        if step.entry is not None and not step.verdict.startswith("advice-only: already"):
            state = apply_effects(state, step.entry.effects, f.spec)
        per_step.append({"technique": step.technique, **metrics(f, state)})
    training = f.constraints.goal in ("pretrain", "finetune")
    assumes = ({"method": {"qlora": "QLoRA", "lora": "LoRA"}.get(state.adapters or "", "full fine-tune"),
                "optimizer": state.optimizer, "activation_checkpointing": state.checkpointing,
                "zero_stage": state.zero_stage if f.count > 1 else 0} if training else {"kv_cache": state.kv_cache})
    return {
        "label": "estimated", "model": f.spec.name, "hardware": f.hw.name, "count": f.count,
        "context_length": f.context, "concurrency": f.constraints.concurrency, "assumes": assumes,
        "before": before, "after": per_step[-1] if per_step else before, "per_step": per_step,
    }


# --- recommendations -------------------------------------------------------------------------


@dataclass
class Recommendation:
    playbook: str
    title: str
    score: float
    steps: list[StepAdvice]
    reasons: list[str]
    warnings: list[str]
    estimates: dict[str, Any]
    source: str = ""
    description: str = ""
    expect: list[dict[str, Any]] = field(default_factory=list)
    contradicts: tuple[str, ...] = ()  # `when` keys of weight ≥ CONTRADICTION_WEIGHT the constraints contradict

    def to_dict(self) -> dict[str, Any]:
        """DESIGN.md's recommendation JSON."""
        return {
            "playbook": self.playbook, "title": self.title, "score": self.score,
            "steps": [s.to_dict() for s in self.steps], "reasons": list(self.reasons),
            "warnings": list(self.warnings), "estimates": self.estimates,
        }

    def to_playbook(self) -> Playbook:
        """The playbook as resolved for these constraints (alternatives swapped in), ready to run or save."""
        return Playbook(
            name=self.playbook, title=self.title, source=self.source, description=self.description,
            steps=[Step(technique=s.technique, params=dict(s.params)) for s in self.steps],
            expect=self.expect,
        )


@lru_cache(maxsize=1)
def library() -> dict[str, Playbook]:
    """Every library playbook, parsed (not step-validated: that needs the technique registry,
    and the guide stays torch-free; tests validate every file with ``load_playbook``)."""
    out = {}
    for path in sorted(Path(LIBRARY_DIR).glob("*.yaml")):
        pb = Playbook.model_validate(yaml.load(path.read_text(), Loader=_Loader))
        unknown = set(pb.when) - set(WHEN_KEYS)
        if unknown:
            raise PlaybookError(f"{path.name}: unknown `when` keys {sorted(unknown)}; valid: {', '.join(WHEN_KEYS)}")
        out[pb.name] = pb
    return out


def reload() -> None:
    """Forget cached library and catalog files (after editing them in a running app)."""
    library.cache_clear()
    catalog._load.cache_clear()


def _evidence(steps: list[StepAdvice]) -> list[str]:
    out = []
    for s in steps:
        e = s.entry
        if e is not None and not s.verdict.startswith("advice-only: already"):
            out.append(f"{e.name}: {e.typical_wins}")
    return out


def _estimate_reason(est_doc: dict[str, Any], steps: list["StepAdvice"] | None = None) -> str:
    b, a = est_doc["before"], est_doc["after"]
    key = "estimated_training_bytes" if "estimated_training_bytes" in b else "estimated_memory_bytes"
    text = f"estimated memory {human_bytes(b[key])} → {human_bytes(a[key])}"
    if b.get("estimated_decode_tokens_per_s_bound"):
        text += (f"; decode bound {b['estimated_decode_tokens_per_s_bound']:.0f} → "
                 f"{a['estimated_decode_tokens_per_s_bound']:.0f} tok/s per stream")
    text += f" on {est_doc['count']}× {est_doc['hardware']}"
    left_out = [st.technique for st in steps or () if st.entry is not None and not st.entry.effects.model_dump(exclude_none=True)]
    if left_out:  # the card says which of its steps the estimate cannot see (their effect is measured when run)
        text += f"; not in the estimate: {', '.join(left_out)} (measured when the playbook runs)"
    return text


def _fit_warnings(est_doc: dict[str, Any], f: Facts) -> list[str]:
    after = est_doc["after"]
    if after["estimated_fits"]:
        return []
    if "estimated_training_bytes" in after:
        return [f"even after this playbook, training needs ~{human_bytes(after['estimated_training_bytes'])} per GPU "
                f"(estimated); {f.hw.name} has {human_bytes(f.hw.memory_bytes)}"]
    return [f"even after this playbook, weights + KV cache for {f.constraints.concurrency} × {f.context} tokens need "
            f"~{human_bytes(after['estimated_memory_bytes'])} (estimated); {f.count}× {f.hw.name} offers "
            f"{human_bytes(est.usable_bytes(f.hw, f.count))} usable — paged KV admits fewer sequences at once"]


def _recommend_one(pb: Playbook, f: Facts, available: list[tuple[HardwareSpec, int]]) -> Recommendation | None:
    m = match_when(pb.when, f)
    if m is None:
        return None
    steps, warnings, penalty = [], [], 0.0
    for step in pb.steps:
        advice, notes = resolve_step(step, f, available)
        warnings += notes
        if advice is None:
            penalty += DROPPED_STEP_COST
            continue
        if any(s.technique == advice.technique for s in steps):  # e.g. FP8's int8 stand-in beside an int8 step
            warnings.append(f"{advice.technique} is already a step: the stand-in for {advice.replaces or step.technique} "
                            "is not added twice")
            penalty += DROPPED_STEP_COST
            continue
        penalty += REPLACED_STEP_COST if advice.replaces else 0.0
        steps.append(advice)
    if not steps:
        return None
    score = max(0.0, min(1.0, (m.points - penalty) / (m.weight + SPECIFICITY)))
    entries = [s.entry for s in steps if s.entry is not None]
    est_doc = estimates(f, steps)
    reasons = [f"taxonomy: {pb.source}" if pb.source else f"library playbook {pb.name}"]
    if "goal" in pb.when:
        reasons.append(f"serves goal {f.constraints.goal} ({describe(pb.when['goal'])})")
    reasons += [f"matches {x}" for x in m.matched] + _evidence(steps) + [_estimate_reason(est_doc, steps)]
    warnings = [f"{pb.title}: {x}" for x in m.missed] + warnings
    warnings += _runtime_warnings(entries, f) + _data_warnings(entries, f) + _fit_warnings(est_doc, f)
    return Recommendation(
        playbook=pb.name, title=pb.title, score=round(score, 3), steps=steps, reasons=reasons,
        warnings=warnings, estimates=est_doc, source=pb.source, description=pb.description,
        expect=[g.model_dump(exclude_none=True) for g in pb.expect], contradicts=tuple(m.contradicted),
    )


def _available(c: Constraints, names: Iterable[str] | None) -> list[tuple[HardwareSpec, int]]:
    """Where steps could run: the named hardware (workers), else the constraints' own hardware."""
    if names is None:
        return [(c.hardware_spec(), c.gpu_count)]
    return [(specs.get_hardware(n), 0 if n.lower() == "cpu" else 1) for n in names]


def recommend(constraints: Constraints | dict[str, Any] | str | Path,
              available: Iterable[str] | None = None, limit: int | None = None) -> list[Recommendation]:
    """Ranked recommendations for ``constraints`` (a Constraints, dict, or YAML/JSON path).

    ``available``: hardware-table names the Speedbook workers have (a step "runs here" when
    one of them can run it); default: the hardware named in the constraints."""
    c = load_constraints(constraints)
    f = facts(c)
    avail = _available(c, available)
    recs = [r for pb in library().values() if (r := _recommend_one(pb, f, avail)) is not None]
    # a playbook whose strong conditions the constraints contradict never outranks one they do not
    recs.sort(key=lambda r: (bool(r.contradicts), -r.score, r.playbook))
    fitting = [r for r in recs if r.score > 0]
    if not fitting and recs:  # nothing fits: the closest, said to be no recommendation
        fitting = [replace(recs[0], warnings=["no library playbook's conditions fit these constraints; this is the "
                                              "closest (score 0), not a recommendation", *recs[0].warnings])]
    return fitting[:limit] if limit else fitting


def recommend_json(constraints: Constraints | dict[str, Any] | str | Path,
                   available: Iterable[str] | None = None, limit: int | None = None) -> dict[str, Any]:
    """``speedbook recommend --json``: {"recommendations": [...]}."""
    return {"recommendations": [r.to_dict() for r in recommend(constraints, available, limit)]}
