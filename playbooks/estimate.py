"""Memory and speed estimator: parameter count (exact for decoder LLMs from the config),
weight bytes per precision, GQA/MLA-aware KV-cache bytes, training memory (ZeRO stages,
8-bit Adam, checkpointing, LoRA/QLoRA) and roofline bounds for decode and prefill.
Every figure is computed, never measured; each formula names its source. Runs record the
measured value next to these, so the estimator's error stays visible."""
from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from playbooks.specs import HardwareSpec, ModelSpec, get_hardware, get_model, model_from_custom, model_from_hf_config

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp8", "int8", "int4", "nf4", "nvfp4")
KV_DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}
USABLE_FRACTION = 0.9  # vLLM's default gpu_memory_utilization; the rest is CUDA context + workspace
INT4_GROUP = 128  # columns per int4 scale/zero group (GPTQ/AWQ default)
NF4_BLOCK, NF4_BLOCK2 = 64, 256  # QLoRA: absmax per 64 weights, double-quantized per 256 absmax
NVFP4_BLOCK = 16  # NVFP4: one E4M3 scale per 16 values + one fp32 scale per tensor

Shape = tuple[int, int]  # (out_features, in_features)


# --- parameter count -------------------------------------------------------------------


def _attn_linears(s: ModelSpec) -> list[Shape]:
    """Q, K, V, O projections of one layer; MLA's down/up projections when the model uses MLA."""
    h, nh = s.hidden, s.heads
    if s.mla is not None:
        m = s.mla
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        q = [(m.q_lora_rank, h), (nh * qk, m.q_lora_rank)] if m.q_lora_rank else [(nh * qk, h)]
        kv = [(m.kv_lora_rank + m.qk_rope_head_dim, h), (nh * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank)]
        return q + kv + [(h, nh * m.v_head_dim)]
    hd, kv = s.dim_per_head, s.n_kv_heads
    return [(nh * hd, h), (kv * hd, h), (kv * hd, h), (h, nh * hd)]


def _mlp_linears(h: int, inter: int, gated: bool) -> list[Shape]:
    """SwiGLU: gate, up, down (Shazeer 2020); plain MLP: fc, proj."""
    return [(inter, h), (inter, h), (h, inter)] if gated else [(inter, h), (h, inter)]


def _is_moe_layer(s: ModelSpec, i: int) -> bool:
    return s.moe is not None and i >= s.moe.dense_layers


def _layer_linears(s: ModelSpec, i: int, active: bool) -> Counter[Shape]:
    """Weight matrices of layer ``i`` with their multiplicity (experts repeat the MLP shapes)."""
    gated = s.mlp == "gated"
    out: Counter[Shape] = Counter(_attn_linears(s))
    if not _is_moe_layer(s, i):
        out.update(_mlp_linears(s.hidden, s.intermediate, gated))
        return out
    m = s.moe
    n_experts = (m.active if active else m.experts) + m.shared
    for shape in _mlp_linears(s.hidden, m.intermediate, gated):
        out[shape] += n_experts
    return out


@lru_cache(maxsize=256)
def linear_shapes(s: ModelSpec, active: bool = False) -> Counter[Shape]:
    """Every weight matrix inside the transformer blocks (what weight quantization converts),
    as {(out, in): how many}. Cached: callers must not mutate the result."""
    total: Counter[Shape] = Counter()
    if s.is_transformer:
        for i in range(s.layers):
            total.update(_layer_linears(s, i, active))
    return total


def _matrix_params(shapes: Counter[Shape]) -> int:
    return sum(o * i * n for (o, i), n in shapes.items())


def _norm_params(s: ModelSpec, dim: int) -> int:
    return dim * (2 if s.norm == "layer" else 1)


def _layer_other(s: ModelSpec, i: int) -> int:
    """Norms, biases and the MoE router of one layer: the small tensors kept in 16-bit."""
    h = s.hidden
    n = 2 * _norm_params(s, h)
    if s.mla is not None:
        n += (s.mla.q_lora_rank or 0) + s.mla.kv_lora_rank  # q_a / kv_a RMSNorms
    if s.bias in ("qkv", "all"):
        n += (s.heads + 2 * s.n_kv_heads) * s.dim_per_head
    if s.bias == "all":
        n += h + (s.intermediate if s.mlp == "plain" else 2 * s.intermediate) + h
    if _is_moe_layer(s, i):
        n += s.moe.experts * h + (s.moe.experts if s.moe.router_bias else 0)
    return n


