"""The technique catalog: every taxonomy item is in it (by id, name or alias), every entry is
well-formed, executable entries name registered techniques, hardware needs carry the
compatibility rules, and the module stays torch-free."""
from __future__ import annotations

import subprocess
import sys

import pytest

from playbooks import catalog

# Every technique issue 3 item 1 lists, family by family (the taxonomy's names).
TAXONOMY_ITEMS = {
    "pruning": ["OBD", "OBS", "magnitude pruning", "iterative pruning", "SNIP", "lottery ticket",
                "movement pruning", "structured pruning", "channel pruning", "filter pruning", "head pruning",
                "AMC", "MorphNet", "MetaPruning", "NetAdapt", "RigL", "SET", "GMP", "N:M sparsity",
                "2:4 sparsity", "SparseGPT", "Wanda"],
    "quantization": ["PTQ", "QAT", "INT8", "INT4", "LLM.int8", "SmoothQuant", "GPTQ", "AWQ", "AQLM",
                     "ZeroQuant", "Q-BERT", "BNN", "XNOR-Net", "DoReFa-Net", "FP8 E4M3", "FP8 E5M2", "FP4",
                     "NVFP4", "NF4", "QLoRA"],
    "weight_sharing": ["HashedNets", "ALBERT", "tied embeddings", "Deep Compression", "Huffman coding"],
    "low_rank": ["SVD", "CP decomposition", "Tucker", "Tensor-Train", "LoRA", "DoRA", "AdapterFusion"],
    "distillation": ["Hinton KD", "FitNets", "Born-Again Networks", "DistilBERT", "TinyBERT", "MobileBERT",
                     "MiniLM", "Patient KD", "self-distillation"],
    "data": ["dataset distillation", "data pruning", "EL2N", "forgetting events", "curriculum learning",
             "self-paced learning"],
    "attention": ["FlashAttention", "FlashAttention-2", "FlashAttention-3", "paged attention", "Linformer",
                  "Performer", "Reformer", "Longformer", "BigBird", "Nyströmformer", "MQA", "GQA",
                  "attention sinks", "streaming attention", "prefix caching", "chunked prefill"],
    "architecture": ["MoE", "Switch Transformer", "GShard", "Mixtral", "DeepSeek-V3", "V-MoE", "early exit",
                     "BranchyNet", "MSDNet", "DeeBERT", "PABEE", "SkipNet", "BlockDrop", "token pruning",
                     "token merging", "NAS", "MnasNet", "EfficientNet", "ProxylessNAS", "ENAS", "Once-for-All",
                     "MobileNet", "ShuffleNet", "Xception", "SqueezeNet", "GhostNet", "Mamba", "SSM", "Net2Net"],
    "training": ["FP16 mixed precision", "BF16 mixed precision", "FP8 training", "activation checkpointing",
                 "ZeRO", "FSDP", "Ulysses", "sequence parallelism", "4-D parallelism", "8-bit Adam",
                 "LayerDrop", "stochastic depth", "progressive growing", "forward-forward"],
    "serving": ["paged KV cache", "continuous batching", "speculative decoding", "Medusa", "EAGLE",
                "self-speculative decoding", "multi-token prediction", "CUDA graphs", "kernel fusion",
                "graph fusion", "TorchInductor", "Triton", "TensorRT-LLM", "XLA", "IREE", "Marlin",
                "tensor parallelism", "pipeline parallelism", "expert parallelism"],
    "fast_convolution": ["FFT convolution", "Winograd"],
}

# The executable techniques issue 3 names (the registry keys); each has a catalog entry of the same id.
TECHNIQUE_NAMES = ["int8_dynamic", "int8_weight_only", "int4_weight_only", "smoothquant", "gptq", "awq",
                   "nf4", "fp8", "llm_int8", "qat", "triton_kernels"]


@pytest.mark.parametrize("name", [n for names in TAXONOMY_ITEMS.values() for n in names])
def test_every_taxonomy_item_is_in_the_catalog(name):
    assert catalog.find(name) is not None, f"{name!r} is not an id, name or alias of any catalog entry"


def test_catalog_entries_are_well_formed():
    entries = catalog.entries()
    ids = [e.id for e in entries]
    assert len(ids) == len(set(ids))
    assert set(catalog.families()) == set(catalog.FAMILIES)
    for e in entries:
        assert e.papers and e.key_idea and e.typical_wins and e.tradeoffs and e.source, e.id
        for alt in e.alternatives:
            assert catalog.has_entry(alt), f"{e.id}: alternative {alt!r} is not a catalog id"
            assert alt != e.id


def test_names_and_aliases_are_unambiguous():
    owner: dict[str, str] = {}
    for e in catalog.entries():
        for n in {catalog._norm(x) for x in e.names}:
            assert owner.setdefault(n, e.id) == e.id, f"{n!r} names both {owner[n]} and {e.id}"


