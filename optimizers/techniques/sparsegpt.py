"""SparseGPT: one-shot OBS pruning with the calibrated Hessian — unstructured or N:M, with
optional joint 4/3-bit quantization in the same sweep — sequentially layer block by layer
block (Frantar & Alistarh, ICML 2023; the algorithm in ``optimizers.sparsegpt``). With
``compare`` it also prunes the same layers to the same pattern by Wanda and by magnitude, and
the harness measures those as this step's peers, in the same run."""
from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from optimizers import registry
from optimizers import sparsity as S
from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict, layer_error_figures
from optimizers.quant.calibrate import calibrated_copy
from optimizers.quant.modules import check_group_size
from optimizers.registry import register
from optimizers.sparsegpt import sparsegpt_model
from optimizers.workloads.base import Workload

PEERS = ("wanda", "magnitude")


class SparseGptConfig(TechniqueConfig):
    sparsity: float | None = Field(None, ge=0.0, lt=1.0, description="fraction of weights zeroed (unstructured; default 0.5); N:M fixes its own")
    pattern: str = Field("unstructured", description="'unstructured', or 'N:M' (N kept of every M consecutive weights, e.g. '2:4')")
    bits: int | None = Field(None, description="joint quantization of the kept weights: 4 or 3 bits group-wise (None: prune only)")
    group_size: int = Field(128, ge=1, description="input columns per quantization group when bits is set")
    damp: float = Field(0.01, gt=0.0, lt=1.0, description="dampening added to the Hessian diagonal, as a fraction of its mean")
    block_size: int = Field(128, ge=1, description="columns per lazy-update block; the unstructured mask is chosen per block (the paper's 128)")
    include_lm_head: bool = Field(False, description="also prune the output projection (lm_head)")
    store_sparse: bool = Field(True, description="store layers at ≥ csr_min_sparsity as CSR so stored bytes drop (prune only)")
    csr_min_sparsity: float = Field(0.8, ge=0.5, le=1.0, description="CSR storage threshold (CSR beats dense above ~0.8 on CPU)")
    compare: list[str] = Field(list(PEERS), description="also measure wanda and/or magnitude pruning to the same pattern, in this run")

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        S.parse_nm(v)
        return v

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: int | None) -> int | None:
        if v is not None and v not in (3, 4):
            raise ValueError(f"bits={v}: joint quantization takes 4 or 3 bits (or null to prune only)")
        return v

    @field_validator("compare")
    @classmethod
    def _compare(cls, v: list[str]) -> list[str]:
        if bad := sorted(set(v) - set(PEERS)):
            raise ValueError(f"compare={bad}: choose from {list(PEERS)}")
        return v

    @model_validator(mode="after")
    def _sparsity_or_pattern(self) -> "SparseGptConfig":
        if self.pattern != "unstructured" and self.sparsity is not None:
            raise ValueError(f"sparsity: pattern={self.pattern!r} fixes it; leave sparsity out (or use pattern='unstructured')")
        return self

    @property
    def amount(self) -> float:
        return 0.5 if self.sparsity is None else self.sparsity


def _peer(cfg: SparseGptConfig, peer: str, nm: tuple[int, int] | None) -> tuple[str, dict] | None:
    """(technique, params) that prune the same layers to the same pattern, or None (wanda has no 4:8)."""
    storage = {"include_lm_head": cfg.include_lm_head, "store_sparse": cfg.store_sparse,
               "csr_min_sparsity": cfg.csr_min_sparsity}
    if peer == "wanda":
        if nm and cfg.pattern != "2:4":
            return None
        return "wanda", storage | ({"pattern": "2:4"} if nm else {"sparsity": cfg.amount})
    if nm:
        return "nm_sparsity", storage | {"pattern": cfg.pattern}
    return "magnitude_pruning", storage | {"amount": cfg.amount, "scope": "layer"}  # per layer, as SparseGPT prunes


@register
class SparseGpt(Technique):
    name = "sparsegpt"
    needs_linear = True
    needs_calibration = True
    summary = "SparseGPT: one-shot OBS pruning with the calibrated Hessian (unstructured or N:M, optional joint 4-bit)"
    Config = SparseGptConfig

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if verdict.runnable and not target.has_linear:
            return Verdict("refused", "sparsegpt prunes nn.Linear layers and this model has none")
        if verdict.runnable and getattr(config, "pattern", "unstructured") == "2:4":
            return Verdict("runs", "2:4 pattern: accuracy effect measured; its speed-up needs CUDA sparse tensor cores "
                                   "(compute capability ≥ 8.0) — nm_sparsity's semi-structured path")
        return verdict

    def apply(self, workload: Workload, config: SparseGptConfig) -> StepRecord:
        nm = S.parse_nm(config.pattern)
        model, _, linears = calibrated_copy(workload, self.name, config.include_lm_head)
        if nm and (bad := [n for n, lin in linears.items() if lin.in_features % nm[1]]):
            raise ValueError(f"{config.pattern} needs in_features divisible by {nm[1]}; not so for {bad[:3]}")
        group = check_group_size(linears, config.group_size) if config.bits else config.group_size
        prune_n, prune_m = (nm[1] - nm[0], nm[1]) if nm else (0, 0)
        errors = sparsegpt_model(model, list(linears), workload.calibration, config.amount, prune_n, prune_m,
                                 config.bits, group, config.damp, config.block_size)
        kind = config.pattern if nm else f"{config.amount:.0%} unstructured"
        notes = [f"SparseGPT {kind} on {len(linears)} Linear layers, {len(workload.calibration)} calibration batches, "
                 f"sequential by block; mean relative output error {sum(errors.values()) / len(errors):.4f}"]
        diagnostics = layer_error_figures("sparsegpt_layer_error", errors)
        if config.bits:
            notes.append(f"jointly quantized to {config.bits}-bit (group {group}): pruned weights are code = zero point, "
                         "stored packed like int4 (the zeros do not shrink the packed bytes)")
        else:
            layers = S.prunable_linears(model, config.include_lm_head)
            achieved = S.layers_sparsity(layers)
            diagnostics["sparsity_achieved"] = achieved
            swapped = S.to_csr(model, layers, config.csr_min_sparsity) if config.store_sparse else []
            notes.append(S.storage_note(swapped, len(layers), config.csr_min_sparsity, achieved))
        peers = {}
        for peer in config.compare:
            if (chosen := _peer(config, peer, nm)) is None:
                notes.append(f"no {peer} peer: it has no {config.pattern} mode (only 2:4 and unstructured)")
                continue
            technique = registry.get(chosen[0])
            peers[peer] = technique.apply(workload, technique.config(chosen[1])).model
        if peers:
            notes.append(f"peers measured in this run at the same pattern: {', '.join(peers)}")
        return StepRecord(workload.with_model(model), diagnostics=diagnostics, details={"sparsegpt_layer_error": errors},
                          peers=peers, notes=notes)
