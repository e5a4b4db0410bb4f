"""Sparsity during training, as training-loop hooks over the prunable Linear layers' keep-masks:
a fixed mask (recovery after pruning: pruned weights get no gradient and stay exactly zero),
gradual magnitude pruning on Zhu & Gupta's cubic schedule, movement pruning's first-order scores
(Sanh, Wolf & Rush 2020), RigL's drop-and-regrow by gradient magnitude (Evci et al. 2020) and
SET's random regrowth (Mocanu et al. 2018), SNIP's connection sensitivity at the start (Lee et al.
2019). Every mask is a bool tensor the shape of its weight; the optimizer only ever sees masked
gradients, and the weights are masked again after each step."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from optimizers import sparsity as S
from optimizers.training.loop import TrainHook


def prunable(model: nn.Module, include_lm_head: bool = False) -> S.Named:
    return S.prunable_linears(model, include_lm_head)


def cubic_sparsity(step: int, final: float, start_step: int, end_step: int, initial: float = 0.0) -> float:
    """Zhu & Gupta 2017 eq. 1: s_t = s_f + (s_i − s_f)·(1 − (t − t₀)/(t_end − t₀))³ for t₀ ≤ t ≤ t_end
    (fast pruning early, when redundancy is plenty; slow near the target); s_i before, s_f after."""
    if step <= start_step:
        return initial
    if step >= end_step:
        return final
    frac = (step - start_step) / (end_step - start_step)
    return final + (initial - final) * (1.0 - frac) ** 3


def global_topk_masks(scores: dict[str, torch.Tensor], sparsity: float,
                      allowed: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks dropping the ``sparsity`` fraction of lowest scores over all layers together
    (exactly round(sparsity·n) dropped); entries outside ``allowed`` are dropped first."""
    flat = torch.cat([(s.float() if allowed is None else s.float().masked_fill(~allowed[n], -math.inf)).flatten()
                      for n, s in scores.items()])
    k = int(round(sparsity * flat.numel()))
    keep = torch.ones_like(flat, dtype=torch.bool)
    if k:
        keep[flat.topk(k, largest=False).indices] = False
    out, i = {}, 0
    for n, s in scores.items():
        out[n] = keep[i : i + s.numel()].reshape(s.shape)
        i += s.numel()
    return out


class MaskedTraining(TrainHook):
    """Weights stay zero where their mask is False: gradients are masked before the optimizer step
    and weights after it. Subclasses change the masks on a schedule (``update``)."""

    def __init__(self, masks: dict[str, torch.Tensor] | None = None, include_lm_head: bool = False) -> None:
        self.masks = dict(masks or {})
        self.include_lm_head = include_lm_head
        self.layers: dict[str, nn.Linear] = {}

    def on_start(self, model: nn.Module) -> None:
        self.layers = dict(prunable(model, self.include_lm_head)) | dict(_masked_convs(model, self.masks))
        if missing := set(self.masks) - set(self.layers):
            raise ValueError(f"masks name layers the model lacks: {sorted(missing)[:3]}")
        self.enforce()

    def before_step(self, model: nn.Module, k: int) -> None:
        for n, keep in self.masks.items():
            g = self.layers[n].weight.grad
            if g is not None:
                g.mul_(keep)

    def after_step(self, model: nn.Module, k: int) -> None:
        self.update(k)
        self.enforce()

    def update(self, k: int) -> None:
        pass

    @torch.no_grad()
    def enforce(self) -> None:
        for n, keep in self.masks.items():
            self.layers[n].weight.mul_(keep)

    def sparsity(self) -> float:
        """Zeros over every prunable weight (the figure the targets state)."""
        return S.layers_sparsity(list(self.layers.items()))


def _masked_convs(model: nn.Module, names: Iterable[str]) -> S.Named:
    """The Conv2d layers among ``names``: a pruned CNN's convolutions keep their zeros too."""
    convs = {n: m for n, m in model.named_modules() if type(m) is nn.Conv2d}
    return [(n, convs[n]) for n in names if n in convs]