def embedding_params(s: ModelSpec) -> int:
    """Token (+ learned position, + token-type) embeddings; ViT: patch projection, [CLS], positions."""
    h = s.hidden
    if s.kind == "vit":
        return 3 * s.patch_size**2 * h + h + h + s.context * h
    n = s.vocab * h + s.type_vocab * h
    if s.positions == "learned":
        n += s.context * h
    return n


def head_params(s: ModelSpec) -> int:
    """Output head: untied LM head; BERT pooler; ViT classifier."""
    h = s.hidden
    if s.kind == "encoder":
        return h * h + h
    if s.kind == "vit":
        return h * (s.num_classes or 1000) + (s.num_classes or 1000)
    return 0 if s.tie_embeddings else s.vocab * h


def _final_norms(s: ModelSpec) -> int:
    """Llama/GPT-2/ViT end with a norm; BERT instead normalizes its embeddings."""
    return _norm_params(s, s.hidden)


def param_breakdown(s: ModelSpec, active: bool = False) -> dict[str, int]:
    """Parameters by role (see ``_breakdown``); a fresh dict the caller may keep."""
    return dict(_breakdown(s, active))


@lru_cache(maxsize=256)
def _breakdown(s: ModelSpec, active: bool) -> dict[str, int]:
    """Parameters by role: block matrices ("linear"), embeddings, head, and the rest ("other").

    Sums the architecture's tensors as the Hugging Face implementations define them: per layer
    Q/K/V/O (GQA: K and V have kv_heads · head_dim rows, Ainslie et al. 2023), a SwiGLU (3
    matrices, Shazeer 2020; Llama, Touvron et al. 2023) or plain 2-matrix MLP (GPT-2, BERT,
    ViT), MoE experts + router (Mixtral; DeepSeek-V3 shared experts), MLA projections
    (DeepSeek-V2 §2.1), norms and biases; plus embeddings and an untied head. Exact for the
    decoder LLMs in the model table, BERT and ViT (tested against published counts and real
    transformers models); a CNN or a custom ``params_b`` model puts the stated count in
    "linear" (less embeddings/head when the shapes are known)."""
    if not s.is_transformer:
        if s.linear_params is not None:  # a CNN: its classifier, and the convolutions (with their norms)
            return {"linear": s.linear_params, "conv": s.params - s.linear_params, "embedding": 0, "head": 0, "other": 0}
        return {"linear": s.params, "embedding": 0, "head": 0, "other": 0}
    emb, head = embedding_params(s), head_params(s)
    other = sum(_layer_other(s, i) for i in range(s.layers)) + _final_norms(s)
    if s.params is not None:  # custom model: trust the stated total, shapes only split it
        return {"linear": max(s.params - emb - head - other, 0), "embedding": emb, "head": head, "other": other}
    linear = _matrix_params(linear_shapes(s, active))
    return {"linear": linear, "embedding": emb, "head": head, "other": other}


def param_count(s: ModelSpec) -> int:
    """Total parameters (every expert counted)."""
    return sum(param_breakdown(s).values())


def active_param_count(s: ModelSpec) -> int:
    """Parameters a token touches: MoE layers count only the top-k routed + shared experts
    (Switch Transformer, Fedus et al. 2021; Mixtral ~12.9B of 46.7B)."""
    if s.moe is None or s.params is not None:
        return param_count(s)
    return sum(param_breakdown(s, active=True).values())


# --- weight bytes ----------------------------------------------------------------------


