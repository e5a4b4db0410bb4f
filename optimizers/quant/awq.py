"""AWQ (Lin et al. 2024, arXiv:2306.00978 §3.2): protect salient weight channels by scaling
them up before group-wise rounding. s = mean|x|^α per input channel, α searched on a grid
to minimise the output error of the Linears that share the input; the 1/s is then folded
into the preceding op (smooth.migrate). Follows llm-awq's ``auto_scale`` search (no clipping)."""
from __future__ import annotations

import torch

from optimizers.quant.modules import dequantize_groupwise, quantize_groupwise


def awq_scales(act_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    """s = mean|x|^α, clamped, normalised so sqrt(max·min) = 1 (as llm-awq)."""
    s = act_mean.float().clamp(min=1e-4).pow(alpha).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def fake_quant(W: torch.Tensor, bits: int, group_size: int, symmetric: bool = False) -> torch.Tensor:
    codes, scale, zero = quantize_groupwise(W, bits, group_size, symmetric)
    return dequantize_groupwise(codes, scale, zero, group_size)


@torch.no_grad()
def awq_search(weights: list[torch.Tensor], X: torch.Tensor, bits: int = 4, group_size: int = 128,
               grid: int = 20, symmetric: bool = False) -> tuple[torch.Tensor, float, dict[float, float]]:
    """Search α ∈ {0, 1/grid, …, (grid-1)/grid}. ``weights``: the (N_i, K) weights reading X (T, K).

    Returns (best s (K,), best α, {α: relative output error}). α = 0 is s = 1, i.e. plain RTN,
    so the chosen scales never do worse than RTN on the calibration inputs."""
    W = torch.cat([w.detach().float() for w in weights])  # (ΣN, K)
    X = X.float()
    ref = X @ W.t()
    denom = ref.pow(2).sum().clamp(min=1e-20)
    act_mean = X.abs().mean(dim=0)  # (K,)
    errs: dict[float, float] = {}
    best = (float("inf"), 0.0, torch.ones_like(act_mean))
    for i in range(grid):
        alpha = i / grid
        s = awq_scales(act_mean, alpha)
        Wq = fake_quant(W * s[None, :], bits, group_size, symmetric) / s[None, :]
        err = float((ref - X @ Wq.t()).pow(2).sum() / denom)
        errs[alpha] = err
        if err < best[0]:
            best = (err, alpha, s)
    return best[2], best[1], errs


def awq_model(model, names: list[str], batches, bits: int = 4, group_size: int = 128, grid: int = 20,
              symmetric: bool = False, scale_unfoldable: bool = False, max_tokens: int = 4096) -> dict[str, dict]:
    """AWQ over the named Linears in place, block by block (inputs of block i come from the
    already-quantized blocks before it). Linears that read the same input (q/k/v, gate/up)
    share one s, searched on the float block; then every 1/s is folded into its producer
    (norm, or the Linear before: up_proj for down_proj) when exact — else the group keeps
    s = 1, or with ``scale_unfoldable`` an explicit ``input_scale`` (not exportable) — and
    the block is quantized. Returns {first linear of group: {"alpha", "error", "rtn_error",
    "folded_into", "group"}}."""
    from optimizers.quant.calibrate import collect_inputs, sequential, shared_input_groups
    from optimizers.quant.modules import QuantLinearInt4, set_module
    from optimizers.quant.smooth import migrate, producer_candidates, scale_weights

    shared = shared_input_groups(model, names, batches[0])
    group_of = {g[0]: (g, norm) for g, norm in shared}
    report: dict[str, dict] = {}
    for block_names, feed in sequential(model, names, batches):
        X = collect_inputs(model, block_names, feed, max_tokens=max_tokens)
        found = []
        for first in [n for n in block_names if n in group_of]:
            group, norm = group_of[first]
            group = [n for n in group if n in block_names]
            s, alpha, errs = awq_search([model.get_submodule(n).weight for n in group], X[first], bits,
                                        group_size, grid, symmetric)
            found.append((group, norm, s, alpha, errs))
        input_scale: dict[str, torch.Tensor] = {}
        for group, norm, s, alpha, errs in found:
            into = None
            if alpha > 0:
                inv, into = migrate(model, group, producer_candidates(model, group, norm, names), s, batches[0])
                if inv is not None and scale_unfoldable:
                    input_scale.update({n: inv for n in group})
                elif inv is not None:  # cannot fold: keep this group at s = 1 (plain RTN)
                    scale_weights([model.get_submodule(n) for n in group], inv)
                    alpha = 0.0
            report[group[0]] = {"alpha": alpha, "error": errs[alpha], "rtn_error": errs[0.0],
                                "folded_into": into, "group": group}
        for n in block_names:
            lin = model.get_submodule(n)
            codes, scale, zero = quantize_groupwise(lin.weight, bits, group_size, symmetric)
            q = QuantLinearInt4.from_codes(codes, scale, zero, group_size, lin.bias, bits)
            if n in input_scale:
                q.set_input_scale(input_scale[n])
            set_module(model, n, q)
    return report
