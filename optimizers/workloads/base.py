"""The Workload: what is optimized and how it is judged (DESIGN.md). A technique's
``apply`` returns a Workload whose model changed; everything else travels along."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal

import torch

Task = Literal["causal_lm", "encoder", "vision"]


@dataclass
class LMEval:
    """Held-out token stream for perplexity, plus prompts for speed."""

    token_ids: torch.Tensor  # (N,) int64, held-out text
    window: int = 256  # tokens the model sees per perplexity window
    stride: int = 256  # step between windows (== window: disjoint windows)
    max_windows: int = 16
    prompt_len: int = 64  # prefill length for the speed measurement
    decode_tokens: int = 32  # tokens generated for decode tokens/s
    batch_size: int = 1
    answers: list[tuple[torch.Tensor, list[str]]] = field(default_factory=list)  # (prompt ids (1, T), accepted answers)
    answer_tokens: int = 16  # greedy tokens generated per answer prompt


@dataclass
class EncoderEval:
    """Sentences whose embeddings are compared against the baseline's, plus labelled pairs."""

    sentences: list[str]
    pairs: list[tuple[str, str, float]] = field(default_factory=list)  # (a, b, gold similarity 0..1)
    batch_size: int = 16


@dataclass
class VisionEval:
    images: torch.Tensor  # (N, C, H, W) float32
    labels: torch.Tensor  # (N,) int64
    batch_size: int = 64


@dataclass
class LMTrain:
    """A causal LM's training split: a token stream the training scenario cuts windows from, and
    optionally its own held-out stream (else the evaluation's)."""

    token_ids: torch.Tensor  # (N,) int64
    eval_ids: torch.Tensor | None = None  # (M,) int64, held out; None: ``Workload.eval.token_ids``


@dataclass
class VisionTrain:
    images: torch.Tensor  # (N, C, H, W) float32
    labels: torch.Tensor  # (N,) int64


@dataclass
class PairTrain:
    """A sentence encoder's training split: (text, its match) pairs, trained with in-batch
    negatives; ``held_out`` pairs for the eval loss; the tokenizer that turns them into batches."""

    pairs: list[tuple[str, str]]
    held_out: list[tuple[str, str]]
    tokenizer: Any
    max_length: int = 64


TrainSplit = LMTrain | VisionTrain | PairTrain


@dataclass
class Workload:
    name: str
    task: Task
    model: torch.nn.Module
    eval: LMEval | EncoderEval | VisionEval
    calibration: list[Any] = field(default_factory=list)  # batches of model inputs (tensors or dicts)
    tokenizer: Any = None
    device: str = "cpu"
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. {"config": {...}, "draft": Workload}
    # the training split, built on first call (tokenizing a split costs seconds); None: no training here
    train: Callable[[], TrainSplit] | None = None
    # the model before the first step replaced it (the teacher of a recovery distillation); None: this one
    original: torch.nn.Module | None = None

    def with_model(self, model: torch.nn.Module, **meta: Any) -> "Workload":
        """A copy carrying a new model (and optional extra meta); the original stays intact, and
        the copy remembers the model it descends from (``original``)."""
        return replace(self, model=model, meta={**self.meta, **meta},
                       original=self.original if self.original is not None else self.model)

    @property
    def uncompressed(self) -> torch.nn.Module:
        """The model this workload started from, before any step changed it."""
        return self.original if self.original is not None else self.model


class WorkloadError(ValueError):
    """A workload that cannot be loaded: the message says what is missing and what to do."""
