"""Conv-kernel tensor decompositions and the convolution chains that run them: CP by alternating
least squares (Lebedev et al., ICLR 2015: a k_h×k_w conv as 1×1 → depthwise k_h×1 → depthwise 1×k_w
→ 1×1) and Tucker-2 on the two channel modes by HOSVD refined with HOOI (Kim et al., ICLR 2016:
1×1 → k_h×k_w core → 1×1). The math runs in float64; ranks from an energy fraction reuse
``optimizers.lowrank.rank_for_energy``; a layer is decomposed only where it saves parameters."""
from __future__ import annotations

import copy
import fnmatch
import math
from typing import Any

import torch
from torch import nn

from optimizers import lowrank as L
from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict, layer_error_figures
from optimizers.quant.modules import set_module

# ---------------------------------------------------------------- tensor algebra


def unfold(t: torch.Tensor, mode: int) -> torch.Tensor:
    """Mode-``mode`` unfolding (I_mode, Π other dims), the other modes in order, the last fastest."""
    return t.movedim(mode, 0).reshape(t.shape[mode], -1)


def mode_product(t: torch.Tensor, m: torch.Tensor, mode: int) -> torch.Tensor:
    """t ×_mode m for m (J, I_mode): mode ``mode`` of the result has size J."""
    return torch.tensordot(m, t, dims=([1], [mode])).movedim(0, mode)


def khatri_rao(mats: list[torch.Tensor]) -> torch.Tensor:
    """Column-wise Kronecker product of (I_n, R) matrices → (Π I_n, R), the first one's index slowest."""
    out = mats[0]
    for m in mats[1:]:
        out = (out[:, None, :] * m[None, :, :]).reshape(-1, out.shape[1])
    return out


def rel_error(t: torch.Tensor, approx: torch.Tensor) -> float:
    t, approx = t.detach().double(), approx.detach().double()
    return float((t - approx).norm() / t.norm())


# ---------------------------------------------------------------- CP (CANDECOMP/PARAFAC)


def cp_reconstruct(factors: list[torch.Tensor]) -> torch.Tensor:
    """Σ_r F_0[:, r] ⊗ F_1[:, r] ⊗ … from factors F_n (I_n, R)."""
    return (factors[0] @ khatri_rao(factors[1:]).T).reshape([f.shape[0] for f in factors])


def _cp_init(t: torch.Tensor, rank: int, g: torch.Generator) -> list[torch.Tensor]:
    """Leading left singular vectors of each unfolding (tensorly's "svd" init), random columns past them."""
    factors = []
    for n in range(t.dim()):
        u = torch.linalg.svd(unfold(t, n), full_matrices=False)[0][:, :rank]  # (I_n, ≤ R)
        extra = torch.randn(t.shape[n], rank - u.shape[1], generator=g, dtype=t.dtype, device=t.device)
        factors.append(torch.cat([u, extra], 1))
    return factors


def cp_als(t: torch.Tensor, rank: int, iters: int = 100, tol: float = 1e-9, seed: int = 0) -> tuple[list[torch.Tensor], float]:
    """Rank-``rank`` CP of ``t`` by alternating least squares (Kolda & Bader 2009, §3.4): each factor
    in turn solves F_n = X_(n) (⊙_{m≠n} F_m) (∗_{m≠n} F_mᵀF_m)⁺; stops after ``iters`` sweeps or when
    the relative error changes by less than ``tol``. Returns factors F_n (I_n, R) in ``t``'s dtype,
    the column scales spread evenly over them, and the relative error ‖t − [[F]]‖ / ‖t‖."""
    if rank < 1:
        raise ValueError(f"rank={rank} must be ≥ 1")
    x = t.detach().double()
    factors = _cp_init(x, rank, torch.Generator(device=x.device).manual_seed(seed))
    scale = torch.ones(rank, dtype=x.dtype, device=x.device)
    err, prev = math.inf, math.inf
    for _ in range(iters):
        for n in range(x.dim()):
            others = [f for m, f in enumerate(factors) if m != n]
            gram = math.prod(f.T @ f for f in others)  # (R, R), Hadamard product of the Gram matrices
            f = unfold(x, n) @ khatri_rao(others) @ torch.linalg.pinv(gram)  # (I_n, R)
            scale = f.norm(dim=0).clamp_min(1e-300)
            factors[n] = f / scale
        err = rel_error(x, cp_reconstruct([factors[0] * scale, *factors[1:]]))
        if abs(prev - err) < tol:
            break
        prev = err
    spread = scale ** (1.0 / x.dim())
    return [(f * spread).to(t.dtype) for f in factors], err