def masks_from_zeros(model: nn.Module, min_sparsity: float = 0.01, include_lm_head: bool = False) -> dict[str, torch.Tensor]:
    """The keep-mask of every prunable layer (and Conv2d) that already holds ≥ ``min_sparsity`` exact
    zeros (a pruned model's pattern, kept fixed by a recovery fine-tune); dense layers get none."""
    convs = [(n, m) for n, m in model.named_modules() if type(m) is nn.Conv2d]
    return {n: m.weight.detach() != 0 for n, m in prunable(model, include_lm_head) + convs
            if S.sparsity(m.weight) >= min_sparsity}


def densify(model: nn.Module) -> list[str]:
    """Swap every CSR-stored Linear back to a dense ``nn.Linear`` in place (so it can train); the
    names, for ``sparsity.to_csr`` afterwards."""
    from optimizers.quant.modules import set_module

    names = []
    for n, m in list(model.named_modules()):
        if isinstance(m, S.SparseCSRLinear):
            w = m.dense_weight()
            lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device=w.device, dtype=w.dtype)
            with torch.no_grad():
                lin.weight.copy_(w)
                if m.bias is not None:
                    lin.bias.copy_(m.bias)
            set_module(model, n, lin)
            names.append(n)
    return names


class GradualMagnitude(MaskedTraining):
    """GMP (Zhu & Gupta 2017): every ``every`` steps from ``start`` to ``end`` the global magnitude
    mask is recomputed at the cubic schedule's sparsity; pruned weights are never revived."""

    def __init__(self, final: float, start: int, end: int, every: int = 1, include_lm_head: bool = False,
                 scope: str = "global") -> None:
        super().__init__(include_lm_head=include_lm_head)
        if not 0.0 < final < 1.0 or not 0 <= start < end or every < 1 or scope not in ("global", "layer"):
            raise ValueError(f"GMP needs 0 < final={final} < 1, 0 ≤ start={start} < end={end}, every={every} ≥ 1, "
                             f"scope global|layer (not {scope!r})")
        self.final, self.start, self.end, self.every, self.scope = final, start, end, every, scope

    def scores(self) -> dict[str, torch.Tensor]:
        return {n: m.weight.detach().abs() for n, m in self.layers.items()}

    def update(self, k: int) -> None:
        t = k + 1  # steps done
        if t < self.start or (t - self.start) % self.every and t < self.end:
            return
        target = cubic_sparsity(t, self.final, self.start, self.end)
        if target <= 0:
            return
        allowed = {n: self.masks.get(n, torch.ones_like(m.weight, dtype=torch.bool)) for n, m in self.layers.items()}
        scores = self.scores()
        if self.scope == "global":
            self.masks = global_topk_masks(scores, target, allowed)
        else:  # each matrix its own top-v (Sanh et al.'s per-matrix threshold)
            self.masks = {n: global_topk_masks({n: s}, target, {n: allowed[n]})[n] for n, s in scores.items()}


class Movement(GradualMagnitude):
    """Movement pruning (Sanh et al. 2020, hard variant): the score of W_ij is its accumulated
    movement S_ij = −Σ_t ∂L/∂W_ij · W_ij (paper eq. 5/6: weights moving towards zero score low),
    and the top-v of S by the same cubic schedule is kept. Scores accumulate from the unmasked
    gradients before each step."""

    def on_start(self, model: nn.Module) -> None:
        super().on_start(model)
        self.movement = {n: torch.zeros_like(m.weight, dtype=torch.float32) for n, m in self.layers.items()}

    def before_step(self, model: nn.Module, k: int) -> None:
        with torch.no_grad():
            for n, m in self.layers.items():
                if m.weight.grad is not None:
                    self.movement[n] -= (m.weight.grad * m.weight).float()
        super().before_step(model, k)

    def scores(self) -> dict[str, torch.Tensor]:
        return dict(self.movement)


