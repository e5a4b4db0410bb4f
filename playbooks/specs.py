"""Hardware and model spec tables (hardware.yaml, models.yaml) as strict pydantic records,
plus readers for a Hugging Face config.json and for the constraint schema's custom model
dict. Pure data: no torch. The estimator and the decision guide both read from here."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

HERE = Path(__file__).parent
HARDWARE_FILE = HERE / "hardware.yaml"
MODELS_FILE = HERE / "models.yaml"

Precision = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4", "nf4", "nvfp4"]
GIB = 2**30

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HardwareSpec(_Strict):
    name: str
    aliases: tuple[str, ...] = ()
    arch: Literal["volta", "turing", "ampere", "ada", "hopper", "blackwell", "cpu"]
    compute_capability: str | None = Field(description="CUDA 'major.minor'; None for a CPU")
    memory_gib: float = Field(gt=0, description="device memory as nvidia-smi reports it, GiB")
    bandwidth_gbs: float = Field(gt=0, description="peak memory bandwidth, GB/s")
    tflops: dict[str, float | None] = Field(description="dense peak TFLOP/s per dtype; None = unsupported")
    source: str = ""

    @property
    def is_gpu(self) -> bool:
        return self.compute_capability is not None

    @property
    def capability(self) -> tuple[int, int] | None:
        if self.compute_capability is None:
            return None
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)

    @property
    def capability_value(self) -> float | None:
        """Compute capability as a comparable number: 8.9 → 8.9, 10.0 → 10.0."""
        cap = self.capability
        return None if cap is None else cap[0] + cap[1] / 10

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_gbs * 1e9

    def peak_flops(self, dtype: str) -> float | None:
        """Dense peak FLOP/s for ``dtype``; None when the hardware has no such unit."""
        tf = self.tflops.get(dtype)
        return None if tf is None else tf * 1e12

    def supports(self, dtype: str) -> bool:
        return self.tflops.get(dtype) is not None


class MoESpec(_Strict):
    experts: int = Field(gt=0, description="routed experts per MoE layer")
    active: int = Field(gt=0, description="routed experts each token uses (top-k)")
    intermediate: int = Field(gt=0, description="hidden size of one expert's MLP")
    shared: int = Field(0, ge=0, description="always-active shared experts (DeepSeek)")
    dense_layers: int = Field(0, ge=0, description="leading layers with a dense MLP instead of experts")
    router_bias: bool = Field(False, description="router has a per-expert score bias (DeepSeek-V3)")


class MLASpec(_Strict):
    """Multi-head latent attention (DeepSeek-V2/V3): K/V compressed into a shared latent."""

    q_lora_rank: int | None = None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


class ModelSpec(_Strict):
    name: str
    aliases: tuple[str, ...] = ()
    family: str = "custom"
    kind: Literal["llm", "encoder", "vit", "cnn"] = "llm"
    source: str = ""
    dtype: Precision = Field("bf16", description="precision the published weights are stored in")
    hidden: int | None = Field(None, gt=0)
    layers: int | None = Field(None, gt=0)
    heads: int | None = Field(None, gt=0)
    kv_heads: int | None = Field(None, gt=0)
    head_dim: int | None = Field(None, gt=0)
    intermediate: int | None = Field(None, gt=0)
    vocab: int = Field(0, ge=0)
    context: int | None = Field(None, gt=0)
    tie_embeddings: bool = False
    mlp: Literal["gated", "plain"] = "gated"
    norm: Literal["rms", "layer"] = "rms"
    bias: Literal["none", "qkv", "all"] = "none"
    positions: Literal["rope", "learned"] = "rope"
    sliding_window: int | None = Field(None, gt=0)
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    type_vocab: int = Field(0, ge=0, description="BERT token-type embeddings")
    image_size: int | None = Field(None, gt=0)
    patch_size: int | None = Field(None, gt=0)
    num_classes: int | None = Field(None, gt=0)
    params: int | None = Field(None, gt=0, description="explicit parameter count (CNNs, partial configs)")
    linear_params: int | None = Field(None, ge=0, description="a CNN's parameters in nn.Linear layers (its classifier); "
                                                              "the rest are convolutions and norms")
    gmacs: float | None = Field(None, gt=0, description="multiply-accumulates per sample, billions (CNNs)")
    published_params: int | None = Field(None, gt=0, description="count the model card reports")

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSpec":
        if self.kind == "cnn" or self.params is not None:
            if self.params is None:
                raise ValueError(f"model {self.name!r}: a CNN needs an explicit `params` count")
            if self.linear_params is not None and self.linear_params > self.params:
                raise ValueError(f"model {self.name!r}: linear_params={self.linear_params} exceeds params={self.params}")
            return self
        for f in ("hidden", "layers", "heads", "intermediate"):
            if getattr(self, f) is None:
                raise ValueError(f"model {self.name!r}: `{f}` is required for a {self.kind} without `params`")
        kv = self.kv_heads or self.heads
        if self.heads % kv:
            raise ValueError(f"model {self.name!r}: heads={self.heads} must be a multiple of kv_heads={kv}")
        if self.head_dim is None and self.hidden % self.heads:
            raise ValueError(f"model {self.name!r}: hidden={self.hidden} must divide by heads={self.heads}")
        return self

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads or self.heads or 0

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or (self.hidden // self.heads)

    @property
    def is_transformer(self) -> bool:
        return self.hidden is not None and self.layers is not None

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    @property
    def has_gqa(self) -> bool:
        """Grouped- or multi-query attention: fewer K/V heads than query heads (or MLA)."""
        return self.mla is not None or (self.heads is not None and self.n_kv_heads < self.heads)

    @property
    def has_mqa(self) -> bool:
        return self.heads is not None and self.n_kv_heads == 1


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _index(records: list[BaseModel]) -> dict[str, BaseModel]:
    out: dict[str, BaseModel] = {}
    for r in records:
        for key in (r.name, *r.aliases):
            out[_norm(key)] = r
    return out


@lru_cache(maxsize=1)
def _hardware() -> tuple[list[HardwareSpec], dict[str, HardwareSpec]]:
    rows = [HardwareSpec.model_validate(r) for r in yaml.load(HARDWARE_FILE.read_text(), Loader=_Loader)]
    return rows, _index(rows)


@lru_cache(maxsize=1)
def _models() -> tuple[list[ModelSpec], dict[str, ModelSpec]]:
    rows = [ModelSpec.model_validate(r) for r in yaml.load(MODELS_FILE.read_text(), Loader=_Loader)]
    return rows, _index(rows)


def hardware_names(gpus_only: bool = False) -> list[str]:
    return [h.name for h in _hardware()[0] if h.is_gpu or not gpus_only]


def hardware_table() -> list[HardwareSpec]:
    return list(_hardware()[0])


def find_hardware(name: str) -> HardwareSpec | None:
    return _hardware()[1].get(_norm(name))


def get_hardware(name: str) -> HardwareSpec:
    """The hardware row for ``name`` (case and punctuation ignored; aliases accepted)."""
    hw = find_hardware(name)
    if hw is None:
        raise ValueError(f"unknown hardware {name!r}; valid choices: {', '.join(hardware_names())}")
    return hw


def model_names() -> list[str]:
    return [m.name for m in _models()[0]]


def model_table() -> list[ModelSpec]:
    return list(_models()[0])


def find_model(name: str) -> ModelSpec | None:
    return _models()[1].get(_norm(name))


def get_model(name: str) -> ModelSpec:
    """The model row for ``name``, or the model described by a config.json path."""
    spec = find_model(name)
    if spec is not None:
        return spec
    if name.endswith(".json") or Path(name).is_file():
        return model_from_config_file(name)
    raise ValueError(
        f"unknown model {name!r}; valid choices: {', '.join(model_names())} (or a path to a config.json)"
    )


# --- Hugging Face config.json ---------------------------------------------------------

_HF_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float8_e4m3fn": "fp8"}


def _first(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def _hf_moe(cfg: dict[str, Any]) -> MoESpec | None:
    experts = _first(cfg, "num_local_experts", "n_routed_experts", "num_experts")
    if not experts:
        return None
    return MoESpec(
        experts=experts,
        active=_first(cfg, "num_experts_per_tok", default=2),
        intermediate=_first(cfg, "moe_intermediate_size", "intermediate_size"),
        shared=_first(cfg, "n_shared_experts", default=0),
        dense_layers=_first(cfg, "first_k_dense_replace", default=0),
        router_bias=cfg.get("topk_method") == "noaux_tc",
    )


def _hf_mla(cfg: dict[str, Any]) -> MLASpec | None:
    if not cfg.get("kv_lora_rank"):
        return None
    return MLASpec(
        q_lora_rank=cfg.get("q_lora_rank"),
        kv_lora_rank=cfg["kv_lora_rank"],
        qk_nope_head_dim=cfg["qk_nope_head_dim"],
        qk_rope_head_dim=cfg["qk_rope_head_dim"],
        v_head_dim=cfg["v_head_dim"],
    )


def _hf_kind(model_type: str) -> str:
    if model_type in {"bert", "roberta", "distilbert", "albert", "electra"}:
        return "encoder"
    if model_type in {"vit", "deit"}:
        return "vit"
    return "llm"


def model_from_hf_config(cfg: dict[str, Any], name: str | None = None) -> ModelSpec:
    """A ModelSpec from a Hugging Face config.json dict (Llama/Mistral/Mixtral/Qwen2/DeepSeek/
    GPT-2/BERT/ViT field names). Unknown decoder types are read as Llama-style."""
    model_type = str(cfg.get("model_type", "custom"))
    gpt2 = model_type == "gpt2"
    kind = _hf_kind(model_type)
    hidden = _first(cfg, "hidden_size", "n_embd", "d_model")
    plain = gpt2 or kind in {"encoder", "vit"}
    bias = "all" if plain else ("qkv" if model_type.startswith("qwen2") or cfg.get("attention_bias") else "none")
    if cfg.get("mlp_bias") and bias != "all":
        bias = "all"  # Llama mlp_bias=True puts biases on every projection of the MLP
    context = _first(cfg, "max_position_embeddings", "n_positions")
    if kind == "vit" and cfg.get("image_size") and cfg.get("patch_size"):
        context = (cfg["image_size"] // cfg["patch_size"]) ** 2 + 1
    tie_default = gpt2 or kind == "encoder"
    return ModelSpec(
        name=name or str(cfg.get("_name_or_path") or model_type),
        family=model_type,
        kind=kind,
        source="config.json",
        dtype=_HF_DTYPES.get(str(_first(cfg, "torch_dtype", "dtype", default="bfloat16")), "bf16"),
        hidden=hidden,
        layers=_first(cfg, "num_hidden_layers", "n_layer"),
        heads=_first(cfg, "num_attention_heads", "n_head"),
        kv_heads=_first(cfg, "num_key_value_heads"),
        head_dim=cfg.get("head_dim") if not cfg.get("kv_lora_rank") else None,
        intermediate=_first(cfg, "intermediate_size", "n_inner", default=4 * hidden if hidden else None),
        vocab=_first(cfg, "vocab_size", default=0) if kind != "vit" else 0,
        context=context,
        tie_embeddings=bool(cfg.get("tie_word_embeddings", tie_default)),
        mlp="plain" if plain else "gated",
        norm="layer" if plain else "rms",
        bias=bias,
        positions="learned" if plain else "rope",
        sliding_window=cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None,
        moe=_hf_moe(cfg),
        mla=_hf_mla(cfg),
        type_vocab=cfg.get("type_vocab_size", 0) if kind == "encoder" else 0,
        image_size=cfg.get("image_size") if kind == "vit" else None,
        patch_size=cfg.get("patch_size") if kind == "vit" else None,
        num_classes=len(cfg["id2label"]) if kind == "vit" and cfg.get("id2label") else None,
    )


def model_from_config_file(path: str | Path) -> ModelSpec:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"model config file not found: {p}")
    try:
        cfg = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{p}: not valid JSON ({err})") from None
    return model_from_hf_config(cfg, name=p.parent.name or p.stem)


def model_from_custom(d: dict[str, Any]) -> ModelSpec:
    """The constraint schema's custom model ``{family, params_b, layers, hidden, heads, kv_heads,
    vocab, context}``: the parameter count is the stated ``params_b``; shapes drive the KV cache."""
    params = int(round(float(d["params_b"]) * 1e9))
    hidden, heads = d["hidden"], d["heads"]
    per_layer = max(params - 2 * d.get("vocab", 0) * hidden, 0) // max(d["layers"], 1)
    # A gated MLP with intermediate I holds 3·h·I of a layer's ~4h² + 3hI weights: solve for I.
    intermediate = max(int((per_layer - 4 * hidden * hidden) / (3 * hidden)), hidden)
    return ModelSpec(
        name=d.get("name", f"custom-{d.get('family', 'model')}-{d['params_b']}b"),
        family=d.get("family", "custom"),
        kind="llm",
        hidden=hidden,
        layers=d["layers"],
        heads=heads,
        kv_heads=d.get("kv_heads") or heads,
        intermediate=intermediate,
        vocab=d.get("vocab", 0),
        context=d.get("context"),
        params=params,
    )