def cp_params(out_c: int, in_c: int, kh: int, kw: int, rank: int) -> int:
    """Weights of the four convs: R·(in + k_h + k_w + out)."""
    return rank * (in_c + kh + kw + out_c)


def cp_max_rank(out_c: int, in_c: int, kh: int, kw: int) -> int:
    """The largest R whose four convs hold fewer weights than the kernel (0: none does)."""
    return (out_c * in_c * kh * kw - 1) // (in_c + kh + kw + out_c)


# ---------------------------------------------------------------- Tucker-2

Factor = torch.Tensor | None  # an orthonormal factor matrix, or None for the identity (no conv for that mode)


def _leading(m: torch.Tensor, rank: int) -> Factor:
    """Leading ``rank`` left singular vectors of m, or None (identity) when ``rank`` keeps every row."""
    return None if rank >= m.shape[0] else torch.linalg.svd(m, full_matrices=False)[0][:, :rank]


def _project(t: torch.Tensor, u: Factor, mode: int) -> torch.Tensor:
    return t if u is None else mode_product(t, u.T, mode)


def tucker2(k: torch.Tensor, ranks: tuple[int, int], hooi_iters: int = 2) -> tuple[torch.Tensor, Factor, Factor]:
    """Tucker-2 of a kernel k (out, in, kh, kw) on its channel modes: k ≈ core ×_0 U_out ×_1 U_in with
    core (r_out, r_in, kh, kw) and orthonormal U_out (out, r_out), U_in (in, r_in) from the HOSVD,
    then ``hooi_iters`` rounds of HOOI (each factor from the kernel projected on the other). A factor
    whose rank keeps its whole mode is None (the identity: no conv for it)."""
    r_out, r_in = ranks
    if not (1 <= r_out <= k.shape[0] and 1 <= r_in <= k.shape[1]):
        raise ValueError(f"ranks={ranks} must be in 1..{tuple(k.shape[:2])} (out, in channels)")
    x = k.detach().double()
    u_out, u_in = _leading(unfold(x, 0), r_out), _leading(unfold(x, 1), r_in)
    for _ in range(hooi_iters):
        u_out = _leading(unfold(_project(x, u_in, 1), 0), r_out)
        u_in = _leading(unfold(_project(x, u_out, 0), 1), r_in)
    core = _project(_project(x, u_out, 0), u_in, 1)  # (r_out, r_in, kh, kw)
    cast = lambda u: None if u is None else u.to(k.dtype)  # noqa: E731
    return core.to(k.dtype), cast(u_out), cast(u_in)


def tucker2_reconstruct(core: torch.Tensor, u_out: Factor, u_in: Factor) -> torch.Tensor:
    full = core if u_out is None else mode_product(core, u_out, 0)
    return full if u_in is None else mode_product(full, u_in, 1)


def tucker2_ranks_for_energy(k: torch.Tensor, energy: float) -> tuple[int, int]:
    """(r_out, r_in): per channel mode, the smallest rank holding ``energy`` of its unfolding's Σσ²
    (in place of the paper's VBMF rank estimate)."""
    x = k.detach().double()
    return tuple(L.rank_for_energy(torch.linalg.svdvals(unfold(x, mode)), energy) for mode in (0, 1))  # type: ignore[return-value]


def tucker2_params(out_c: int, in_c: int, kh: int, kw: int, r_out: int, r_in: int) -> int:
    """Weights of the chain: in·r_in (unless r_in = in) + r_out·r_in·kh·kw + r_out·out (unless r_out = out)."""
    return (in_c * r_in if r_in < in_c else 0) + r_out * r_in * kh * kw + (r_out * out_c if r_out < out_c else 0)


# ---------------------------------------------------------------- the conv chains


