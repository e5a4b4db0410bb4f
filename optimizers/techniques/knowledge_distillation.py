"""Knowledge distillation (Hinton, Vinyals & Dean, Distilling the Knowledge in a Neural Network,
2015): train a student on the teacher's temperature-softened output distribution, α-mixed with the
hard targets. The student is the compressed model itself (``self``: a brief refresh from the
model before compression, its pruning pattern kept), the workload's draft (``draft``: ref-lm-draft
for ref-lm; the same tokenizer) or the teacher with every second block (``every_second_layer``,
DistilBERT's initialisation). With ``control`` the same student is trained again on the same
batches without the teacher, so what the teacher added is measured, not assumed."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from optimizers import measure as H
from optimizers.base import StepRecord, Target, TechniqueConfig, Verdict
from optimizers.registry import register
from optimizers.training import sparse
from optimizers.training.distill import Distiller, every_second_layer
from optimizers.training.transform import (TrainBudget, TrainingTransform, control_run, fit, record, sparse_result,
                                           sparse_start)
from optimizers.workloads.base import Workload


class KnowledgeDistillationConfig(TrainBudget):
    student: Literal["self", "draft", "every_second_layer"] = Field(
        "self", description="self: the compressed model, taught by the model before compression; draft: the "
                            "workload's draft model; every_second_layer: the teacher with half its blocks")
    student_init: Literal["pretrained", "random"] = Field(
        "pretrained", description="pretrained: the student's own weights (or the teacher's blocks); random: the same "
                                  "architecture freshly initialised (seeded), distilled from scratch")
    temperature: float = Field(2.0, gt=0, le=100, description="T: both distributions softened by logits / T")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the soft (teacher) term; 1 − α on the hard targets")
    control: bool = Field(True, description="also train the same student without the teacher on the same batches "
                                            "(the comparison the distillation is judged by)")


def teacher_and_student(workload: Workload, config: Any) -> tuple[Any, Any, str]:
    """(teacher, student, description) for the config's student choice."""
    if config.student == "self":
        if workload.original is None or workload.original is workload.model:
            raise ValueError("student=self distils the compressed model from the model before compression, and no "
                             "earlier step changed the model: put a pruning or quantization step first, or use "
                             "student=every_second_layer or student=draft")
        return workload.original, workload.model, "the compressed model, taught by the model before compression"
    if config.student == "draft":
        draft = workload.meta.get("draft")
        if draft is None:
            raise ValueError(f"student=draft: workload {workload.name!r} has no draft model; use "
                             "student=every_second_layer")
        if isinstance(draft, str):
            from optimizers.workloads import load_workload

            draft = load_workload(draft, workload.device).model
        t_vocab, s_vocab = workload.model.config.vocab_size, draft.config.vocab_size
        if t_vocab != s_vocab:
            raise ValueError(f"the draft's vocabulary ({s_vocab}) differs from the teacher's ({t_vocab}); "
                             "distillation matches distributions over the same tokens")
        return workload.model, draft, f"the draft model ({type(draft).__name__})"
    source = workload.uncompressed  # the blocks of the full-precision model, even when the teacher is quantized
    what = "every second block of the " + ("model before compression" if source is not workload.model else "teacher")
    return workload.model, every_second_layer(source), what + " (DistilBERT init)"


def reinitialised(model: Any, seed: int) -> Any:
    """The same architecture with fresh weights (the model class's own initialisation, seeded)."""
    import copy

    import torch

    if not hasattr(model, "config"):
        raise ValueError("student_init=random re-creates a transformers model from its config; this student has none")
    torch.manual_seed(seed)
    return type(model)(copy.deepcopy(model.config)).to(next(model.parameters()).device)


@register
class KnowledgeDistillation(TrainingTransform):
    name = "knowledge_distillation"
    summary = "train a student on the teacher's softened logits + the hard targets (Hinton KD), vs the same student without"
    Config = KnowledgeDistillationConfig
    beta_default = 0.0

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if verdict.runnable and getattr(config, "student", None) == "draft" and target.draft is None:
            return Verdict("refused", "student=draft: this workload has no draft model; use student=every_second_layer",
                           blame="config")
        if verdict.runnable and getattr(config, "student", None) == "every_second_layer" and target.task == "vision":
            return Verdict("refused", "every_second_layer halves a transformer's blocks; a CNN student here is the "
                                      "compressed model itself (student=self)", blame="config")
        return verdict

    def beta(self, config: Any) -> float:
        return self.beta_default

    def apply(self, workload: Workload, config: Any) -> StepRecord:
        teacher, student, what = teacher_and_student(workload, config)
        if config.student_init == "random":
            if config.student == "self":
                raise ValueError("student_init=random with student=self would throw the compressed weights away; "
                                 "use student=draft or every_second_layer")
            student, what = reinitialised(student, config.seed), what + ", freshly initialised"
        student, csr = sparse_start(student)  # CSR-stored layers train dense, and are stored as CSR again
        masks = sparse.MaskedTraining(sparse.masks_from_zeros(student))  # a pruned student keeps its pattern
        kd = Distiller(teacher, config.temperature, config.alpha, self.beta(config), student=student)
        model, figures, details = fit(workload, config, start=student, hooks=(kd, masks))
        notes = [f"student: {what}; {H.parameter_count(model):,} parameters vs the teacher's {H.parameter_count(teacher):,}",
                 f"loss: {config.alpha:g}·T²·KL(teacher_T ‖ student_T) + {1 - config.alpha:g}·CE, T = {config.temperature:g}"
                 + (f", + {self.beta(config):g}·hidden-state loss over layers {kd.pairs}" if self.beta(config) else "")]
        diag = {"student_params": float(H.parameter_count(model)), "teacher_params": float(H.parameter_count(teacher))}
        if masks.masks:
            notes.append(f"{len(masks.masks)} pruned layers kept their masks")
            more, s = sparse_result(model, config, csr)
            notes += more
            diag |= s
        meta = {}
        if config.student != "self" and "config" in workload.meta:  # the estimator's shapes: the student's
            conf = model.config.to_dict()
            meta["config"] = {k: conf.get(k, v) for k, v in workload.meta["config"].items()}
        if config.control:
            ctl = control_run(workload, config, "the same student trained on the same batches without the teacher",
                              notes, diag, details, start=student,
                              hooks=(sparse.MaskedTraining(sparse.masks_from_zeros(student)),))
            diag["control_eval_loss"] = ctl["eval_loss"]
        return record(workload, model, config, figures, details, notes, diag, **meta)
