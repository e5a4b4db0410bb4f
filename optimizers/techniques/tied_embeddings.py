"""Tied input–output embeddings (Press & Wolf, Using the Output Embedding to Improve Language Models,
EACL 2017): a causal LM whose LM head is a separate vocab × hidden matrix gets its head tied to the
input embedding — one tensor, stored once. Press & Wolf tie from the start of training; tying a
trained untied model replaces one of the two matrices, so the quality cost is measured after this
step, and a recovery_finetune step later in the playbook can win some of it back.

Sample playbook step::

    - technique: tied_embeddings
      params: {source: mean}
"""
from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field

from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.measure import stored_bytes
from optimizers.registry import register
from optimizers.workloads.base import Workload


class TiedEmbeddingsConfig(TechniqueConfig):
    source: Literal["embedding", "head", "mean"] = Field(
        "embedding", description="the shared matrix: the input embedding's (the head adopts it), the head's, or their mean")


def tie(model: torch.nn.Module, source: str) -> tuple[int, int]:
    """Make the LM head's weight the input embedding's Parameter (values from ``source``) and set
    ``config.tie_word_embeddings``, in place; returns the shared matrix's shape."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if emb is None or type(head) is not torch.nn.Linear:
        raise ValueError(f"{type(model).__name__} needs an input embedding and an nn.Linear LM head to tie "
                         "(a quantized head cannot share the embedding: tie before quantizing)")
    if head.weight.untyped_storage().data_ptr() == emb.weight.untyped_storage().data_ptr():
        raise ValueError("the LM head is already tied to the input embedding: nothing to tie")
    if emb.weight.shape != head.weight.shape:
        raise ValueError(f"the embedding {tuple(emb.weight.shape)} and the head {tuple(head.weight.shape)} differ in "
                         "shape; only equal (vocab, hidden) matrices can be tied")
    with torch.no_grad():
        if source == "head":
            emb.weight.copy_(head.weight)
        elif source == "mean":
            emb.weight.copy_((emb.weight + head.weight) / 2)
    head.weight = emb.weight
    model.config.tie_word_embeddings = True
    return tuple(emb.weight.shape)


@register
class TiedEmbeddings(Technique):
    name = "tied_embeddings"
    summary = "tie an untied LM head to the input embedding: one vocab × hidden matrix stored once (Press & Wolf)"
    Config = TiedEmbeddingsConfig
    tasks = frozenset({"causal_lm"})

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if not verdict.runnable:
            return verdict
        if target.tied_embeddings:
            return Verdict("advice_only", "already in the model (tied embeddings: the LM head is already tied to the "
                                          "input embedding)")
        if target.tied_embeddings is None or not target.head_linear:
            return Verdict("refused", "needs an input embedding and an nn.Linear LM head of plain tensors; a quantized "
                                      "head cannot share the embedding (tie before quantizing)")
        return Verdict("runs", "one of two trained matrices is replaced: the quality cost is measured after this "
                               "step (a recovery_finetune step can follow)")

    def apply(self, workload: Workload, config: TiedEmbeddingsConfig) -> StepRecord:
        model = copy.deepcopy(workload.model).eval()
        vocab, hidden = tie(model, config.source)
        saved = stored_bytes(workload.model) - stored_bytes(model)
        notes = [f"lm_head now shares the input embedding's {vocab:,} × {hidden} matrix (source: {config.source}): "
                 f"{vocab * hidden:,} parameters, {saved:,} bytes fewer stored",
                 "tied after training (Press & Wolf tie from the start): the quality cost is measured after this "
                 "step; a recovery_finetune step later in the playbook can win some back"]
        meta = {"config": {**workload.meta["config"], "tie_word_embeddings": True}} if "config" in workload.meta else {}
        return StepRecord(workload.with_model(model, **meta), notes=notes,
                          diagnostics={"tied_bytes_saved": float(saved)})
