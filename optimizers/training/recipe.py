"""The training recipe: what a run's recipe steps (bf16 autocast, checkpointing, accumulation,
an 8-bit optimizer, adapters, sharding) accumulate into, read by the training loop. The baseline
recipe is the empty one: fp32, full fine-tune, torch AdamW, no checkpointing, one process."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Precision = Literal["fp32", "bf16", "fp16"]
OptimizerName = Literal["adamw", "adamw8bit", "adamw4bit"]


@dataclass(frozen=True)
class Adapter:
    """Low-rank adapters on a frozen base (Hu et al. 2021; DoRA, Liu et al. 2024; QLoRA's NF4
    base, Dettmers et al. 2023): the base is frozen, only the adapters train."""

    kind: Literal["lora", "dora", "qlora"] = "lora"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    # Hu et al. 2021 adapt W_q and W_v (peft's default too): Llama's names and BERT's; those present are used
    targets: tuple[str, ...] = ("q_proj", "v_proj", "query", "value")
    lr: float = 1e-3


@dataclass(frozen=True)
class Sharding:
    """Data parallel over ``ranks`` processes: ZeRO stage 1 (optimizer states sharded,
    ``ZeroRedundancyOptimizer``) or stage 3 (parameters, gradients and states, FSDP2 ``fully_shard``)."""

    stage: Literal[1, 3] = 3
    ranks: int = 2


@dataclass(frozen=True)
class DataSelection:
    """Which examples train and in what order (``optimizers.training.selection``): the hardest
    ``keep`` fraction by difficulty score (data pruning), or easy → hard (curriculum)."""

    kind: Literal["prune", "curriculum"] = "prune"
    keep: float = 0.5  # prune: fraction of the candidates kept
    score: Literal["el2n", "loss"] = "el2n"
    warmup_steps: int = 0  # steps of training on the full data before scoring (0: the starting model scores)


@dataclass(frozen=True)
class Recipe:
    precision: Precision = "fp32"
    checkpointing: int = 0  # 0: off; n: every n-th decoder layer recomputed in backward
    accumulation: int = 1  # micro-batches per optimizer step (the step's sequences split, not added)
    optimizer: OptimizerName = "adamw"
    adapter: Adapter | None = None
    sharding: Sharding | None = None
    data: DataSelection | None = None  # which examples train, in what order (data pruning, curriculum)

    @classmethod
    def of(cls, settings: dict[str, Any] | None) -> "Recipe":
        """The recipe a run's accumulated settings describe (keys under ``training``)."""
        t = dict((settings or {}).get("training") or {})
        adapter = t.pop("adapter", None)
        sharding = t.pop("sharding", None)
        data = t.pop("data", None)
        return cls(**t, adapter=Adapter(**adapter) if isinstance(adapter, dict) else adapter,
                   sharding=Sharding(**sharding) if isinstance(sharding, dict) else sharding,
                   data=DataSelection(**data) if isinstance(data, dict) else data)

    def describe(self) -> str:
        parts = [self.precision + (" autocast" if self.precision != "fp32" else ""),
                 self.optimizer if self.optimizer != "adamw" else "torch AdamW"]
        if self.checkpointing:
            parts.append("activation checkpointing" + (f" every {self.checkpointing} layers"
                                                       if self.checkpointing > 1 else ""))
        if self.accumulation > 1:
            parts.append(f"{self.accumulation} micro-batches per step")
        if self.adapter:
            parts.append(f"{self.adapter.kind} r={self.adapter.rank} α={self.adapter.alpha:g}")
        else:
            parts.append("full fine-tune")
        if self.sharding:
            parts.append(f"ZeRO-{self.sharding.stage} over {self.sharding.ranks} ranks")
        if self.data:
            d = self.data
            parts.append((f"the hardest {d.keep:.0%} of the candidates" if d.kind == "prune" else "easy-to-hard order")
                         + f" by {d.score}" + (f" after {d.warmup_steps} warm-up steps" if d.warmup_steps else ""))
        return ", ".join(parts)