def test_technique_names_are_catalog_ids():
    for name in TECHNIQUE_NAMES:
        entry = catalog.get_entry(name)
        assert entry.id == name and entry.technique == name


def test_executable_entries_name_registered_techniques():
    from optimizers import registry

    registered = set(registry.names())
    for e in catalog.entries():
        if e.status == "executable":
            assert e.technique in registered, f"{e.id} is executable but {e.technique!r} is not registered"


def test_registered_techniques_are_executable_entries():
    """A technique registered since the catalog was written: flip its entry to executable."""
    from optimizers import registry

    for name in registry.names():
        entry = catalog.get_entry(name)
        assert entry.status == "executable", f"{name} is registered: set status: executable in the catalog"


def test_techniques_read_devices_family_and_losslessness_from_the_catalog():
    """One source of truth: a class that declared its own copy could drift from the catalog."""
    import inspect
    import re

    from optimizers import registry

    for name, cls in registry.all_techniques().items():
        e = catalog.get_entry(name)
        assert not re.search(r"^    (family|devices|lossless) = ", inspect.getsource(cls), re.M), name
        assert (cls.family, cls.lossless) == (e.family, e.lossless)
        assert cls.devices == frozenset(e.hardware.runs_on or e.hardware.devices), name


def test_a_technique_declaring_a_catalog_fact_is_refused():
    from optimizers.base import Technique
    from optimizers.registry import register

    cls = type("Fp8", (Technique,), {"name": "fp8", "devices": frozenset({"cpu"}), "__module__": "x.fp8"})
    with pytest.raises(ValueError, match=r"declares \['devices'\]; these come from its catalog entry"):
        register(cls)


def test_advice_only_entries_say_why():
    for e in catalog.entries():
        if e.status == "advice_only":
            assert e.reason and len(e.reason) > 10, e.id


@pytest.mark.parametrize("entry_id, min_cc", [
    ("fp8", 8.9), ("fp8_training", 8.9), ("nm_sparsity", 8.0), ("flash_attention_3", 9.0), ("nvfp4", 10.0),
    ("bf16_mixed_precision", 8.0), ("marlin", 8.0), ("flash_attention", 8.0),
])
def test_compute_capability_rules(entry_id, min_cc):
    assert catalog.get_entry(entry_id).hardware.min_cc == min_cc


@pytest.mark.parametrize("entry_id", ["llm_int8", "nf4", "qlora", "adam_8bit", "marlin", "tensorrt_llm", "cuda_graphs"])
def test_cuda_only_rules(entry_id):
    assert catalog.get_entry(entry_id).hardware.devices == ["cuda"]


@pytest.mark.parametrize("entry_id", ["zero", "fsdp", "tensor_parallel", "pipeline_parallel", "expert_parallel",
                                      "sequence_parallel", "ulysses"])
def test_multi_gpu_rules(entry_id):
    assert catalog.get_entry(entry_id).hardware.min_gpus >= 2


def test_lossless_entries_are_exact_techniques():
    lossless = {e.id for e in catalog.entries() if e.lossless}
    assert {"flash_attention", "paged_kv_cache", "continuous_batching", "speculative_decoding"} <= lossless
    assert not lossless & {"smoothquant", "gptq", "awq", "fp8", "int4_weight_only", "nm_sparsity", "mqa"}


def test_lookup_by_alias_and_errors():
    assert catalog.find("llm.int8()").id == "llm_int8"
    assert catalog.get_entry("W8A8").id == "smoothquant"
    with pytest.raises(KeyError, match="no catalog entry 'quantum_pruning'"):
        catalog.get_entry("quantum_pruning")


def test_search_filters_and_ranks():
    hits = catalog.search("quantization")
    assert hits and all(h.family in ("quantization", "low_rank", "weight_sharing", "distillation", "training", "compilers")
                        for h in hits[:5])
    assert catalog.search("awq")[0].id == "awq"
    assert all(h.family == "attention" for h in catalog.search(family="attention"))
    assert all(h.goal in ("train", "both") for h in catalog.search(goal="train"))
    assert {h.id for h in catalog.search(status="executable")} == set(catalog.executable_ids())
    assert catalog.search("no-such-technique-xyz") == []


def test_catalog_json_and_evidence_table_are_serializable():
    import json

    doc = catalog.catalog_json()
    assert len(doc["entries"]) == len(catalog.entries())
    json.dumps(doc)
    rows = catalog.evidence_table()
    assert {"technique", "key_idea", "papers", "typical_wins", "tradeoffs", "status"} <= set(rows[0])


def test_knowledge_modules_import_without_torch():
    code = ("import sys, playbooks.catalog, playbooks.guide, playbooks.estimate, playbooks.constraints; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