def matrix_bytes(out_f: int, in_f: int, precision: str, group_size: int = INT4_GROUP) -> int:
    """Stored bytes of one (out, in) weight matrix, scales included.

    fp8 / int8: 1 byte per weight + one fp32 scale per output row (row-wise scaling, as in
    this project's ``quant.packing`` and torchao's float8 rowwise).
    int4: ½ byte + fp32 scale and zero per ``group_size`` columns (packing.py layout;
    GPTQ, Frantar et al. 2022 / AWQ, Lin et al. 2023 group-wise quantization).
    nf4: ½ byte + double-quantized absmax, 8 bits per 64 weights + fp32 per 256 blocks
    (QLoRA, Dettmers et al. 2023, §3: 4.127 bits per weight).
    nvfp4: ½ byte + one E4M3 scale per 16 values + one fp32 per tensor (NVIDIA Blackwell NVFP4)."""
    n = out_f * in_f
    if precision == "fp32":
        return 4 * n
    if precision in ("bf16", "fp16"):
        return 2 * n
    if precision in ("fp8", "int8"):
        return n + 4 * out_f
    if precision == "int4":
        return n // 2 + 8 * out_f * math.ceil(in_f / group_size)
    if precision == "nf4":
        blocks = math.ceil(n / NF4_BLOCK)
        return n // 2 + blocks + 4 * math.ceil(blocks / NF4_BLOCK2)
    if precision == "nvfp4":
        return n // 2 + math.ceil(n / NVFP4_BLOCK) + 4
    raise ValueError(f"unknown precision {precision!r}; valid choices: {', '.join(PRECISIONS)}")


def kept_bytes_per_param(precision: str) -> int:
    """Embeddings, norms and biases stay in 16-bit when the matrices are quantized (fp32 stays fp32)."""
    return 4 if precision == "fp32" else 2


def _head_shape(s: ModelSpec) -> Shape | None:
    if s.kind == "llm" and not s.tie_embeddings and s.is_transformer:
        return (s.vocab, s.hidden)
    return None


