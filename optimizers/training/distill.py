"""Knowledge distillation as a training-loop hook: the student learns the teacher's temperature-
softened distribution mixed with the hard targets (Hinton, Vinyals & Dean 2015), optionally also
the teacher's hidden states through a learned projection (FitNets, Romero et al. 2015; Patient
KD's layer mapping and normalized states, Sun et al. 2019). Students: the compressed model itself
(a recovery refresh from the pre-compression teacher), a given smaller model sharing the
tokenizer, or one derived from the teacher by keeping every second layer (DistilBERT's init)."""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from optimizers.training.loop import TrainHook, task_logits


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, temperature: float,
            alpha: float) -> torch.Tensor:
    """α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α)·CE(z_s, y), averaged over the N rows of
    (N, classes) logits. The T² keeps the soft term's gradient scale independent of T (Hinton §2)."""
    if temperature <= 0 or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"temperature={temperature} must be > 0 and alpha={alpha} in [0, 1]")
    s, t = student.float(), teacher.float().detach()
    soft = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                    reduction="batchmean") * temperature ** 2
    if alpha == 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(s, targets)


def layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student, teacher) hidden-state indices to match: student block i (1-based) with teacher block
    round(i·L_t/L_s), so the last blocks meet (Patient KD's "skip" strategy; index 0 = embeddings)."""
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"a student of {student_layers} layers cannot be mapped onto a teacher of {teacher_layers}")
    return [(i, round(i * teacher_layers / student_layers)) for i in range(1, student_layers + 1)]


class Distiller(TrainHook):
    """The student's loss against a frozen teacher's on the same batch; ``beta`` > 0 adds the mean
    over mapped layers of ‖p(h_s)/‖p(h_s)‖ − h_t/‖h_t‖‖² per token (Patient KD's normalized hidden-
    state loss), p a Linear(d_s, d_t) trained with the student (identity when widths agree) and
    thrown away afterwards."""

    def __init__(self, teacher: nn.Module, temperature: float = 2.0, alpha: float = 0.5, beta: float = 0.0,
                 student: nn.Module | None = None) -> None:
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature, self.alpha, self.beta = temperature, alpha, beta
        self.proj: nn.Module | None = None
        if beta > 0:
            if student is None:
                raise ValueError("feature distillation needs the student to size its projection")
            ds, dt = hidden_size(student), hidden_size(teacher)
            self.pairs = layer_map(depth(student), depth(teacher))
            device = next(student.parameters()).device
            self.proj = nn.Identity() if ds == dt else nn.Linear(ds, dt, bias=False, device=device)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.proj.parameters()) if self.proj is not None else []

    def loss(self, model: nn.Module, batch: Any, task: str) -> torch.Tensor:
        feats = self.beta > 0
        with torch.no_grad():
            t_out = task_logits(self.teacher, batch, task, hidden=feats)
        s_out = task_logits(model, batch, task, hidden=feats)
        loss = kd_loss(s_out[0], t_out[0], s_out[1], self.temperature, self.alpha)
        if feats:
            loss = loss + self.beta * self.feature_loss(s_out[2], t_out[2])
        return loss

    def feature_loss(self, s_states: tuple[torch.Tensor, ...], t_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        terms = [(F.normalize(self.proj(s_states[i].float()), dim=-1)
                  - F.normalize(t_states[j].float(), dim=-1)).pow(2).sum(-1).mean() for i, j in self.pairs]
        return torch.stack(terms).mean()


# ---------------------------------------------------------------- students

def blocks(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """The ModuleList of a transformers model's blocks and its owner: Llama-style
    ``model.model.layers``, BERT-style ``encoder.layer``."""
    for owner in model.modules():
        for attr in ("layers", "layer"):
            lst = getattr(owner, attr, None)
            if isinstance(lst, nn.ModuleList) and len(lst) == getattr(model.config, "num_hidden_layers", -1):
                return owner, attr, lst
    raise ValueError(f"{type(model).__name__} has no list of transformer blocks (model.layers / encoder.layer) "
                     "to derive a student from")


def depth(model: nn.Module) -> int:
    return int(model.config.num_hidden_layers)


def hidden_size(model: nn.Module) -> int:
    return int(model.config.hidden_size)


def keep_layers(model: nn.Module, keep: list[int]) -> nn.Module:
    """A copy of ``model`` with only the blocks ``keep`` (in order), its config and every block's
    cache index renumbered; the embeddings, final norm and head are kept."""
    student = copy.deepcopy(model)
    owner, attr, lst = blocks(student)
    if not keep or len(set(keep)) != len(keep) or not all(0 <= i < len(lst) for i in keep):
        raise ValueError(f"layers to keep {keep} must be distinct indices in 0..{len(lst) - 1}")
    setattr(owner, attr, nn.ModuleList([lst[i] for i in keep]))
    for new, block in enumerate(getattr(owner, attr)):
        for m in block.modules():
            if hasattr(m, "layer_idx"):
                m.layer_idx = new
    cfg = student.config
    cfg.num_hidden_layers = len(keep)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in keep]
    return student


def every_second_layer(model: nn.Module) -> nn.Module:
    """DistilBERT's student initialisation (Sanh et al. 2019 §3): the teacher with one block of
    every two (0, 2, 4, …) — half the depth, the same width, the teacher's own weights."""
    n = depth(model)
    if n < 2:
        raise ValueError(f"the model has {n} block(s): nothing to halve")
    return keep_layers(model, list(range(0, n, 2)))
