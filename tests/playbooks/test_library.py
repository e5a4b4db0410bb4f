"""The playbook library: every cross-technique playbook and "when to use" rule of the taxonomy
has a file; every file validates against the technique registry and the catalog, round-trips
YAML → object → YAML → object, and names the taxonomy section it comes from."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from playbooks import catalog, guide
from playbooks.schema import LIBRARY_DIR, library, load_playbook, load_playbook_text

FILES = sorted(Path(LIBRARY_DIR).glob("*.yaml"))
OWN = [f for f in FILES if f.stem != "int8-dynamic"]  # int8-dynamic.yaml is the lead's starter

# Each taxonomy playbook / rule → the library file serving it and words its `source` must quote.
TAXONOMY_PLAYBOOKS = {
    "long-context-serving": "Long-Context LLM Serving (2025 GPUs)",
    "long-context-serving-ampere": "LLM Serving (Long Context)",
    "long-context-throughput": "Long context throughput",
    "lossless-inference": "Inference Optimization",
    "memory-bound-serving": "Memory-bound serving",
    "memory-bound-serving-w8a8": "Memory-Constrained Serving",
    "high-capacity-moe-training": "High-Capacity MoE Training",
    "efficient-llm-training-small-clusters": "Efficient LLM Training on Small Clusters",
    "training-optimization": "Training Optimization",
    "edge-vision": "Edge Vision or On-Device Models",
    "edge-cnn-vit-deployment": "Edge / Device CNN–ViT Deployment",
    "edge-llm-inference": "Edge/device inference",
    "memory-tight-finetuning": "Memory-Tight Fine-Tuning (Single GPU)",
    "cost-efficient-instruction-tuning": "Cost-Efficient Instruction-Tuning (24–48 GB)",
    "vram-bound-training": "VRAM bound at training",
    "multi-tenant-api-throughput": "Multi-Tenant API Throughput",
    "many-small-requests": "Serving many small requests",
    "sparse-aware-acceleration": "Sparse-Aware Acceleration",
    "long-sequence-research": "Long-Sequence Research",
    "low-latency-chat": "Low-Latency Chat (Short Prompts)",
    "latency-sensitive": "Latency-Sensitive Applications",
    "early-exit-easy-inputs": "Latency spikes on easy inputs",
    "throughput-cluster-training": "Throughput-Oriented Cluster Training",
    "training-large-dense-models": "Training large dense models",
    "aggressive-cost-reduction": "Aggressive cost reduction",
    "model-too-big-to-finetune": "Model too big to fine-tune",
    "fixed-compute-scale": "Compute budget fixed; need scale",
}
# Rules folded into a file above, with the words their file's source quotes.
FOLDED_RULES = {
    "long-context-throughput": "Long contexts / high concurrency",
    "memory-tight-finetuning": "Finetuning on limited VRAM",
    "long-sequence-research": "Beyond Transformers",
    "fixed-compute-scale": "Scaling Capacity",
}
LOSSLESS_SAFE = ["long-context-throughput", "lossless-inference", "many-small-requests",
                 "multi-tenant-api-throughput", "latency-sensitive"]


def test_every_taxonomy_playbook_and_rule_has_a_file():
    names = {f.stem for f in FILES}
    for name, words in TAXONOMY_PLAYBOOKS.items():
        assert name in names, f"no library file for the taxonomy's {words!r}"
        assert words in load_playbook(LIBRARY_DIR / f"{name}.yaml").source
    for name, words in FOLDED_RULES.items():
        assert words in load_playbook(LIBRARY_DIR / f"{name}.yaml").source


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_file_validates_and_round_trips(path):
    pb = load_playbook(path)  # every step: a registered technique (params checked) or a catalog id
    assert pb.name == path.stem
    again = load_playbook_text(pb.to_yaml())
    assert again == pb
    assert yaml.safe_load(again.to_yaml()) == yaml.safe_load(pb.to_yaml())


@pytest.mark.parametrize("path", OWN, ids=lambda p: p.stem)
def test_own_playbooks_are_complete(path):
    pb = load_playbook(path)
    assert pb.source.startswith("Part "), "source names the taxonomy part and section"
    assert pb.when.get("goal") and pb.expect and pb.description
    assert set(pb.when) <= set(guide.WHEN_KEYS)
    for step in pb.steps:
        assert catalog.has_entry(step.technique), f"{step.technique} is not a catalog id"


def test_library_loads_whole_and_matches_the_guides_view():
    assert set(library()) == set(guide.library()) == {f.stem for f in FILES}


def _safe(technique: str) -> bool:
    """Lossless, or an architecture feature (GQA) that is a no-op in a model that has it —
    the guide drops it under a lossless tolerance when the model lacks it."""
    e = catalog.get_entry(technique)
    return e.lossless or e.model_feature is not None


@pytest.mark.parametrize("name", LOSSLESS_SAFE)
def test_lossless_safe_playbooks_hold_only_lossless_steps(name):
    pb = guide.library()[name]
    assert not [s.technique for s in pb.steps if not _safe(s.technique)]


def test_a_playbook_that_serves_lossless_holds_only_lossless_steps():
    for pb in guide.library().values():
        if "lossless" in pb.when.get("accuracy_tolerance", []):
            assert all(_safe(s.technique) for s in pb.steps), pb.name


def test_unknown_when_key_is_rejected(tmp_path, monkeypatch):
    (tmp_path / "typo.yaml").write_text(
        "name: typo\ntitle: t\nwhen: {goal: [serve], prioritty: [latency]}\nsteps: [{technique: gqa}]\n")
    monkeypatch.setattr(guide, "LIBRARY_DIR", tmp_path)
    guide.library.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"typo\.yaml: unknown `when` keys \['prioritty'\]"):
            guide.library()
    finally:
        guide.library.cache_clear()