class DropRegrow(MaskedTraining):
    """Fixed-sparsity training: start from the global magnitude mask at ``sparsity``; every ``every``
    steps (until ``end``) each layer drops its ζ_t smallest active weights, ζ_t = ζ·(1 + cos(πt/end))/2
    (RigL's cosine decay), and regrows as many inactive connections, by largest |gradient| (RigL)
    or at random (SET); regrown weights start at zero. Each layer's count of non-zeros is constant."""

    def __init__(self, sparsity: float, regrow: str = "gradient", drop_fraction: float = 0.3, every: int = 10,
                 end: int | None = None, seed: int = 0, include_lm_head: bool = False) -> None:
        super().__init__(include_lm_head=include_lm_head)
        if not 0.0 < sparsity < 1.0 or not 0.0 < drop_fraction < 1.0 or every < 1 or regrow not in ("gradient", "random"):
            raise ValueError(f"drop/regrow needs 0 < sparsity={sparsity} < 1, 0 < drop_fraction={drop_fraction} < 1, "
                             f"every={every} ≥ 1 and regrow gradient|random (not {regrow!r})")
        self.target, self.regrow, self.drop_fraction, self.every, self.end = sparsity, regrow, drop_fraction, every, end
        self.gen = torch.Generator().manual_seed(seed)
        self.grads: dict[str, torch.Tensor] = {}
        self.updates = 0

    def on_start(self, model: nn.Module) -> None:
        self.layers = dict(prunable(model, self.include_lm_head))
        if not self.masks:
            self.masks = global_topk_masks({n: m.weight.detach().abs() for n, m in self.layers.items()}, self.target)
        self.enforce()

    def before_step(self, model: nn.Module, k: int) -> None:
        if self.regrow == "gradient" and self._due(k):  # the dense gradient, before masking (RigL eq. 2)
            self.grads = {n: m.weight.grad.detach().abs().clone() for n, m in self.layers.items()
                          if m.weight.grad is not None}
        super().before_step(model, k)

    def _due(self, k: int) -> bool:
        t = k + 1
        return t % self.every == 0 and (self.end is None or t < self.end)

    @torch.no_grad()
    def update(self, k: int) -> None:
        if not self._due(k):
            return
        horizon = self.end or (k + 1) * 2
        zeta = self.drop_fraction * (1 + math.cos(math.pi * (k + 1) / horizon)) / 2
        for n, keep in self.masks.items():
            w = self.layers[n].weight
            active = int(keep.sum())
            n_swap = min(int(zeta * active), int((~keep).sum()))
            if n_swap == 0:
                continue
            mag = w.detach().abs().float().masked_fill(~keep, math.inf).flatten()
            drop = mag.topk(n_swap, largest=False).indices
            if self.regrow == "gradient" and n in self.grads:
                score = self.grads[n].float().flatten().clone()
            else:
                score = torch.rand(keep.numel(), generator=self.gen).to(w.device)
            score[keep.flatten()] = -math.inf  # only connections inactive before this update may grow
            grow = score.topk(n_swap).indices
            flat = keep.flatten().clone()
            flat[drop] = False
            flat[grow] = True
            self.masks[n] = flat.reshape(keep.shape)
            w.view(-1)[grow] = 0.0
        self.updates += 1


@torch.no_grad()
def snip_masks(model: nn.Module, loss: torch.Tensor, sparsity: float, include_lm_head: bool = False
               ) -> dict[str, torch.Tensor]:
    """SNIP (Lee et al. 2019 eq. 6): connection sensitivity |∂L/∂W ⊙ W| on one batch, normalized,
    the top (1 − sparsity) kept over all layers together. ``loss`` is that batch's loss, not yet
    differentiated."""
    layers = prunable(model, include_lm_head)
    with torch.enable_grad():
        grads = torch.autograd.grad(loss, [m.weight for _, m in layers], allow_unused=True)
    scores = {n: (g.abs() * m.weight.abs() if g is not None else torch.zeros_like(m.weight))
              for (n, m), g in zip(layers, grads)}
    total = sum(float(s.sum()) for s in scores.values()) or 1.0
    return global_topk_masks({n: s / total for n, s in scores.items()}, sparsity)
