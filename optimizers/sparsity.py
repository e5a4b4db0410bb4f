"""Sparsity primitives shared by the pruning techniques: which Linear layers to prune,
magnitude pruning through ``torch.nn.utils.prune`` (Han et al. 2015), Wanda scores
|W|·‖X_j‖₂ from calibration activations (Sun et al. 2024), N:M masks (Mishra et al. 2021),
and a CSR-stored Linear so that pruned zeros really leave the stored bytes."""
from __future__ import annotations

import warnings
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from optimizers.quant.modules import set_module

Named = list[tuple[str, nn.Linear]]


def prunable_linears(model: nn.Module, include_lm_head: bool = False) -> Named:
    """Every ``nn.Linear`` (the LM head only if asked): the layers the pruning techniques touch."""
    return [(n, m) for n, m in model.named_modules()
            if type(m) is nn.Linear and (include_lm_head or not n.endswith("lm_head"))]


def require_linears(layers: Named, technique: str) -> None:
    if not layers:
        raise ValueError(f"{technique} prunes nn.Linear layers and this model has none (no nn.Linear to prune)")


def sparsity(t: torch.Tensor) -> float:
    """Fraction of exact zeros."""
    return float((t == 0).sum()) / max(t.numel(), 1)


def layers_sparsity(layers: Named) -> float:
    """Zeros over all weights of ``layers`` (the figure a global ``amount`` targets)."""
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    return zeros / max(sum(m.weight.numel() for _, m in layers), 1)


# ---------------------------------------------------------------- magnitude (torch.nn.utils.prune)

def magnitude_prune(layers: Named, amount: float, scope: str = "global") -> None:
    """Zero the ``amount`` fraction of smallest-|w| weights in place, over all ``layers`` together
    (``global``) or in each layer (``layer``), then ``prune.remove`` so the zeros are baked into
    ``weight`` (no mask buffers, no ``weight_orig`` left in the state dict)."""
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount={amount} must be in [0, 1); it is the fraction of weights set to zero")
    params = [(m, "weight") for _, m in layers]
    if scope == "global":
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    elif scope == "layer":
        for m, p in params:
            prune.l1_unstructured(m, p, amount=amount)
    else:
        raise ValueError(f"scope={scope!r}; use 'global' or 'layer'")
    for m, p in params:
        prune.remove(m, p)


def apply_mask(layer: nn.Linear, keep: torch.Tensor) -> None:
    """Bake a boolean keep-mask (same shape as the weight) into the weight via ``torch.nn.utils.prune``."""
    prune.custom_from_mask(layer, "weight", keep.to(layer.weight.dtype))
    prune.remove(layer, "weight")


# ---------------------------------------------------------------- masks from scores

def topk_mask(scores: torch.Tensor, sparsity_: float, per_row: bool = True) -> torch.Tensor:
    """Keep-mask dropping the ``sparsity_`` fraction of lowest scores, per output row (Wanda's
    comparison group) or over the whole matrix. Exactly ``round(sparsity_·n)`` are dropped."""
    if not 0.0 <= sparsity_ < 1.0:
        raise ValueError(f"sparsity={sparsity_} must be in [0, 1)")
    flat = scores if per_row else scores.reshape(1, -1)  # (rows, n)
    k = int(round(sparsity_ * flat.shape[1]))
    keep = torch.ones_like(flat, dtype=torch.bool)
    if k:
        drop = flat.topk(k, dim=1, largest=False).indices
        keep.scatter_(1, drop, False)
    return keep.reshape(scores.shape)