def _conv_like(like: nn.Conv2d, c_in: int, c_out: int, weight: torch.Tensor, bias: torch.Tensor | None = None,
               **kw: Any) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, tuple(weight.shape[2:]), bias=bias is not None, device=like.weight.device,
                     dtype=like.weight.dtype, **kw)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def _split_padding(conv: nn.Conv2d) -> tuple[Any, Any]:
    """The padding of the k_h×1 and 1×k_w stages ('same' / 'valid' stay strings)."""
    if isinstance(conv.padding, str):
        return conv.padding, conv.padding
    return (conv.padding[0], 0), (0, conv.padding[1])


def cp_conv(conv: nn.Conv2d, factors: list[torch.Tensor]) -> nn.Sequential:
    """Lebedev et al.'s chain for K ≈ Σ_r A[:, r] ⊗ B[:, r] ⊗ C[:, r] ⊗ D[:, r] (out, in, kh, kw):
    1×1 in→R (B), depthwise kh×1 (C, the vertical stride / padding / dilation), depthwise 1×kw
    (D, the horizontal ones), 1×1 R→out (A, with the bias)."""
    a, b, c, d = factors  # (out, R) (in, R) (kh, R) (kw, R)
    r = a.shape[1]
    pad_v, pad_h = _split_padding(conv)
    return nn.Sequential(
        _conv_like(conv, conv.in_channels, r, b.T[:, :, None, None]),
        _conv_like(conv, r, r, c.T[:, None, :, None], groups=r, stride=(conv.stride[0], 1), padding=pad_v,
                   dilation=(conv.dilation[0], 1)),
        _conv_like(conv, r, r, d.T[:, None, None, :], groups=r, stride=(1, conv.stride[1]), padding=pad_h,
                   dilation=(1, conv.dilation[1])),
        _conv_like(conv, r, conv.out_channels, a[:, :, None, None], conv.bias),
    )


def tucker_conv(conv: nn.Conv2d, core: torch.Tensor, u_out: Factor, u_in: Factor) -> nn.Sequential:
    """Kim et al.'s chain: 1×1 in→r_in (U_inᵀ), the kh×kw core conv r_in→r_out (the original stride,
    padding, dilation), 1×1 r_out→out (U_out, with the bias); an identity factor has no conv."""
    r_out, r_in = core.shape[:2]
    last_bias = conv.bias if u_out is None else None
    stages = [] if u_in is None else [_conv_like(conv, conv.in_channels, r_in, u_in.T[:, :, None, None])]
    stages.append(_conv_like(conv, r_in, r_out, core, last_bias, stride=conv.stride, padding=conv.padding,
                             dilation=conv.dilation))
    if u_out is not None:
        stages.append(_conv_like(conv, r_out, conv.out_channels, u_out[:, :, None, None], conv.bias))
    return nn.Sequential(*stages)


def pointwise_svd_conv(conv: nn.Conv2d, rank: int) -> nn.Sequential:
    """A 1×1 conv is the matrix W (out, in): two 1×1 convs from its truncated SVD (the first keeps the
    stride and padding; the border it pads is zero, so the second adds only the bias there)."""
    b, a = L.truncated_svd(conv.weight.reshape(conv.out_channels, conv.in_channels), rank)  # (out, r) (r, in)
    return nn.Sequential(
        _conv_like(conv, conv.in_channels, rank, a[:, :, None, None], stride=conv.stride, padding=conv.padding),
        _conv_like(conv, rank, conv.out_channels, b[:, :, None, None], conv.bias),
    )


# ---------------------------------------------------------------- which convs


def conv_problem(shape: tuple[int, int, int, int, int], pointwise: bool = False) -> str | None:
    """Why a conv of (out, in, kh, kw, groups) is no kernel to decompose; None when it is."""
    _, _, kh, kw, groups = shape
    if groups > 1:
        return "grouped/depthwise (groups > 1): each filter sees in/groups channels, nothing to decompose"
    if (kh, kw) == (1, 1) and not pointwise:
        return "1×1: a matrix, not a 4-way kernel (tucker_decomposition with pointwise: true factorizes it by SVD)"
    return None


