"""Speculative decoding with a draft model: the draft proposes tokens, the target verifies them
in one forward pass; greedy output is identical to the target's own (Leviathan et al., ICML
2023; Chen et al. 2023). Runs through transformers' assisted generation; the target model is
unchanged (shared, not copied); the step returns a ``decoding`` setting (the draft) that the
inference scenario applies, and the whole run — baseline included — decodes through
``generate()``, so the ratio compares generate() with generate() (and plain greedy generate()
is measured again beside the draft in the same step)."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.registry import register
from optimizers.workloads.base import LMEval, Workload


class SpeculativeDecodingConfig(TechniqueConfig):
    draft: str | None = Field(None, description="draft workload name (e.g. ref-lm-draft); default: the workload's meta['draft']")
    num_assistant_tokens: int = Field(5, ge=1, le=64, description="tokens the draft proposes per verification step")
    schedule: Literal["constant", "heuristic"] = Field(
        "heuristic", description="heuristic: grow/shrink the draft length with the acceptance rate (transformers' default)")


def _draft_model(workload: Workload, config: SpeculativeDecodingConfig) -> torch.nn.Module:
    draft = config.draft or workload.meta.get("draft")
    if draft is None:
        raise ValueError(f"speculative_decoding needs a draft model: set config.draft or the workload "
                         f"{workload.name!r}'s meta['draft'] (e.g. 'ref-lm-draft')")
    if isinstance(draft, str):
        from optimizers.workloads import load_workload

        draft = load_workload(draft, workload.device)
    return (draft.model if isinstance(draft, Workload) else draft).eval()


@register
class SpeculativeDecoding(Technique):
    kind = "runtime"  # a decoding strategy the scenario applies, the model is unchanged
    name = "speculative_decoding"
    summary = "a small draft proposes tokens, the target verifies them at once: identical greedy output"
    Config = SpeculativeDecodingConfig
    tasks = frozenset({"causal_lm"})
    run_settings = {"decode_loop": "generate"}  # baseline and every step decode through generate(): like with like

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if not verdict.runnable:
            return verdict
        asked = config.draft if isinstance(config, SpeculativeDecodingConfig) else None
        if (asked or target.draft) is None:
            return Verdict("refused", "speculative_decoding needs a draft model and this workload names none: set "
                                      "params.draft to a workload sharing its tokenizer (e.g. ref-lm-draft for ref-lm)")
        from optimizers.workloads import workload_names

        if asked is not None and asked not in workload_names():
            return Verdict("refused", f"params.draft={asked!r} is not a built-in workload; choose one of "
                                      f"{', '.join(workload_names())}", blame="config")
        return Verdict("runs", "needs a draft sharing the tokenizer; on tiny models per-step framework "
                               "overhead (~3–4 ms) can make it slower than plain decoding (FACTS.md)")

    def apply(self, workload: Workload, config: SpeculativeDecodingConfig) -> StepRecord:
        if workload.task != "causal_lm":
            raise ValueError(f"speculative_decoding applies to causal LMs, not {workload.task}")
        if isinstance(workload.eval, LMEval) and workload.eval.batch_size != 1:
            raise ValueError("assisted generation runs batch size 1; set the workload's eval batch_size to 1")
        draft = _draft_model(workload, config)
        t_vocab = workload.model.get_output_embeddings().weight.shape[0]
        d_vocab = draft.get_output_embeddings().weight.shape[0]
        if t_vocab != d_vocab:
            raise ValueError(f"draft vocabulary {d_vocab} ≠ target {t_vocab}: the draft must share the tokenizer")
        draft.generation_config.num_assistant_tokens = config.num_assistant_tokens
        draft.generation_config.num_assistant_tokens_schedule = config.schedule
        notes = [f"draft {type(draft).__name__} with {sum(p.numel() for p in draft.parameters()):,} params "
                 f"(target {sum(p.numel() for p in workload.model.parameters()):,}); "
                 f"{config.num_assistant_tokens} draft tokens per step, {config.schedule} schedule",
                 "decode measured through generate() with and without the draft in the same run; "
                 "stored_bytes counts the target only, assistant_stored_bytes the draft"]
        return StepRecord(workload, settings={"decoding": {"assistant_model": draft}}, notes=notes,
                          diagnostics={"num_assistant_tokens": float(config.num_assistant_tokens)})