def linear_weight_bytes(s: ModelSpec, precision: str, group_size: int = INT4_GROUP, active: bool = False) -> int:
    """Bytes of the block matrices alone at ``precision`` (scales included). A CNN or a custom
    model has no exact shapes: one pseudo-matrix with rows of 128 inputs (scale overhead approximate)."""
    shapes = linear_shapes(s, active) if s.params is None else Counter()
    if not shapes:
        shapes = Counter({(max(param_breakdown(s)["linear"] // 128, 1), 128): 1})
    return sum(n * matrix_bytes(o, i, precision, group_size) for (o, i), n in shapes.items())


def weight_bytes(s: ModelSpec, precision: str, group_size: int = INT4_GROUP, include_head: bool = False,
                 conv_precision: str | None = None) -> int:
    """Bytes to store the weights with the block matrices at ``precision``.

    Embeddings, norms, biases (and the LM head unless ``include_head``) are kept in 16-bit,
    the convention of published GPTQ/AWQ/bitsandbytes checkpoints. A CNN's convolutions (when
    its spec separates them) are at ``conv_precision``: a Linear-only quantizer leaves them alone."""
    parts = param_breakdown(s)
    kept = parts["embedding"] + parts["head"] + parts["other"]
    total = linear_weight_bytes(s, precision, group_size)
    if parts.get("conv"):  # one pseudo-matrix with rows of 128 inputs, like a CNN's linear part
        total += matrix_bytes(max(parts["conv"] // 128, 1), 128, conv_precision or precision, group_size)
    head = _head_shape(s)
    if include_head and head is not None:
        total += matrix_bytes(*head, precision, group_size)
        kept -= head[0] * head[1]
    return total + kept * kept_bytes_per_param(precision)


def weight_bytes_table(s: ModelSpec, group_size: int = INT4_GROUP, include_head: bool = False) -> dict[str, int]:
    return {p: weight_bytes(s, p, group_size, include_head) for p in PRECISIONS}


def active_weight_bytes(s: ModelSpec, precision: str) -> int:
    """Bytes read per decoded token at batch 1: only the active experts of an MoE layer."""
    total = weight_bytes(s, precision)
    if s.moe is None or s.params is not None:
        return total
    return total - linear_weight_bytes(s, precision) + linear_weight_bytes(s, precision, active=True)


# --- KV cache --------------------------------------------------------------------------


def kv_cache_bytes_per_token(s: ModelSpec, dtype: str = "bf16") -> int:
    """K and V cached for one token across all layers.

    MHA/GQA/MQA: 2 · layers · kv_heads · head_dim · bytes (Shazeer 2019; Ainslie et al. 2023:
    only the K/V heads are cached, so GQA divides the cache by heads / kv_heads).
    MLA: layers · (kv_lora_rank + rope_dim) · bytes (DeepSeek-V2, 2024, §2.1: the compressed
    latent and the decoupled RoPE key are cached). Encoders and CNNs keep no cache: 0."""
    if s.kind != "llm" or not s.is_transformer:
        return 0
    b = KV_DTYPE_BYTES[dtype]
    if s.mla is not None:
        return s.layers * (s.mla.kv_lora_rank + s.mla.qk_rope_head_dim) * b
    return 2 * s.layers * s.n_kv_heads * s.dim_per_head * b


def sequence_kv_bytes(s: ModelSpec, tokens: int, dtype: str = "bf16") -> int:
    """One sequence's cache; a sliding-window model (Mistral-7B: 4096) caches at most the window."""
    kept = min(tokens, s.sliding_window) if s.sliding_window else tokens
    return kept * kv_cache_bytes_per_token(s, dtype)


def usable_bytes(hw: HardwareSpec, count: int = 1) -> int:
    return int(hw.memory_bytes * count * USABLE_FRACTION)


def kv_tokens_fit(s: ModelSpec, hw: HardwareSpec, count: int = 1, precision: str = "bf16", kv_dtype: str = "bf16") -> int:
    """Tokens of KV cache that fit beside the weights: (0.9 · memory − weights) / KV per token
    (the vLLM block-manager budget, Kwon et al. 2023). 0 when the weights alone do not fit."""
    per_token = kv_cache_bytes_per_token(s, kv_dtype)
    free = usable_bytes(hw, count) - weight_bytes(s, precision)
    if per_token == 0 or free <= 0:
        return 0
    return free // per_token


# --- training memory -------------------------------------------------------------------


class TrainingSetup(BaseModel):
    """How a model is trained; the defaults are plain bf16 mixed-precision Adam on one GPU."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["full", "lora", "qlora"] = Field("full", description="what is trained")
    optimizer: Literal["adam", "adam8bit", "sgd"] = Field("adam", description="optimizer whose states are kept")
    mixed_precision: bool = Field(True, description="bf16/fp16 compute with an fp32 master copy")
    checkpointing: bool = Field(False, description="keep only each layer's input; recompute the rest")
    zero_stage: int = Field(0, ge=0, le=3, description="ZeRO/FSDP stage: 1 states, 2 +grads, 3 +weights")
    gpus: int = Field(1, ge=1, description="data-parallel GPUs the ZeRO stage shards over")
    micro_batch: int = Field(1, ge=1, description="sequences per GPU per step")
    seq_len: int = Field(2048, ge=1, description="tokens per sequence")
    lora_rank: int = Field(16, ge=1, description="LoRA rank r")
    lora_targets: Literal["attention", "all"] = Field("attention", description="q/v only (PEFT default) or every block matrix")
    flash_attention: bool = Field(True, description="attention scores are never stored (Dao et al. 2022)")
    sequence_parallel: int = Field(1, ge=1, description="sequence/context-parallel degree splitting activations")
    activation_value_bytes: int = Field(2, ge=1, le=4, description="bytes per stored activation value: 2 under "
                                                                   "16-bit compute, 4 when training in fp32")


def optimizer_bytes_per_param(optimizer: str, mixed_precision: bool) -> int:
    """K in the ZeRO paper's 2Ψ + 2Ψ + KΨ (Rajbhandari et al. 2020, §3.1): mixed-precision Adam
    keeps an fp32 master copy, momentum and variance (K = 12); 8-bit Adam stores the two
    moments in 8 bits (Dettmers et al. 2022: K = 4 + 2); SGD with momentum K = 4 + 4."""
    master = 4 if mixed_precision else 0
    states = {"adam": 8, "adam8bit": 2, "sgd": 4}[optimizer]
    return master + states


def lora_params(s: ModelSpec, rank: int, targets: str) -> int:
    """r · (in + out) per adapted matrix (Hu et al. 2021); "attention" adapts q and v of each layer."""
    if not s.is_transformer:
        return 0
    total = 0
    for i in range(s.layers):
        if targets == "attention" and s.mla is None:
            q, _, v, _ = _attn_linears(s)
            total += sum(rank * (o + n) for o, n in (q, v))
        else:
            total += sum(rank * (o + n) * k for (o, n), k in _layer_linears(s, i, active=False).items())
    return total


def activation_bytes_per_layer(s: ModelSpec, setup: TrainingSetup) -> int:
    """Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
    Models", Eq. 1): s·b·h·(34 + 5·a·s/h) bytes per layer with 16-bit activations; 34 = 11
    (attention) + 19 (4h MLP) + 4 (norms). The MLP term is rescaled to the model's
    intermediate size (SwiGLU stores gate, up and their product); FlashAttention drops the
    5·a·s/h score term. With full checkpointing (Chen et al. 2016) only the layer input,
    2·s·b·h, is kept."""
    sbh = setup.seq_len * setup.micro_batch * s.hidden
    if setup.checkpointing:
        return sbh * setup.activation_value_bytes // setup.sequence_parallel
    ratio = s.intermediate / s.hidden
    mlp = 2 + (6 if s.mlp == "gated" else 4) * ratio + 1
    per = 11 + mlp + 4
    scores = 0 if setup.flash_attention else 5 * s.heads * setup.seq_len / s.hidden
    return int(sbh * (per + scores) * setup.activation_value_bytes / 2) // setup.sequence_parallel


def activation_bytes(s: ModelSpec, setup: TrainingSetup) -> int | None:
    """All layers, plus one layer recomputed at a time under checkpointing, plus the loss's two
    fp32 copies of the logits — the logits and the log-probabilities cross-entropy keeps for its
    backward (2 · s·b·vocab·4). None for a CNN (no shape-level formula)."""
    if not s.is_transformer:
        return None
    layers = s.layers * activation_bytes_per_layer(s, setup)
    if setup.checkpointing:
        layers += activation_bytes_per_layer(s, setup.model_copy(update={"checkpointing": False}))
    return layers + 2 * _logits_bytes(s, setup)


def _shard(n: float, setup: TrainingSetup, stage: int) -> int:
    """ZeRO stage ``stage`` and above shards this term over the GPUs."""
    return int(n / setup.gpus) if setup.zero_stage >= stage else int(n)


def training_memory(s: ModelSpec, setup: TrainingSetup | None = None) -> dict[str, int]:
    """Per-GPU training bytes: weights + gradients + optimizer states + activations.

    Full training (ZeRO paper, Rajbhandari et al. 2020): 16-bit weights 2Ψ, gradients 2Ψ,
    optimizer KΨ; stage 1 shards the optimizer, stage 2 also the gradients, stage 3 (= FSDP
    full shard, Zhao et al. 2023) also the weights, each over N GPUs.
    LoRA/QLoRA: the base is frozen (16-bit, or NF4 for QLoRA, Dettmers et al. 2023); only
    the adapters carry fp32 weights, gradients and optimizer states."""
    setup = setup or TrainingSetup()
    psi = param_count(s)
    k = optimizer_bytes_per_param(setup.optimizer, setup.mixed_precision)
    wb = 2 if setup.mixed_precision else 4
    if setup.method == "full":
        weights = _shard(wb * psi, setup, 3)
        grads = _shard(wb * psi, setup, 2)
        states = _shard(k * psi, setup, 1)
    else:
        phi = lora_params(s, setup.lora_rank, setup.lora_targets)
        if setup.method == "qlora":  # NF4 block matrices; the rest 16-bit, or fp32 when training in fp32
            parts = param_breakdown(s)
            kept = parts["embedding"] + parts["head"] + parts["other"]
            base = weight_bytes(s, "nf4") + (0 if setup.mixed_precision else 2 * kept)
        else:
            base = weight_bytes(s, "bf16" if setup.mixed_precision else "fp32")
        weights = _shard(base, setup, 3) + 4 * phi
        grads = 4 * phi
        states = (k - (4 if setup.mixed_precision else 0)) * phi  # adapters are fp32: no extra master
    acts = activation_bytes(s, setup)
    total = weights + grads + states + (acts or 0)
    return {"weights": weights, "gradients": grads, "optimizer_states": states,
            "activations": acts if acts is not None else 0, "total": total,
            "peak": weights + states + _backward_peak(s, setup, acts or 0, grads)}


def _logits_bytes(s: ModelSpec, setup: TrainingSetup) -> int:
    return setup.seq_len * setup.micro_batch * s.vocab * 4 // setup.sequence_parallel


def _backward_peak(s: ModelSpec, setup: TrainingSetup, acts: int, grads: int) -> int:
    """What lives beside the weights and optimizer states at a step's peak. Backward frees the
    activations as it fills the gradients (set to None before each step), so the two sum to
    about max(activations, gradients), not their total; at its start the logits' gradient
    (fp32, s·b·vocab) is live on top of every activation. Under ZeRO-3 / FSDP the units in
    flight are all-gathered (the root with the embeddings, and one decoder layer prefetched
    beside the current one; Zhao et al. 2023 §3.3): their unsharded bytes beyond the shard."""
    transient = _logits_bytes(s, setup) if s.is_transformer else 0
    gathered = 0
    if setup.zero_stage >= 3 and setup.gpus > 1 and s.is_transformer:
        parts = param_breakdown(s)
        per_layer = (parts["linear"] + parts["other"]) / max(s.layers, 1)
        wb = 2 if setup.mixed_precision else 4
        gathered = int(wb * (parts["embedding"] + parts["head"] + 2 * per_layer) * (1 - 1 / setup.gpus))
    return max(acts + transient, grads) + gathered


# --- speed bounds ----------------------------------------------------------------------


def decode_tokens_per_s_bound(s: ModelSpec, hw: HardwareSpec, precision: str = "bf16", context: int = 0,
                              batch: int = 1, count: int = 1, kv_dtype: str = "bf16") -> float | None:
    """Memory-bandwidth roofline for decoding (Williams et al. 2009, "Roofline"; the bound
    gpt-fast reports as GB/s achieved): each step reads the active weights once and every
    sequence's KV cache, so tokens/s ≤ batch · bandwidth / (weight bytes + batch · KV bytes).
    ``count`` GPUs in ideal tensor parallelism add their bandwidth. None for non-decoders."""
    if s.kind != "llm":
        return None
    per_step = active_weight_bytes(s, precision) + batch * sequence_kv_bytes(s, context, kv_dtype)
    return batch * hw.bandwidth_bytes_per_s * count / per_step


def prefill_flops(s: ModelSpec, tokens: int) -> float:
    """Kaplan et al. 2020 ("Scaling Laws for Neural Language Models", Table 1): a forward pass
    costs 2·N + 2·n_layer·n_ctx·d_attn FLOPs per token; a causal prompt of T tokens attends to
    T/2 positions on average, so prefill ≈ 2·N·T + n_layer·T²·d_attn. CNNs: 2·MACs per image."""
    if not s.is_transformer:
        return 2 * (s.gmacs or 0) * 1e9 * tokens
    n = active_param_count(s) - embedding_params(s)
    d_attn = s.heads * s.dim_per_head
    return 2 * n * tokens + s.layers * tokens**2 * d_attn


def compute_dtype(hw: HardwareSpec) -> str:
    """The 16-bit format this hardware computes in: bf16 from Ampere (8.0) on, fp16 before, fp32 on CPU."""
    for dtype in ("bf16", "fp16", "fp32"):
        if hw.supports(dtype):
            return dtype
    return "fp32"


def prefill_seconds_bound(s: ModelSpec, hw: HardwareSpec, tokens: int, dtype: str | None = None, count: int = 1) -> float | None:
    """Compute roofline: prefill FLOPs / (dense peak FLOP/s of ``dtype`` · GPUs). None if unsupported."""
    peak = hw.peak_flops(dtype or compute_dtype(hw))
    if peak is None:
        return None
    return prefill_flops(s, tokens) / (peak * count)


# --- the estimate document -------------------------------------------------------------


def default_context(s: ModelSpec, context: int | None) -> int:
    return context or min(s.context or 2048, 4096)


def _training_setups(s: ModelSpec, count: int, seq: int) -> dict[str, dict[str, int]]:
    base = TrainingSetup(gpus=count, seq_len=seq)
    setups = {
        "full_adam": base,
        "full_adam_checkpointing": base.model_copy(update={"checkpointing": True}),
        "full_adam8bit_checkpointing": base.model_copy(update={"checkpointing": True, "optimizer": "adam8bit"}),
        "lora_bf16_checkpointing": base.model_copy(update={"method": "lora", "checkpointing": True}),
        "qlora_nf4_checkpointing": base.model_copy(update={"method": "qlora", "checkpointing": True}),
    }
    if count > 1:
        for stage in (1, 2, 3):
            setups[f"zero{stage}_adam_checkpointing"] = base.model_copy(update={"checkpointing": True, "zero_stage": stage})
    return {name: training_memory(s, st) for name, st in setups.items()}


def _size_fields(s: ModelSpec, context: int, count: int) -> dict[str, Any]:
    setups = _training_setups(s, count, min(context, 4096))
    default = "zero3_adam_checkpointing" if count > 1 else "full_adam_checkpointing"
    return {
        "model": s.name,
        "label": "estimated",
        "params": param_count(s),
        "active_params": active_param_count(s),
        "param_breakdown": param_breakdown(s),
        "weight_bytes": weight_bytes_table(s),
        "kv_cache_bytes_per_token": kv_cache_bytes_per_token(s, "bf16"),
        "kv_cache_bytes_per_token_by_dtype": {d: kv_cache_bytes_per_token(s, d) for d in ("bf16", "fp8")},
        "context_length": context,
        "kv_cache_bytes_per_sequence": sequence_kv_bytes(s, context),
        "training_setup": default,
        "training_bytes": setups[default],
        "training_bytes_by_setup": {k: v["total"] for k, v in setups.items()},
    }


def _speed_fields(s: ModelSpec, hw: HardwareSpec, count: int, context: int) -> dict[str, Any]:
    prefill = {d: prefill_seconds_bound(s, hw, context, d, count) for d in ("fp32", "bf16", "fp16", "fp8", "int8")}
    return {
        "hardware": hw.name,
        "count": count,
        "memory_bytes": hw.memory_bytes * count,
        "usable_memory_bytes": usable_bytes(hw, count),
        "kv_cache_tokens_fit": {p: kv_tokens_fit(s, hw, count, p) for p in PRECISIONS},
        "decode_tokens_per_s_bound": {p: decode_tokens_per_s_bound(s, hw, p, context, 1, count) for p in PRECISIONS},
        "prefill_seconds_bound": {d: v for d, v in prefill.items() if v is not None},
    }


ASSUMPTIONS = [
    "weights: block matrices at the named precision; embeddings, LM head, norms, biases in 16-bit",
    "int8/fp8: fp32 scale per output row; int4: fp32 scale+zero per 128 columns; nf4: QLoRA double quant",
    "usable memory: 90% of the device (vLLM gpu_memory_utilization default)",
    "decode bound: batch 1 at context_length, weights + KV read once per token, ideal tensor parallel",
    "prefill bound: dense peak FLOP/s, no overlap losses",
    "training: micro-batch 1 at min(context, 4096) tokens, bf16 mixed-precision Adam, FlashAttention",
]


def estimate_spec(s: ModelSpec, hardware: HardwareSpec | str | None = None, count: int = 1,
                  context: int | None = None) -> dict[str, Any]:
    """The estimate JSON (DESIGN.md: params, weight_bytes, kv_cache_bytes_per_token,
    training_bytes, decode_tokens_per_s_bound, …) for a resolved model spec."""
    if count < 1:
        raise ValueError(f"count={count} must be ≥ 1")
    ctx = default_context(s, context)
    out = _size_fields(s, ctx, count)
    if hardware is not None:
        hw = get_hardware(hardware) if isinstance(hardware, str) else hardware
        out.update(_speed_fields(s, hw, count, ctx))
    out["assumptions"] = ASSUMPTIONS
    return out


def estimate(model: str | ModelSpec, hardware: str | HardwareSpec, count: int = 1,
             context: int | None = None) -> dict[str, Any]:
    """Estimate for a model-table name (or config.json path) on a hardware-table name."""
    spec = get_model(model) if isinstance(model, str) else model
    return estimate_spec(spec, hardware, count, context)


def spec_from_config(config: dict[str, Any], name: str | None = None) -> ModelSpec:
    """A ModelSpec from a Hugging Face config dict, the constraint schema's custom model dict
    (``params_b`` …) or this module's own field names (``hidden``, ``layers`` …)."""
    if "params_b" in config:
        return model_from_custom(config)
    if any(k in config for k in ("hidden_size", "n_embd", "d_model", "model_type")):
        return model_from_hf_config(config, name=name)
    return ModelSpec.model_validate({"name": name or "custom", **config})


def estimate_for_config(config: dict[str, Any], hardware: str | HardwareSpec | None = None, count: int = 1,
                        context: int | None = None, name: str | None = None) -> dict[str, Any]:
    """Estimate for a small custom config (e.g. ``LlamaConfig(...).to_dict()``); without
    ``hardware`` only the size fields (params, weight bytes, KV, training bytes) are returned."""
    return estimate_spec(spec_from_config(config, name), hardware, count, context)


def human_bytes(n: float) -> str:
    """Bytes in IEC units (KiB, MiB, GiB, TiB): the one formatter for the guide, the estimator and the pages."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"
