"""Weight sharing, Deep Compression's stage 2 (Han, Mao & Dally, ICLR 2016, §3): per layer, 1-D
k-means of the weights into k = 2^bits centroids, initialised linearly over [min, max] (§3.2:
linear init beats random and density-based because it keeps the rare large weights, which matter
most, represented); each weight stores its centroid's index. A pruned layer's zeros keep a
reserved code (exact 0) and only its survivors are clustered. Optionally the centroids are
fine-tuned (§3.3): the gradients of the weights sharing a centroid sum into it.

Sample playbook step::

    - technique: weight_sharing
      params: {bits: 5}
"""
from __future__ import annotations

import copy

import torch
from pydantic import Field

from optimizers.base import StepRecord, TechniqueConfig, layer_error_figures
from optimizers.quant import coded as C
from optimizers.registry import register
from optimizers.workloads.base import Workload
from quant.errors import rel_error


class WeightSharingConfig(TechniqueConfig):
    bits: int = Field(5, ge=4, le=8, description="index bits: 2^bits centroids per layer (the paper: 5 for FC "
                                                 "layers, 8 for convolutions)")
    clusters: int | None = Field(None, ge=16, le=256, description="centroids per layer instead of 2^bits "
                                                                  "(indices take ceil(log2 clusters) bits)")
    iterations: int = Field(30, ge=1, le=1000, description="at most this many k-means (Lloyd) iterations per layer")
    include_lm_head: bool = Field(False, description="also share the output projection (lm_head) of an LM")
    fold_batchnorm: bool = Field(True, description="first fold each BatchNorm2d into the Conv2d before it (exact in "
                                                   "eval mode, the deployment form): no fp32 BN tensors left to store")
    finetune_codebook: bool = Field(False, description="then fine-tune the centroids on the training split (§3.3), "
                                                       "with the model's other float parameters")
    finetune_steps: int = Field(60, ge=3, le=100_000, description="optimizer steps of the centroid fine-tune")
    finetune_batch_size: int = Field(32, ge=1, le=4096, description="images (or sequences) per fine-tune step")
    finetune_lr: float | None = Field(None, gt=0, le=1.0, description="fine-tune learning rate (default 1e-3 "
                                                                      "for vision, 1e-4 for LMs)")

    @property
    def k(self) -> int:
        return self.clusters or 2**self.bits

    @property
    def code_bits(self) -> int:
        return max(1, (self.k - 1).bit_length())


def fold_batchnorm(model: torch.nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d in an nn.Sequential into that conv
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``: W·γ/σ per output channel, a bias β − μγ/σ) and
    replace it by Identity; the eval-mode outputs are unchanged. Returns how many were folded."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                seq[i], seq[i + 1] = fuse_conv_bn_eval(conv.eval(), bn.eval()), nn.Identity()
                folded += 1
    return folded


def linear_init(w: torch.Tensor, k: int) -> torch.Tensor:
    """k centroids evenly spaced from min(w) to max(w) (the paper's linear initialization)."""
    steps = torch.arange(k, dtype=torch.float32, device=w.device) / max(k - 1, 1)
    return w.min() + (w.max() - w.min()) * steps


