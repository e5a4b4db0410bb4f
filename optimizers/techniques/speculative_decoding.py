"""Speculative decoding: a cheap draft proposes up to ``gamma`` tokens, the target verifies them
in one forward and keeps the longest prefix equal to its own argmax, so greedy output is exactly
the target's (Leviathan et al., ICML 2023; Chen et al. 2023). Runs the lean draft-and-verify loop
of ``optimizers.decoding.speculative`` against the lean greedy loop the baseline decodes with,
both timed in the same measurement, with three draft sources: a small model sharing the
tokenizer (``source: model``), n-gram prompt lookup (``prompt_lookup``), and the target's own
first layers with its LM head (``self``). The target is unchanged (shared, not copied); the step
returns a ``speculative`` setting the inference scenario applies, and the measurement stores the
acceptance rate α, the mean accepted length, the cost ratio c of a draft token to a target round,
and the measured speed-up beside the analytical (1 − α^(γ+1)) / ((1 − α)(γc + 1)). In the serving
scenario the step serves the trace under load: static batches of ``max_concurrency`` with batched
verification (``speculative_greedy_batched``), α and the mean accepted length pooled over requests."""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from optimizers.base import StepRecord, Target, Technique, TechniqueConfig, Verdict
from optimizers.registry import register
from optimizers.workloads.base import LMEval, Workload


class SpeculativeDecodingConfig(TechniqueConfig):
    source: Literal["model", "prompt_lookup", "self"] = Field(
        "model", description="model: a draft LM sharing the tokenizer; prompt_lookup: n-gram lookup in the context "
                             "(no model); self: the target's first `layers` layers and its LM head")
    draft: str | None = Field(None, description="source model: draft workload name (e.g. ref-lm-draft); default: the "
                                                "workload's meta['draft']")
    gamma: int = Field(4, ge=1, le=64, description="draft tokens proposed per verification round")
    layers: int | None = Field(None, ge=1, le=1024, description="source self: decoder layers the draft keeps "
                                                                "(default: a quarter of the target's, at least 1)")
    ngram_max: int = Field(3, ge=1, le=16, description="source prompt_lookup: longest n-gram matched")


def _draft_model(workload: Workload, config: SpeculativeDecodingConfig) -> torch.nn.Module:
    draft = config.draft or workload.meta.get("draft")
    if draft is None:
        raise ValueError(f"speculative_decoding with source=model needs a draft model: set params.draft or the "
                         f"workload {workload.name!r}'s meta['draft'] (e.g. 'ref-lm-draft'), or use "
                         "source=prompt_lookup or source=self")
    if isinstance(draft, str):
        from optimizers.workloads import load_workload

        draft = load_workload(draft, workload.device)
    return (draft.model if isinstance(draft, Workload) else draft).eval()


def default_self_layers(model: torch.nn.Module) -> int:
    return max(1, model.config.num_hidden_layers // 4)


def draft_source(target: torch.nn.Module, setting: dict[str, Any]):
    """The DraftSource a ``speculative`` setting names (built per measurement: stateful drafts
    carry a KV cache)."""
    from optimizers.decoding.speculative import ModelDraft, PromptLookupDraft, SelfSpeculativeDraft

    if setting["source"] == "model":
        return ModelDraft(setting["draft"])
    if setting["source"] == "self":
        return SelfSpeculativeDraft(target, setting["layers"])
    return PromptLookupDraft(ngram_max=setting["ngram_max"])


@register
class SpeculativeDecoding(Technique):
    kind = "runtime"  # a decoding strategy the scenario applies, the model is unchanged
    name = "speculative_decoding"
    summary = "a draft (small model, prompt n-grams or the target's first layers) proposes, the target verifies: identical greedy output"
    Config = SpeculativeDecodingConfig
    tasks = frozenset({"causal_lm"})

    def check(self, target: Target, config: TechniqueConfig | None = None) -> Verdict:
        verdict = super().check(target, config)
        if not verdict.runnable:
            return verdict
        cfg = config if isinstance(config, SpeculativeDecodingConfig) else SpeculativeDecodingConfig()
        if cfg.source == "model":
            if (cfg.draft or target.draft) is None:
                return Verdict("refused", "speculative_decoding with source=model needs a draft model and this "
                                          "workload names none: set params.draft to a workload sharing its tokenizer "
                                          "(e.g. ref-lm-draft for ref-lm), or use source=prompt_lookup or source=self")
            from optimizers.workloads import workload_names

            if cfg.draft is not None and cfg.draft not in workload_names():
                return Verdict("refused", f"params.draft={cfg.draft!r} is not a built-in workload; choose one of "
                                          f"{', '.join(workload_names())}", blame="config")
        return Verdict("runs", "exact greedy output; the speed-up depends on the acceptance rate α and the draft's "
                               "cost c (both measured): on tiny models per-step overhead can make it slower")

    def apply(self, workload: Workload, config: SpeculativeDecodingConfig) -> StepRecord:
        if workload.task != "causal_lm":
            raise ValueError(f"speculative_decoding applies to causal LMs, not {workload.task}")
        if isinstance(workload.eval, LMEval) and workload.eval.batch_size != 1:
            raise ValueError("speculative decoding is measured at batch size 1; set the workload's eval batch_size to 1")
        model = workload.model
        setting: dict[str, Any] = {"source": config.source, "gamma": config.gamma}
        params = sum(p.numel() for p in model.parameters())
        if config.source == "model":
            draft = _draft_model(workload, config)
            t_vocab = model.get_output_embeddings().weight.shape[0]
            d_vocab = draft.get_output_embeddings().weight.shape[0]
            if t_vocab != d_vocab:
                raise ValueError(f"draft vocabulary {d_vocab} ≠ target {t_vocab}: the draft must share the tokenizer")
            setting["draft"] = draft
            what = f"draft {type(draft).__name__} with {sum(p.numel() for p in draft.parameters()):,} parameters"
        elif config.source == "self":
            layers = config.layers or default_self_layers(model)
            if layers >= model.config.num_hidden_layers:
                raise ValueError(f"params.layers={layers} must be below the target's {model.config.num_hidden_layers} "
                                 "layers: the draft is a prefix of the target")
            setting["layers"] = layers
            what = f"self-speculative draft: the first {layers} of {model.config.num_hidden_layers} layers + LM head"
        else:
            setting["ngram_max"] = config.ngram_max
            what = f"prompt-lookup draft: the continuation of the latest earlier match of the last ≤{config.ngram_max} tokens"
        draft_source(model, setting)  # fail here, not mid-measurement, if the target cannot host this draft
        notes = [f"{what} (target {params:,} parameters); γ = {config.gamma} draft tokens per round",
                 "decode timed through the lean draft-and-verify loop and, in the same measurement, through the lean "
                 "greedy loop the baseline uses; speed-up, α, mean accepted length and c are measured, the analytical "
                 "speed-up computed from them"]
        # serving: static batches verified in one forward per round (transformers' continuous scheduler has no
        # verify path); the inference scenario reads only ``speculative``
        return StepRecord(workload, settings={"speculative": setting, "batching": "static"}, notes=notes,
                          diagnostics={"spec_gamma": float(config.gamma)})
