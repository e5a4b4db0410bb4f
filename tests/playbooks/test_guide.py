"""The decision guide: the taxonomy's own scenarios get the playbook the taxonomy names first;
a lossless tolerance never yields a lossy step; hardware never gets a step it cannot run
(nearest alternative + warning instead); verdicts, estimates and JSON follow DESIGN.md."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from playbooks import catalog, guide, specs
from playbooks.constraints import load_constraints, parse_constraints
from playbooks.errors import ConstraintError, PlaybookError
from playbooks.schema import Step, parse_playbook

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# example → (the playbook the taxonomy names, techniques it must contain after hardware resolution)
SCENARIOS = {
    "long-context-serving": ("long-context-serving", {"gqa", "flash_attention_3", "smoothquant", "paged_kv_cache",
                                                      "continuous_batching", "speculative_decoding"}),
    "low-latency-chat": ("low-latency-chat", {"gqa", "flash_attention", "cuda_graphs", "fp8", "speculative_decoding"}),
    "serve-70b-one-gpu": ("memory-bound-serving", {"awq", "marlin", "flash_attention", "paged_kv_cache"}),
    "finetune-70b-48gb": ("memory-tight-finetuning", {"nf4", "qlora", "bf16_mixed_precision", "activation_checkpointing",
                                                      "gradient_accumulation"}),
    "train-7b-8gpu": ("efficient-llm-training-small-clusters", {"bf16_mixed_precision", "zero", "activation_checkpointing",
                                                                "sequence_parallel", "adam_8bit"}),
    "edge-cnn-cpu": ("edge-vision", {"structured_pruning", "int8_dynamic", "early_exit", "onnx_runtime"}),
    "moe-capacity": ("high-capacity-moe-training", {"expert_parallel", "flash_attention", "int8_weight_only", "smoothquant"}),
    "sparse-a100": ("sparse-aware-acceleration", {"nm_sparsity", "knowledge_distillation", "smoothquant"}),
    "long-sequence-research": ("long-sequence-research", {"mamba", "reformer", "performer", "lora"}),
}
VERDICT_PREFIXES = ("runs here", "needs GPU: ", "needs CPU: ", "advice-only: ")


@pytest.mark.parametrize("example", SCENARIOS)
def test_taxonomy_scenario_gets_the_named_playbook_first(example):
    expected, techniques = SCENARIOS[example]
    recs = guide.recommend(EXAMPLES / f"{example}.yaml")
    first = recs[0]
    assert first.playbook == expected, [(r.playbook, r.score) for r in recs[:3]]
    assert techniques <= {s.technique for s in first.steps}
    assert first.score > recs[1].score


def test_long_context_serving_reasons_cite_the_taxonomy_and_evidence():
    first = guide.recommend(EXAMPLES / "long-context-serving.yaml")[0]
    assert first.reasons[0].startswith("taxonomy: Part I §7")
    assert any("context_length 131072" in r for r in first.reasons)
    assert any(r.startswith("SmoothQuant (W8A8): ~1.3–1.6× speed") for r in first.reasons)
    gqa = next(s for s in first.steps if s.technique == "gqa")
    assert gqa.verdict == "advice-only: already in the model (8 K/V heads for 32 query heads)"


def test_fp8_on_ampere_becomes_int8_with_a_warning():
    first = guide.recommend(EXAMPLES / "sparse-a100.yaml")[0]
    assert "fp8" not in {s.technique for s in first.steps}
    assert any("FP8 quantization" in w and "≥ 8.9" in w and "SmoothQuant" in w for w in first.warnings)


def facts_for(gpu: str | None, count: int = 1, **kw):
    hw = {"gpu": gpu, "count": count} if gpu else {"cpu": True}
    return guide.facts(parse_constraints({"goal": "serve", "model": "Llama-3.1-8B", "hardware": hw, **kw}))


@pytest.mark.parametrize("technique, gpu, count, expected", [
    ("flash_attention_3", "A100-80GB", 1, "flash_attention"),   # FA3: Hopper only
    ("flash_attention_3", "T4", 1, "sdpa"),                     # FA2 needs Ampere too
    ("flash_attention_3", "H100", 1, "flash_attention_3"),
    ("fp8", "L4", 1, "fp8"),                                    # Ada 8.9 has FP8
    ("fp8", "A100-40GB", 1, "smoothquant"),
    ("nvfp4", "B200", 1, "nvfp4"),                              # Blackwell only
    ("nvfp4", "H100", 1, "fp8"),
    ("nm_sparsity", "T4", 1, "structured_pruning"),             # 2:4 tensor cores from 8.0
    ("nm_sparsity", "A10G", 1, "nm_sparsity"),
    ("bf16_mixed_precision", "V100-32GB", 1, "fp16_mixed_precision"),  # no bf16 before Ampere
    ("llm_int8", None, 0, "int8_weight_only"),                  # bitsandbytes: CUDA only
    ("marlin", None, 0, "int4_weight_only"),
    ("zero", "H100", 1, "zero_offload"),                        # ZeRO needs ≥ 2 GPUs
    ("zero", "H100", 8, "zero"),
    ("int8_dynamic", "H100", 1, "int8_weight_only"),            # PyTorch dynamic quant: CPU only
])
def test_incompatible_steps_get_the_nearest_alternative(technique, gpu, count, expected):
    f = facts_for(gpu, count, accuracy_tolerance="moderate")
    advice, warnings = guide.resolve_step(Step(technique=technique), f, [(f.hw, f.constraints.gpu_count)])
    assert advice.technique == expected
    assert bool(warnings) == (expected != technique)


def test_a_step_with_no_compatible_alternative_is_dropped_with_a_warning():
    f = facts_for(None)
    advice, warnings = guide.resolve_step(Step(technique="adam_8bit"), f, [(f.hw, 0)])
    assert advice is None and "needs a CUDA GPU" in warnings[0] and "step dropped" in warnings[0]


def test_lossless_tolerance_drops_lossy_steps():
    f = facts_for("H100", accuracy_tolerance="lossless")
    advice, warnings = guide.resolve_step(Step(technique="smoothquant"), f, [(f.hw, 1)])
    assert advice is None and "accuracy_tolerance is lossless" in warnings[0]


GRID_MODELS = ["Llama-3.1-8B", "Llama-2-7B", "Llama-3.1-70B", "Mixtral-8x7B", "BERT-base", "ResNet-50"]
GRID_HW = [{"gpu": "H100", "count": 1}, {"gpu": "A100-80GB", "count": 8}, {"gpu": "T4", "count": 1}, {"cpu": True}]
GRID = list(itertools.product(["serve", "edge", "finetune", "pretrain"], GRID_MODELS, GRID_HW))


def _grid(**kw):
    for goal, model, hw in GRID:
        c = parse_constraints({"goal": goal, "model": model, "hardware": hw, "data": "training", **kw})
        yield c, guide.recommend(c)


def test_lossless_never_yields_a_lossy_step():
    for c, recs in _grid(accuracy_tolerance="lossless", priority="throughput"):
        for r in recs:
            for s in r.steps:
                e = catalog.get_entry(s.technique)
                assert e.lossless or s.verdict.startswith("advice-only: already"), (c.goal, c.model, r.playbook, s.technique)


def test_hardware_never_gets_a_step_it_cannot_run():
    for c, recs in _grid(accuracy_tolerance="aggressive", priority="latency"):
        hw = c.hardware_spec()
        for r in recs:
            for s in r.steps:
                problem = guide.hardware_problem(catalog.get_entry(s.technique), hw, c.gpu_count)
                assert problem is None, (hw.name, r.playbook, s.technique, problem)


def test_goal_is_a_hard_filter():
    serve = guide.recommend(EXAMPLES / "low-latency-chat.yaml")
    assert all("serve" in guide.library()[r.playbook].when["goal"] for r in serve)


def test_verdicts_depend_on_where_steps_can_run():
    edge = EXAMPLES / "edge-cnn-cpu.yaml"
    here = {s.technique: s.verdict for s in guide.recommend(edge)[0].steps}
    assert here["int8_dynamic"] == "runs here"
    gpu_only = {s.technique: s.verdict for s in guide.recommend(edge, available=["H100"])[0].steps}
    assert gpu_only["int8_dynamic"].startswith("needs CPU: ")
    for r in guide.recommend(EXAMPLES / "long-context-serving.yaml"):
        for s in r.steps:
            assert s.verdict.startswith(VERDICT_PREFIXES)
            entry = catalog.get_entry(s.technique)
            if entry.status == "advice_only":
                assert s.verdict.startswith("advice-only: ")


def test_recommend_json_has_the_design_shape():
    doc = guide.recommend_json(EXAMPLES / "long-context-serving.yaml")
    json.dumps(doc)
    rec = doc["recommendations"][0]
    assert list(rec) == ["playbook", "title", "score", "steps", "reasons", "warnings", "estimates"]
    assert list(rec["steps"][0]) == ["technique", "params", "verdict", "status"]
    from optimizers.base import VERDICTS

    assert all(s["status"] in VERDICTS for r in doc["recommendations"] for s in r["steps"])  # one vocabulary
    assert 0 < rec["score"] <= 1
    recs = guide.recommend(EXAMPLES / "long-context-serving.yaml")
    order = [(bool(r.contradicts), -r.score) for r in recs]  # uncontradicted first, each group by score
    assert order == sorted(order) and all(r.score > 0 for r in recs)


def test_truthful_ranking_over_the_scenarios():
    """No duplicate steps, no score-0 recommendation, no contradicted playbook above an uncontradicted one."""
    for example in sorted(EXAMPLES.glob("*.yaml")):
        recs = guide.recommend(example)
        assert recs, example.name
        for r in recs:
            names = [s.technique for s in r.steps]
            assert len(names) == len(set(names)), (example.name, r.playbook, names)
            assert r.score > 0 or len(recs) == 1, (example.name, r.playbook)
        flags = [bool(r.contradicts) for r in recs]
        assert flags == sorted(flags), (example.name, [(r.playbook, r.contradicts) for r in recs])


def test_a_contradicted_playbook_is_not_ranked_first():
    c = {"goal": "serve", "model": "Llama-3.1-8B", "hardware": {"gpu": "A100-80GB"}, "context_length": 8192,
         "priority": "throughput"}
    first = guide.recommend(c)[0]
    assert not first.contradicts, (first.playbook, first.contradicts)


def test_estimates_before_after_and_per_step():
    first = guide.recommend(EXAMPLES / "serve-70b-one-gpu.yaml")[0]
    est = first.estimates
    assert est["label"] == "estimated" and len(est["per_step"]) == len(first.steps)
    before, after = est["before"], est["after"]
    assert not before["estimated_fits"] and after["estimated_fits"]  # 141 GB bf16 → ~40 GB AWQ on 80 GB
    assert after["estimated_weight_bytes"] < 0.31 * before["estimated_weight_bytes"]  # observed 0.303 (16-bit embeddings)
    assert after["estimated_decode_tokens_per_s_bound"] > 3 * before["estimated_decode_tokens_per_s_bound"]
    train = guide.recommend(EXAMPLES / "finetune-70b-48gb.yaml")[0].estimates
    assert train["after"]["estimated_training_bytes"] < 0.05 * train["before"]["estimated_training_bytes"]


def test_2_4_sparsity_storage_ratio():
    assert guide.sparse_24_ratio("bf16") == 0.5625 and guide.sparse_24_ratio("int8") == 0.625


def test_resolved_playbook_validates_and_runs_through_the_schema():
    for example in ("edge-cnn-cpu", "sparse-a100", "finetune-70b-48gb"):
        pb = guide.recommend(EXAMPLES / f"{example}.yaml")[0].to_playbook()
        assert parse_playbook(yaml_dump(pb)).steps == pb.steps


def yaml_dump(pb):
    import yaml

    return yaml.safe_load(pb.to_yaml())


def test_recommend_accepts_a_dict_and_reports_bad_constraints():
    recs = guide.recommend({"goal": "edge", "model": "MobileNetV2", "hardware": {"cpu": True},
                            "priority": "latency", "accuracy_tolerance": "moderate"}, limit=2)
    assert len(recs) == 2 and recs[0].playbook == "edge-vision"
    with pytest.raises(ConstraintError, match="hardware.gpu: unknown GPU"):
        guide.recommend({"goal": "serve", "model": "GPT-2", "hardware": {"gpu": "H1000"}})


def test_every_hardware_row_and_goal_gets_an_answer():
    for hw, goal in itertools.product(specs.hardware_names(), ["serve", "edge", "finetune", "pretrain"]):
        hardware = {"cpu": True} if hw == "CPU" else {"gpu": hw}
        assert guide.recommend({"goal": goal, "model": "Llama-3.1-8B", "hardware": hardware}), (hw, goal)


def test_a_swapped_in_alternative_gets_the_params_the_playbook_gives_it():
    edge = {s.technique: s.params for s in guide.recommend(EXAMPLES / "edge-cnn-cpu.yaml")[0].steps}
    assert edge["onnx_runtime"] == {"precision": "int8_static"}  # TensorRT's CPU stand-in, with the step's own config
    with pytest.raises(PlaybookError, match=r"steps\[0\] \(tensorrt_llm\)\.alternatives\.onnx_runtime\.precision"):
        parse_playbook({"name": "x", "title": "x", "steps": [
            {"technique": "tensorrt_llm", "alternatives": {"onnx_runtime": {"precision": "int3"}}}]})
    with pytest.raises(PlaybookError, match="not a registered technique"):
        parse_playbook({"name": "x", "title": "x", "steps": [
            {"technique": "tensorrt_llm", "alternatives": {"tensorrt": {}}}]})


def test_a_context_beyond_the_models_limit_is_an_error_naming_the_field():
    with pytest.raises(ConstraintError, match=r"context_length.*131,072-token context"):
        parse_constraints({"goal": "serve", "model": "Llama-3.1-8B", "hardware": {"gpu": "A100-80GB"},
                           "context_length": 1_000_000})
    assert parse_constraints({"goal": "serve", "model": "Llama-3.1-8B", "hardware": {"gpu": "A100-80GB"},
                              "context_length": 131_072}).context_length == 131_072


def test_a_linear_only_quantizer_leaves_a_cnns_convolutions_alone_in_the_estimate():
    from playbooks import estimate as est

    rec = guide.recommend(EXAMPLES / "edge-cnn-cpu.yaml")[0]
    by_step = {p["technique"]: p["estimated_weight_bytes"] for p in rec.estimates["per_step"]}
    spec = specs.get_model("ResNet-50")
    fc_saving = est.matrix_bytes(spec.linear_params // 128, 128, "fp32") - est.matrix_bytes(spec.linear_params // 128, 128, "int8")
    assert rec.estimates["before"]["estimated_weight_bytes"] - by_step["int8_dynamic"] == fc_saving  # the classifier only
    assert any("not in the estimate: structured_pruning" in x for x in rec.reasons)
    half = guide.apply_effects(guide.baseline_state(guide.facts(load_constraints(EXAMPLES / "edge-cnn-cpu.yaml"))),
                               catalog.get_entry("half_precision").effects, spec)
    assert half.conv_weights == "bf16"  # a cast reaches the convolutions


def test_a_training_card_says_what_its_estimate_assumes_and_the_fitting_recipe_ranks_first():
    recs = guide.recommend(EXAMPLES / "finetune-70b-48gb.yaml")
    first = recs[0].estimates
    assert first["assumes"]["method"] == "QLoRA" and first["assumes"]["activation_checkpointing"] is True
    assert first["after"]["estimated_fits"] and first["context_length"] > 0


def test_a_step_for_another_kind_of_model_is_not_offered():
    for r in guide.recommend(EXAMPLES / "edge-cnn-cpu.yaml"):
        assert "continuous_batching" not in [s.technique for s in r.steps], r.playbook  # no KV cache in a CNN
    assert any("applies to LLM models only; this model is a CNN" in w
               for r in guide.recommend(EXAMPLES / "edge-cnn-cpu.yaml") for w in r.warnings)
    serving = {s.technique for r in guide.recommend(EXAMPLES / "long-context-serving.yaml") for s in r.steps}
    assert "paged_kv_cache" in serving or "continuous_batching" in serving  # an LLM keeps them
