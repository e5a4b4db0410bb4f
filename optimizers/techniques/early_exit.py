"""Early exit (BranchyNet, Teerapittayanon et al. 2016; DeeBERT, Xin et al. 2020; PABEE, Zhou et
al. 2020): exit heads (global average pool + Linear) after each backbone block but the last are
trained on the task with the backbone frozen — so an input that runs to the end gets exactly the
original prediction — and at inference an input leaves at the first head that is sure enough:
softmax entropy below a threshold (BranchyNet / DeeBERT), top probability above one, or the same
prediction at ``patience`` consecutive heads (PABEE). Batched: the inputs that exit are dropped
from the batch, so the later blocks really run on fewer of them. For sequential CNNs with
``stem`` / ``blocks`` / ``classifier`` (digits-cnn)."""
from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from optimizers.base import StepRecord, Target, TechniqueConfig, Verdict
from optimizers.registry import register
from optimizers.training.loop import TrainHook
from optimizers.training.transform import TrainBudget, TrainingTransform, fit, record
from optimizers.workloads.base import Workload

Criterion = Literal["entropy", "confidence", "patience"]


class EarlyExitConfig(TrainBudget):
    steps: int = Field(300, ge=3, le=100_000, description="optimizer steps training the exit heads")
    batch_size: int = Field(32, ge=1, le=4096, description="images per step")
    lr: float | None = Field(3e-2, gt=0, le=1.0, description="the heads' learning rate (fresh Linear layers on "
                                                             "frozen features: 1e-2 left them unsure on digits-cnn)")
    criterion: Criterion = Field("entropy", description="entropy: exit when H(softmax) < threshold (BranchyNet, "
                                                        "DeeBERT); confidence: when max prob ≥ threshold; patience: "
                                                        "when `patience` consecutive heads agree (PABEE)")
    threshold: float = Field(0.5, ge=0, description="entropy in nats (entropy; ln 10 = 2.30 is a uniform guess over "
                                                   "10 classes) or probability in (0, 1] (confidence)")
    patience: int = Field(2, ge=1, le=64, description="consecutive agreeing heads (criterion=patience)")


def _channels(block: nn.Module) -> int:
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("an early-exit block must contain a conv layer")
    return convs[-1].out_channels