def eligible_convs(model: nn.Module, include: list[str],
                   pointwise: bool = False) -> tuple[list[tuple[str, nn.Conv2d]], dict[str, str]]:
    """The nn.Conv2d layers matching ``include`` to decompose, and why each other matching one is not."""
    chosen, skipped = [], {}
    for name, m in model.named_modules():
        if type(m) is not nn.Conv2d or not any(fnmatch.fnmatch(name, p) for p in include):
            continue
        why = conv_problem((m.out_channels, m.in_channels, *m.kernel_size, m.groups), pointwise)
        if why is None and m.padding_mode != "zeros":
            why = f"padding_mode={m.padding_mode!r}: each stage would pad on its own"
        if why is None:
            chosen.append((name, m))
        else:
            skipped[name] = why
    return chosen, skipped


# ---------------------------------------------------------------- the shared technique


class ConvDecomposition(Technique):
    """A technique that swaps eligible nn.Conv2d layers for a chain of smaller convs; subclasses give
    ``decompose`` (one conv → its chain or None, and the layer's figures)."""

    tasks = frozenset({"vision"})

    def pointwise(self, config: TechniqueConfig | None) -> bool:
        return bool(getattr(config, "pointwise", False))

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        if not target.convs:
            return Verdict("refused", f"{self.name} decomposes Conv2d kernels and this model (task {target.task}) "
                                      "has no Conv2d (for nn.Linear layers: svd_factorization)")
        verdict = super().check(target, config)
        if not verdict.runnable:
            return verdict
        include = getattr(config, "include", ["*"])
        matching = [c for c in target.convs if any(fnmatch.fnmatch(c[0], p) for p in include)]
        if not matching:
            return Verdict("refused", f"no Conv2d matches include={include}; names look like "
                                      f"{[c[0] for c in target.convs][:3]}", blame="config")
        problems = [conv_problem(c[1:], self.pointwise(config)) for c in matching]
        if all(problems):
            return Verdict("refused", f"no eligible Conv2d: {'; '.join(sorted(set(problems)))}")
        return verdict

    def decompose(self, conv: nn.Conv2d, config: Any) -> tuple[nn.Module | None, dict[str, Any]]:
        raise NotImplementedError

    def apply(self, workload: Any, config: Any) -> StepRecord:
        model = copy.deepcopy(workload.model).eval()
        chosen, skipped = eligible_convs(model, config.include, self.pointwise(config))
        if not chosen:
            raise ValueError(f"{self.name} found no eligible Conv2d matching {config.include} "
                             f"(skipped: {skipped or 'no Conv2d at all'})")
        layers = {}
        for name, conv in chosen:
            new, layers[name] = self.decompose(conv, config)
            if new is not None:
                set_module(model, name, new)
        done = {n: v for n, v in layers.items() if v["decomposed"]}
        notes = [summary_note(done, len(chosen)),
                 *[f"{n} {v['shape']} ranks {v['ranks']}: {v['params_before']:,} → {v['params_after']:,} params, "
                   f"kernel error {v['kernel_rel_error']:.3f}" for n, v in list(done.items())[:8]],
                 *[f"kept {n}: {v['why']}" for n, v in layers.items() if not v["decomposed"]][:8],
                 *[f"not eligible, {why}: {', '.join(n for n, w in skipped.items() if w == why)}"
                   for why in sorted(set(skipped.values()))],
                 "no fine-tuning here: the accuracy cost is measured as is (a recovery_finetune step can follow)"]
        diagnostics = layer_error_figures("kernel_rel_error", {n: v["kernel_rel_error"] for n, v in done.items()})
        return StepRecord(workload.with_model(model), notes=notes, diagnostics=diagnostics,
                          details={"layers": layers, "not_eligible": skipped})


def summary_note(done: dict[str, dict[str, Any]], eligible: int) -> str:
    if not done:
        return f"decomposed none of the {eligible} eligible Conv2d (no rank met the rule and saved weights)"
    before, after = sum(v["params_before"] for v in done.values()), sum(v["params_after"] for v in done.values())
    return f"decomposed {len(done)} of {eligible} eligible Conv2d: their weights {before:,} → {after:,} params"


def layer_figures(conv: nn.Conv2d, ranks: list[int], params_after: int, error: float | None,
                  why: str = "") -> dict[str, Any]:
    """The per-layer row of ``StepRecord.details``; ``why`` says why the layer was kept whole."""
    before = conv.weight.numel()
    return {"shape": list(conv.weight.shape), "ranks": ranks, "params_before": before,
            "params_after": params_after if not why else before, "kernel_rel_error": error,
            "decomposed": not why, "why": why}
