"""The estimator and spec tables: published parameter counts pinned, KV-cache bytes (GQA,
MLA), weight bytes per precision against this project's own packing layouts, training memory
(ZeRO, 8-bit Adam, QLoRA), roofline bounds, and the estimate JSON of DESIGN.md."""
from __future__ import annotations

import json

import pytest

from playbooks import estimate as E
from playbooks import specs

REQUIRED_HARDWARE = ["A100-40GB", "A100-80GB", "H100", "H200", "B200", "L4", "L40S", "RTX-4090", "T4", "CPU"]
REQUIRED_MODELS = ["Llama-2-7B", "Llama-2-13B", "Llama-2-70B", "Llama-3.1-8B", "Llama-3.1-70B", "Llama-3.1-405B",
                   "Mistral-7B", "Mixtral-8x7B", "Qwen2.5-7B", "Qwen2.5-72B", "DeepSeek-V3", "GPT-2", "BERT-base",
                   "ViT-B/16", "ResNet-50", "MobileNetV2"]


def test_tables_hold_the_required_rows():
    assert set(REQUIRED_HARDWARE) <= set(specs.hardware_names())
    assert set(REQUIRED_MODELS) <= set(specs.model_names())


@pytest.mark.parametrize("name, cc, bf16", [
    ("A100-80GB", (8, 0), True), ("H100", (9, 0), True), ("B200", (10, 0), True), ("L4", (8, 9), True),
    ("T4", (7, 5), False), ("V100-32GB", (7, 0), False),
])
def test_hardware_capabilities(name, cc, bf16):
    hw = specs.get_hardware(name)
    assert hw.capability == cc and hw.supports("bf16") is bf16


def test_hardware_lookup_ignores_case_and_accepts_aliases():
    assert specs.get_hardware("h100-sxm").name == "H100"
    with pytest.raises(ValueError, match="unknown hardware 'H1000'; valid choices: A100-40GB"):
        specs.get_hardware("H1000")


@pytest.mark.parametrize("model", [m.name for m in specs.model_table() if m.published_params])
def test_param_count_matches_the_published_count(model):
    spec = specs.get_model(model)
    assert E.param_count(spec) == spec.published_params


def test_llama_3_1_8b_published_facts():
    spec = specs.get_model("Llama-3.1-8B")
    assert E.param_count(spec) == 8_030_261_248
    assert E.kv_cache_bytes_per_token(spec, "bf16") == 131_072  # 2 · 32 layers · 8 KV heads · 128 · 2 bytes
    assert E.kv_cache_bytes_per_token(spec, "fp8") == 65_536


@pytest.mark.parametrize("model, kv_bytes", [
    ("Llama-2-7B", 524_288),    # MHA: 2 · 32 · 32 · 128 · 2
    ("Llama-2-70B", 327_680),   # GQA 8: 2 · 80 · 8 · 128 · 2
    ("Qwen2.5-7B", 57_344),     # GQA 4: 2 · 28 · 4 · 128 · 2
    ("DeepSeek-V3", 70_272),    # MLA: 61 · (512 + 64) · 2
    ("BERT-base", 0),           # encoder: no KV cache
])
def test_kv_cache_bytes_per_token(model, kv_bytes):
    assert E.kv_cache_bytes_per_token(specs.get_model(model)) == kv_bytes


def test_moe_totals_and_active_params():
    mixtral = specs.get_model("Mixtral-8x7B")
    assert E.active_param_count(mixtral) == 12_879_925_248  # ~12.9B active of 46.7B (Mixtral paper)
    ds = specs.get_model("DeepSeek-V3")
    assert E.param_count(ds) == 671_026_419_200  # "671B total" (DeepSeek-V3 report; MTP module excluded)
    assert 37.0e9 < E.active_param_count(ds) < 38.0e9  # "37B activated"


def test_mistral_sliding_window_caps_the_sequence_cache():
    spec = specs.get_model("Mistral-7B")
    assert E.sequence_kv_bytes(spec, 32_768) == 4096 * E.kv_cache_bytes_per_token(spec)


def test_weight_bytes_per_precision():
    spec = specs.get_model("Llama-3.1-8B")
    table = E.weight_bytes_table(spec)
    assert table["bf16"] == 2 * 8_030_261_248
    assert table["fp32"] == 4 * 8_030_261_248
    assert table["fp32"] > table["bf16"] > table["int8"] > table["int4"] > table["nf4"]
    linear = E.param_breakdown(spec)["linear"]
    # nf4: QLoRA's 4.127 bits per weight on the block matrices
    assert E.linear_weight_bytes(spec, "nf4") * 8 / linear == pytest.approx(4.127, abs=0.001)


@pytest.mark.parametrize("shape", [(384, 256), (1000, 512), (7, 128)])
def test_matrix_bytes_equal_this_projects_packed_layouts(shape):
    torch = pytest.importorskip("torch")
    from quant import packing

    w = torch.randn(*shape)
    q, scale = packing.quantize_int8_per_channel(w)
    assert E.matrix_bytes(*shape, "int8") == q.numel() * q.element_size() + scale.numel() * scale.element_size()
    codes, s4, z4 = packing.quantize_int4_groupwise(w, group_size=128)
    packed = packing.pack_int4(codes)
    real = packed.numel() + (s4.numel() + z4.numel()) * 4
    assert E.matrix_bytes(*shape, "int4", group_size=128) == real