def nearest(w: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of each weight's nearest centroid (1-D: compare with the midpoints of the sorted ones)."""
    c, order = centroids.sort()
    return order[torch.searchsorted((c[1:] + c[:-1]) / 2, w.contiguous())]


def objective(w: torch.Tensor, centroids: torch.Tensor, idx: torch.Tensor) -> float:
    """The k-means objective: Σ (w − c_idx(w))²."""
    return float(((w - centroids[idx]) ** 2).sum())


def kmeans_1d(w: torch.Tensor, k: int, iterations: int = 30) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Lloyd's algorithm on the values ``w`` (n,) from the linear initialization: (centroids (k,),
    index of each value (n,), the objective before and after each iteration). An empty cluster
    keeps its centroid; it stops when no assignment changes. The objective never rises."""
    c = linear_init(w, k)
    idx = nearest(w, c)
    history = [objective(w, c, idx)]
    for _ in range(iterations):
        sums = torch.zeros(k, dtype=torch.float32, device=w.device).index_add_(0, idx, w)
        counts = torch.bincount(idx, minlength=k)
        c = torch.where(counts > 0, sums / counts.clamp(min=1), c)
        new = nearest(w, c)
        history.append(objective(w, c, new))
        if torch.equal(new, idx):
            break
        idx = new
    return c, idx, history


def share(w: torch.Tensor, k: int, bits: int, iterations: int = 30) -> tuple[C.Codes, list[float]]:
    """A layer's weight as shared codes: with exact zeros (a pruned layer), code 0 is reserved for 0
    and the non-zero weights are clustered into k − 1 centroids; else into k."""
    flat = w.detach().reshape(-1).float()
    keep = flat != 0
    zero_code = not bool(keep.all())
    values = flat[keep]
    if values.numel() == 0:  # an all-zero layer: one centroid, never used
        return C.Codes(torch.zeros(w.shape, dtype=torch.uint8, device=w.device), flat.new_zeros(1), None, bits,
                       True), [0.0]
    centroids, idx, history = kmeans_1d(values, k - 1 if zero_code else k, iterations)
    codes = torch.zeros(flat.shape, dtype=torch.uint8, device=w.device)
    codes[keep] = (idx + int(zero_code)).to(torch.uint8)
    return C.Codes(codes.reshape(w.shape), centroids, None, bits, zero_code), history


@register
class WeightSharing(C.CodedLayersTechnique):
    name = "weight_sharing"
    trains_field = "finetune_codebook"
    summary = "Deep Compression stage 2: per-layer k-means codebook (2^bits centroids, linear init), zeros kept"
    Config = WeightSharingConfig

    def apply(self, workload: Workload, config: WeightSharingConfig) -> StepRecord:
        model = copy.deepcopy(workload.model).eval()
        folded = fold_batchnorm(model) if config.fold_batchnorm else 0
        layers = C.coded_layers(model, config.include_lm_head)
        C.require_layers(layers, self.name)
        shared, errors, iters = {}, {}, []
        for n, m in layers:
            w = C.layer_weight(m)
            shared[n], history = share(w, config.k, config.code_bits, config.iterations)
            errors[n] = rel_error(w, shared[n].dequantize())
            iters.append(len(history) - 1)
        C.swap(model, layers, lambda n, m: C.CodedWeight.from_layer(m, shared[n], train_levels=True))
        zero = sum(int((s.codes == 0).sum()) for s in shared.values() if s.zero_code)
        notes = [f"{len(layers)} Linear/Conv2d layers share {config.k} values each (k-means from a linear init "
                 f"over [min, max], {config.code_bits}-bit indices)"
                 + (f"; {zero} pruned weights keep a reserved exact-zero code" if zero else "")
                 + (f"; {folded} BatchNorm2d folded into their convolutions first (exact in eval mode)" if folded else "")]
        diagnostics = {**layer_error_figures("weight_sharing_rel_error", errors),
                       "kmeans_iterations_mean": sum(iters) / len(iters), "clusters": float(config.k),
                       "batchnorm_folded": float(folded)}
        if config.finetune_codebook:
            from optimizers.training.transform import TrainBudget, fit, record

            budget = TrainBudget(steps=config.finetune_steps, batch_size=config.finetune_batch_size,
                                 lr=config.finetune_lr)
            model, figures, details = fit(workload, budget, start=model)
            model.requires_grad_(False)
            diagnostics |= C.storage_figures(C.coded_modules(model))
            notes += ["centroids fine-tuned: each centroid's gradient is the sum of its weights' gradients "
                      "(indices and zeros fixed; the model's other float parameters, e.g. norms, train too)", C.storage_note(diagnostics)]
            return record(workload, model, budget, figures, {**details, "rel_error": errors}, notes, diagnostics)
        diagnostics |= C.storage_figures(C.coded_modules(model))
        notes.append(C.storage_note(diagnostics))
        return StepRecord(workload.with_model(model), notes=notes, diagnostics=diagnostics,
                          details={"rel_error": errors})