class EarlyExitCNN(nn.Module):
    """The backbone (stem, blocks, classifier, shared with nothing) plus one head per block but the
    last. ``forward`` exits per input; ``all_exits`` gives every head's logits (training, analysis)."""

    def __init__(self, base: nn.Module, criterion: Criterion = "entropy", threshold: float = 0.05,
                 patience: int = 2) -> None:
        super().__init__()
        if not all(hasattr(base, a) for a in ("stem", "blocks", "classifier")) or len(base.blocks) < 2:
            raise ValueError(f"{type(base).__name__} is not a sequential CNN with stem, ≥ 2 blocks and a classifier")
        self.stem, self.blocks, self.classifier = base.stem, base.blocks, base.classifier
        self.dropout = getattr(base, "dropout", nn.Identity())
        n_classes = self.classifier.out_features
        self.heads = nn.ModuleList(nn.Linear(_channels(b), n_classes) for b in list(self.blocks)[:-1])
        self.criterion, self.threshold, self.patience = criterion, threshold, patience
        self.register_buffer("exit_counts", torch.zeros(len(self.blocks), dtype=torch.int64), persistent=False)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def backbone(self) -> list[nn.Module]:
        return [self.stem, self.blocks, self.classifier]

    def _final(self, h: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(h.mean(dim=(2, 3))))

    def all_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits at every exit, the final classifier last: [(B, classes)] × depth."""
        h, out = self.stem(x), []
        for i, block in enumerate(self.blocks):
            h = block(h)
            out.append(self.heads[i](h.mean(dim=(2, 3))) if i < len(self.heads) else self._final(h))
        return out

    def decide(self, logits: torch.Tensor, streak: torch.Tensor) -> torch.Tensor:
        """Which rows exit at this head (bool (B,)); ``streak`` counts agreeing heads so far (patience)."""
        p = torch.softmax(logits.float(), -1)
        if self.criterion == "entropy":
            return -(p * p.clamp_min(1e-12).log()).sum(-1) < self.threshold
        if self.criterion == "confidence":
            return p.max(-1).values >= self.threshold
        return streak >= self.patience

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        alive = torch.arange(x.shape[0], device=x.device)
        out: torch.Tensor | None = None
        prev = torch.full((x.shape[0],), -1, dtype=torch.int64, device=x.device)
        streak = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        for i, block in enumerate(self.blocks):
            h = block(h)
            last = i == len(self.blocks) - 1
            logits = self._final(h) if last else self.heads[i](h.mean(dim=(2, 3)))
            if out is None:
                out = logits.new_empty(x.shape[0], logits.shape[-1])
            pred = logits.argmax(-1)
            streak = torch.where(pred == prev, streak + 1, torch.ones_like(streak))
            leave = torch.ones_like(pred, dtype=torch.bool) if last else self.decide(logits, streak)
            out[alive[leave]] = logits[leave]
            self.exit_counts[i] += int(leave.sum())
            if last or bool(leave.all()):
                break
            stay = ~leave
            h, alive, prev, streak = h[stay], alive[stay], pred[stay], streak[stay]
        return out


class ExitHeadLoss(TrainHook):
    """Only the heads train: the backbone is frozen and kept in eval mode (its BatchNorm statistics
    stay), the loss is the sum of the heads' cross-entropies (BranchyNet's joint loss, final term
    constant here)."""

    def on_start(self, model: nn.Module) -> None:
        for part in model.backbone():
            for p in part.parameters():
                p.requires_grad_(False)

    def loss(self, model: nn.Module, batch: Any, task: str) -> torch.Tensor:
        for part in model.backbone():
            part.eval()
        images, labels = batch
        return sum(F.cross_entropy(z, labels) for z in model.all_exits(images)[:-1])


@torch.no_grad()
def exit_statistics(model: EarlyExitCNN, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 64
                    ) -> dict[str, float]:
    """On ``images``: the fraction leaving at each exit, mean blocks executed (of ``depth``), and the
    early-exit accuracy beside the full-depth accuracy of the same model."""
    model.eval()
    model.exit_counts.zero_()
    early = torch.cat([model(x).argmax(-1) for x in images.split(batch_size)])
    full = torch.cat([model.all_exits(x)[-1].argmax(-1) for x in images.split(batch_size)])
    counts = model.exit_counts.double()
    n = float(counts.sum())
    stats = {f"exit_fraction_block{i + 1}": float(c) / n for i, c in enumerate(counts)}
    mean_blocks = float((counts * torch.arange(1, model.depth + 1, dtype=torch.float64)).sum()) / n
    stats |= {"mean_blocks_executed": mean_blocks, "blocks_saved_fraction": 1.0 - mean_blocks / model.depth,
              "exited_early_fraction": 1.0 - float(counts[-1]) / n,
              "accuracy_early_exit": float((early == labels).double().mean()),
              "accuracy_full_depth": float((full == labels).double().mean()),
              "agreement_with_full_depth": float((early == full).double().mean())}
    model.exit_counts.zero_()
    return stats


@register
class EarlyExit(TrainingTransform):
    name = "early_exit"
    summary = "train exit heads on a frozen CNN backbone; easy inputs leave early by entropy, confidence or patience"
    Config = EarlyExitConfig
    tasks = frozenset({"vision"})

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if verdict.status == "refused" and target.task in ("causal_lm", "encoder"):
            return Verdict("refused", "early_exit here adds exit heads to a sequential CNN (stem, blocks, classifier: "
                                      "digits-cnn); transformer exits (DeeBERT on minilm, LM early exit) are not "
                                      "built yet")
        return verdict

    def apply(self, workload: Workload, config: Any) -> StepRecord:
        import copy

        if config.criterion == "confidence" and not 0 < config.threshold <= 1:
            raise ValueError(f"threshold={config.threshold}: a confidence threshold is a probability in (0, 1]")
        model = EarlyExitCNN(copy.deepcopy(workload.model), config.criterion, config.threshold, config.patience)
        model, figures, details = fit(workload, config, start=model, hooks=(ExitHeadLoss(),))
        ev = workload.eval
        stats = exit_statistics(model, ev.images.to(workload.device), ev.labels.to(workload.device), ev.batch_size)
        rule = {"entropy": f"entropy < {config.threshold:g} nats", "confidence": f"max prob ≥ {config.threshold:g}",
                "patience": f"{config.patience} agreeing heads"}[config.criterion]
        notes = [f"{len(model.heads)} exit heads after blocks 1–{len(model.heads)} of {model.depth}, backbone frozen; "
                 f"exit when {rule}",
                 f"on the held-out images: {stats['exited_early_fraction']:.0%} exit early, "
                 f"{stats['mean_blocks_executed']:.2f} of {model.depth} blocks on average (the stem always runs) "
                 f"({stats['blocks_saved_fraction']:.0%} fewer); accuracy {stats['accuracy_full_depth']:.3f} at full "
                 f"depth → {stats['accuracy_early_exit']:.3f} with exits"]
        if not math.isfinite(stats["mean_blocks_executed"]):
            raise ValueError("no held-out images to measure the exits on")
        return record(workload, model.eval(), config, figures, details, notes, stats)