def test_training_memory_follows_the_zero_paper():
    spec = specs.get_model("Llama-2-7B")
    psi = E.param_count(spec)
    plain = E.training_memory(spec, E.TrainingSetup())
    assert plain["weights"] + plain["gradients"] + plain["optimizer_states"] == 16 * psi  # 2Ψ + 2Ψ + 12Ψ
    z3 = E.training_memory(spec, E.TrainingSetup(zero_stage=3, gpus=8))
    assert z3["weights"] + z3["gradients"] + z3["optimizer_states"] == pytest.approx(16 * psi / 8, abs=8)
    z1 = E.training_memory(spec, E.TrainingSetup(zero_stage=1, gpus=8))
    assert z1["optimizer_states"] == pytest.approx(12 * psi / 8, abs=8) and z1["weights"] == 2 * psi
    adam8 = E.training_memory(spec, E.TrainingSetup(optimizer="adam8bit"))
    assert adam8["optimizer_states"] == 6 * psi  # fp32 master + two 8-bit moments


def test_checkpointing_and_qlora_shrink_training_memory():
    spec = specs.get_model("Llama-3.1-70B")
    full = E.training_memory(spec, E.TrainingSetup(seq_len=2048))
    ckpt = E.training_memory(spec, E.TrainingSetup(seq_len=2048, checkpointing=True))
    qlora = E.training_memory(spec, E.TrainingSetup(seq_len=2048, checkpointing=True, method="qlora"))
    assert ckpt["activations"] < full["activations"] / 5
    assert qlora["total"] < 48e9 < full["total"]  # QLoRA: a 65–70B model on one 48 GB GPU


def test_activations_reduce_to_korthikanti_34sbh_for_a_gpt_block():
    spec = specs.get_model("GPT-2")  # plain 4h MLP: 11 + 19 + 4 = 34 bytes per s·b·h
    setup = E.TrainingSetup(seq_len=1024, flash_attention=True)
    assert E.activation_bytes_per_layer(spec, setup) == 34 * 1024 * 768


def test_decode_and_prefill_bounds():
    spec, hw = specs.get_model("Llama-3.1-8B"), specs.get_hardware("H100")
    bound = E.decode_tokens_per_s_bound(spec, hw, "bf16", context=0)
    assert bound == pytest.approx(3350e9 / E.weight_bytes(spec, "bf16"))  # bandwidth / bytes per token
    assert E.decode_tokens_per_s_bound(spec, hw, "int4") > 2.5 * bound
    flops = E.prefill_flops(spec, 1000)
    assert flops == 2 * (E.param_count(spec) - E.embedding_params(spec)) * 1000 + 32 * 1000**2 * 4096
    assert E.prefill_seconds_bound(spec, hw, 1000, "bf16") == pytest.approx(flops / 989.4e12)
    assert E.prefill_seconds_bound(spec, specs.get_hardware("T4"), 1000, "bf16") is None  # no bf16 on Turing


def test_estimate_json_has_the_design_shape():
    doc = E.estimate("Llama-3.1-8B", "H100")
    json.dumps(doc)
    assert doc["label"] == "estimated"
    assert doc["params"] == 8_030_261_248 and doc["kv_cache_bytes_per_token"] == 131_072
    assert set(doc["weight_bytes"]) >= {"fp32", "bf16", "fp8", "int8", "int4", "nf4"}
    assert {"weights", "gradients", "optimizer_states", "activations", "total"} <= set(doc["training_bytes"])
    assert set(doc["decode_tokens_per_s_bound"]) == set(doc["weight_bytes"])
    assert doc["kv_cache_tokens_fit"]["bf16"] > 400_000


def test_estimate_for_a_cnn_and_an_encoder():
    resnet = E.estimate("ResNet-50", "CPU")
    assert resnet["params"] == 25_557_032 and resnet["kv_cache_bytes_per_token"] == 0
    assert resnet["decode_tokens_per_s_bound"]["bf16"] is None
    assert E.estimate("BERT-base", "T4")["params"] == 109_482_240


def test_estimate_from_a_config_json_path(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
           "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
           "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    doc = E.estimate(str(path), "H100", count=2)
    assert doc["params"] == 8_030_261_248 and doc["count"] == 2


def test_estimate_for_a_custom_constraint_model_uses_the_stated_size():
    doc = E.estimate_for_config({"family": "llama", "params_b": 3.2, "layers": 28, "hidden": 3072, "heads": 24,
                                 "kv_heads": 8, "vocab": 128256, "context": 131072})
    assert doc["params"] == 3_200_000_000
    assert doc["kv_cache_bytes_per_token"] == 2 * 28 * 8 * 128 * 2
    assert "hardware" not in doc  # sizes only without a hardware name


def test_estimate_rejects_a_zero_count():
    with pytest.raises(ValueError, match="count=0 must be ≥ 1"):
        E.estimate("GPT-2", "L4", count=0)


def test_param_count_is_exact_on_real_transformers_models():
    """Tiny models built from a config in code: the estimator's count equals the model's."""
    tf = pytest.importorskip("transformers")
    cases = [
        (tf.LlamaConfig, tf.LlamaForCausalLM, dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                                   num_attention_heads=8, num_key_value_heads=2, vocab_size=1000)),
        (tf.Qwen2Config, tf.Qwen2ForCausalLM, dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=500,
                                                   tie_word_embeddings=True)),
        (tf.GPT2Config, tf.GPT2LMHeadModel, dict(n_embd=64, n_layer=2, n_head=4, vocab_size=500, n_positions=128)),
        (tf.MixtralConfig, tf.MixtralForCausalLM, dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                       num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                                                       num_local_experts=4, num_experts_per_tok=2)),
    ]
    for config_cls, model_cls, kw in cases:
        cfg = config_cls(**kw)
        real = sum(p.numel() for p in model_cls(cfg).parameters())
        assert E.estimate_for_config(cfg.to_dict())["params"] == real, model_cls.__name__
