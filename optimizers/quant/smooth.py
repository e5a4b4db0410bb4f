"""Per-input-channel scale migration shared by SmoothQuant and AWQ: X·W = (X·diag(s)⁻¹)·(diag(s)·W).
The 1/s goes into the preceding norm's weight (and bias) when that norm's output feeds only
these Linears, else it stays as an explicit input scale on the quantized module.
SmoothQuant: Xiao et al. 2023, s_j = max|X_j|^α / max|W_j|^(1-α) (arXiv:2211.10438, eq. 4)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from optimizers.quant.calibrate import run_batch


def smoothing_factors(act_absmax: torch.Tensor, weight_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's s (K,) = max|X_j|^α / max|W_j|^(1-α); α = migration strength in [0, 1]."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1]; 0.5 is the paper's default")
    a = act_absmax.float().clamp(min=1e-5)
    w = weight_absmax.float().clamp(min=1e-5)
    return (a.pow(alpha) / w.pow(1 - alpha)).clamp(min=1e-5)


def weight_col_absmax(linears: list[nn.Linear]) -> torch.Tensor:
    """max_i |W_ij| over the output rows of all Linears sharing the input: (K,)."""
    return torch.stack([l.weight.detach().abs().amax(dim=0).float() for l in linears]).amax(dim=0)


@torch.no_grad()
def scale_weights(linears: list[nn.Linear], s: torch.Tensor) -> None:
    """W ← W·diag(s) (columns scaled), in place."""
    for l in linears:
        l.weight.mul_(s.to(l.weight.dtype)[None, :])


@torch.no_grad()
def scale_norm(norm: nn.Module, inv_s: torch.Tensor) -> None:
    """norm output ← output·diag(1/s): weight (and bias) scaled, in place."""
    norm.weight.mul_(inv_s.to(norm.weight.dtype))
    if getattr(norm, "bias", None) is not None:
        norm.bias.mul_(inv_s.to(norm.bias.dtype))


def _main(out: Any) -> torch.Tensor:
    for k in ("logits", "last_hidden_state"):
        if hasattr(out, k) and getattr(out, k) is not None:
            return getattr(out, k)
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def scale_producer(mod: nn.Module, inv_s: torch.Tensor) -> None:
    """Output channel j of a norm (weight, bias) or of a Linear (row j, bias j) times inv_s[j]."""
    if isinstance(mod, nn.Linear):
        mod.weight.mul_(inv_s.to(mod.weight.dtype)[:, None])
        if mod.bias is not None:
            mod.bias.mul_(inv_s.to(mod.bias.dtype))
    else:
        scale_norm(mod, inv_s)


def producer_candidates(model: nn.Module, group: list[str], norm: str | None, names: list[str],
                        limit: int = 3) -> list[str]:
    """Where 1/s may fold: the group's norm, else the closest preceding Linears whose output
    width equals the group's input width (up_proj before down_proj; v_proj before o_proj
    without GQA). Validity is checked numerically by ``migrate``."""
    if norm is not None:
        return [norm]
    import re

    k = model.get_submodule(group[0]).in_features
    m = re.match(r"^(.*\.\d+\.)", group[0])  # the repeated block's prefix, e.g. "model.layers.3."
    block = m.group(1) if m else ""
    first = names.index(group[0]) if group[0] in names else len(names)
    before = [n for n in reversed(names[:first]) if n not in group and n.startswith(block)
              and type(model.get_submodule(n)) is nn.Linear and model.get_submodule(n).out_features == k]
    return before[:limit]


@torch.no_grad()
def migrate(model: nn.Module, names: list[str], producers: list[str] | str | None, s: torch.Tensor,
            check_batch: Any = None, rtol: float = 1e-3) -> tuple[torch.Tensor | None, str | None]:
    """Scale the named Linears' weights by s (columns) and fold 1/s into the first producer
    (a norm, or a Linear's output rows) for which the model's output on ``check_batch`` stays
    the same. When none qualifies (no producer, or its output also feeds a residual or a
    nonlinearity), nothing is folded and 1/s is returned for the quantized modules'
    ``input_scale``. Returns (1/s or None, the producer folded into or None)."""
    if isinstance(producers, str):
        producers = [producers]
    lins = [model.get_submodule(n) for n in names]
    inv = 1.0 / s
    ref = _main(run_batch(model, check_batch)).float() if check_batch is not None and producers else None
    scale_weights(lins, s)
    for p in producers or []:
        mod = model.get_submodule(p)
        scale_producer(mod, inv)
        if ref is None:
            return None, p
        out = _main(run_batch(model, check_batch)).float()
        if (out - ref).norm() <= rtol * ref.norm() + 1e-6:
            return None, p
        scale_producer(mod, s)  # not equivalent: undo, try the next
    return inv, None


def smooth_model(model: nn.Module, names: list[str], batches: list[Any], alpha: float = 0.5,
                 smooth_unfoldable: bool = False) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """SmoothQuant over the named Linears in place: per group of Linears sharing an input,
    s from calibration |X| maxima and weight maxima; 1/s folded into the norm (or the
    producing Linear) when exact. Unfoldable groups are skipped unless ``smooth_unfoldable``.
    Returns ({linear: 1/s still to apply as input_scale}, per-group report)."""
    from optimizers.quant.calibrate import channel_absmax, shared_input_groups

    shared = shared_input_groups(model, names, batches[0])
    act = channel_absmax(model, names, batches)
    pending: dict[str, torch.Tensor] = {}
    report = []
    for group, norm in shared:
        lins = [model.get_submodule(n) for n in group]
        s = smoothing_factors(act[group[0]], weight_col_absmax(lins), alpha)
        inv, into = migrate(model, group, producer_candidates(model, group, norm, names), s, check_batch=batches[0])
        if inv is not None:
            if smooth_unfoldable:
                pending.update({n: inv for n in group})
            else:
                scale_weights(lins, inv)  # undo: this group stays unsmoothed
        report.append({"group": group, "folded_into": into, "smoothed": into is not None or smooth_unfoldable,
                       "act_absmax_max": float(act[group[0]].max())})
    return pending, report