def nm_mask(scores: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep-mask with the ``n`` highest scores of every ``m`` consecutive weights along the input
    dimension (2:4 is what Ampere+ sparse tensor cores execute)."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"in_features={cols} is not a multiple of m={m}; N:M sparsity needs whole groups")
    if not 0 < n < m:
        raise ValueError(f"need 0 < n={n} < m={m}")
    groups = scores.reshape(rows, cols // m, m)  # (rows, groups, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, groups.topk(n, dim=2).indices, True)
    return keep.reshape(rows, cols)


def parse_nm(pattern: str, field: str = "pattern") -> tuple[int, int] | None:
    """"unstructured" → None; "N:M" → (N, M), N weights kept of every M (2:4, 4:8, 1:4 …)."""
    if pattern == "unstructured":
        return None
    try:
        n, m = (int(x) for x in pattern.split(":"))
    except ValueError:
        raise ValueError(f"{field}={pattern!r}: write 'unstructured' or 'N:M' (N kept of every M, e.g. '2:4')") from None
    if not 0 < n < m <= 64:
        raise ValueError(f"{field}={pattern!r}: need 0 < N < M ≤ 64 (N weights kept of every M), e.g. '2:4' or '1:4'")
    return n, m


def semi_structured(model: nn.Module, layers: Named) -> list[str]:
    """Swap 2:4-sparse half-precision CUDA weights for ``torch.sparse.to_sparse_semi_structured``
    tensors, which run on sparse tensor cores (compute capability ≥ 8.0); returns the names."""
    from torch.sparse import to_sparse_semi_structured

    done = []
    for name, lin in layers:
        w = lin.weight
        if w.is_cuda and w.dtype in (torch.float16, torch.bfloat16) and is_nm_sparse(w.detach(), 2, 4):
            try:  # the kernels want minimum shapes (e.g. rows and columns multiples of 64): others stay dense
                lin.weight = nn.Parameter(to_sparse_semi_structured(w.detach()), requires_grad=False)
            except (RuntimeError, ValueError):
                continue
            done.append(name)
    return done


def is_nm_sparse(w: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """At most ``n`` non-zeros in every group of ``m`` consecutive weights of each row."""
    return bool(((w.reshape(w.shape[0], -1, m) != 0).sum(-1) <= n).all())


# ---------------------------------------------------------------- Wanda

def wanda_scores(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """S_ij = |W_ij| · ‖X_j‖₂ (Wanda eq. 1): weight (out, in), input_norm (in,)."""
    if input_norm.shape != weight.shape[1:]:
        raise ValueError(f"input_norm {tuple(input_norm.shape)} must be (in_features,) = ({weight.shape[1]},)")
    return weight.abs() * input_norm.to(weight.dtype)[None, :]


@torch.no_grad()
def input_norms(model: nn.Module, layers: Named, calibration: Iterable[Any]) -> dict[str, torch.Tensor]:
    """‖X_j‖₂ over every calibration token for each input channel j of each layer, from forward
    hooks during a pass of the calibration batches through the (dense) model."""
    sq = {n: torch.zeros(m.in_features, dtype=torch.float64, device=m.weight.device) for n, m in layers}

    def hook(name: str):
        def fn(_mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()  # (tokens, in)
            sq[name] += (x * x).sum(0)
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers]
    try:
        for batch in calibration:
            device = next(model.parameters()).device
            if isinstance(batch, dict):
                model(**{k: v.to(device) for k, v in batch.items()})
            else:
                model(batch.to(device))
    finally:
        for h in handles:
            h.remove()
    return {n: v.sqrt().float() for n, v in sq.items()}


# ---------------------------------------------------------------- CSR storage

class SparseCSRLinear(nn.Module):
    """A Linear whose weight is stored as CSR (int32 row pointers and column indices, float
    values): 8 bytes per non-zero instead of 4 per weight, so it pays from 50 % sparsity and
    runs faster than dense on this CPU only above ~80 % (FACTS.md)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            csr = weight.detach().to_sparse_csr()
        self.register_buffer("crow_indices", csr.crow_indices().to(torch.int32))  # (out + 1,)
        self.register_buffer("col_indices", csr.col_indices().to(torch.int32))  # (nnz,)
        self.register_buffer("values", csr.values().clone())  # (nnz,)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> "SparseCSRLinear":
        return cls(lin.weight, lin.bias)

    def weight_csr(self) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            return torch.sparse_csr_tensor(self.crow_indices, self.col_indices, self.values,
                                           (self.out_features, self.in_features), check_invariants=False)

    def dense_weight(self) -> torch.Tensor:  # (out, in), for tests and export
        return self.weight_csr().to_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_csr(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.values.numel()}"


def to_csr(model: nn.Module, layers: Named, min_sparsity: float) -> list[str]:
    """Swap each of ``layers`` whose sparsity is ≥ ``min_sparsity`` (less 0.005, so a per-row
    rounding of the target still counts) for a ``SparseCSRLinear`` in place; returns the names."""
    swapped = []
    for name, lin in layers:
        if sparsity(lin.weight) >= min_sparsity - 0.005:
            set_module(model, name, SparseCSRLinear.from_linear(lin))
            swapped.append(name)
    return swapped


def storage_note(swapped: list[str], total: int, min_sparsity: float, achieved: float) -> str:
    """The run-page note saying honestly where the zeros live."""
    if not swapped:
        return (f"weights stay dense (sparsity {achieved:.1%} < csr threshold {min_sparsity:.0%}, or csr off): "
                "zeros are stored, so stored_bytes does not drop and dense kernels do the same work")
    return (f"{len(swapped)}/{total} pruned layers stored as CSR (int32 indices + fp32 values, 8 B per non-zero); "
            "CSR matmul beats dense on this CPU only above ~80 % sparsity")
